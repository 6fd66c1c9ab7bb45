"""Before a checkpoint: a warning, once per folder, when the disk holds less than two checkpoints' worth."""
import pytest
import torch

from nbkit.training import checkpoints, outputs


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(checkpoints, "_disk_warned", set())


def model_with(trainable: int) -> torch.nn.Module:
    model = torch.nn.Module()
    model.frozen = torch.nn.Parameter(torch.zeros(1000), requires_grad=False)
    model.lora = torch.nn.Parameter(torch.zeros(trainable))
    return model


def test_warns_once_when_two_checkpoints_would_not_fit(tmp_path, monkeypatch, capsys):
    model = model_with(2**20)  # 1 Mi trainable numbers: adapters + Adam's two states, 12 bytes each = 12 MiB
    monkeypatch.setattr(outputs, "free_gib", lambda folder: 0.015)  # 15 MiB free, under 2 × 12 MiB
    checkpoints.warn_if_disk_is_short(tmp_path, model)
    checkpoints.warn_if_disk_is_short(tmp_path, model)
    said = capsys.readouterr().out
    assert said.count("warning") == 1 and "0.01 GiB free where checkpoints go" in said and "about 0.01 GiB" in said
    checkpoints.warn_if_disk_is_short(tmp_path / "other", model)  # another folder is warned about on its own
    assert capsys.readouterr().out.count("warning") == 1


def test_enough_disk_says_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs, "free_gib", lambda folder: 0.03)  # over 2 × 12 MiB
    checkpoints.warn_if_disk_is_short(tmp_path, model_with(2**20))
    assert capsys.readouterr().out == ""


def test_the_newest_checkpoint_on_disk_is_the_measure(tmp_path, monkeypatch, capsys):
    done = tmp_path / "checkpoint-2"
    done.mkdir()
    (done / outputs.CHECKPOINT_MARKER).write_text("{}")
    (done / "optimizer.pt").write_bytes(b"\0" * 2**20)  # 1 MiB, though the model would estimate 12
    monkeypatch.setattr(outputs, "free_gib", lambda folder: 0.015)
    checkpoints.warn_if_disk_is_short(tmp_path, model_with(2**20))
    assert capsys.readouterr().out == ""  # 15 MiB free holds two 1 MiB checkpoints

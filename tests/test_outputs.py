"""The run folder's files: written atomically, replaced only when nbkit wrote them, checkpoints told complete."""
import json
import os

import pytest

from nbkit.errors import ConfigError, ExportError
from nbkit.planning.config import RunConfig
from nbkit.training import outputs


def test_write_text_atomic_replaces_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "report.json"
    outputs.write_text_atomic(target, "first")
    outputs.write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    outputs.write_text_atomic(target, "old")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        outputs.write_text_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_checkpoints_in_step_order_and_the_newest_complete_one(tmp_path):
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}" / outputs.CHECKPOINT_MARKER).write_text("{}")
    assert [p.name for p in outputs.checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    newest, skipped = outputs.newest_checkpoint(tmp_path)
    assert newest.name == "checkpoint-10" and [p.name for p in skipped] == ["checkpoint-30"]  # half-written
    assert outputs.newest_checkpoint(tmp_path / "none") == (None, [])


def test_the_marker_lists_what_the_run_wrote_and_only_that_is_removed(tmp_path):
    outputs.update_marker(tmp_path, written="lora_adapters", status="finished")
    outputs.update_marker(tmp_path, written="lora_adapters", step=4)  # listed once
    (tmp_path / "lora_adapters").mkdir()
    (tmp_path / "notes.txt").write_text("the user's")
    done = tmp_path / "checkpoint-4"
    done.mkdir()
    (done / outputs.CHECKPOINT_MARKER).write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # no marker: not known to be nbkit's
    marker = outputs.read_marker(tmp_path)
    assert marker == {"written": ["lora_adapters"], "status": "finished", "step": 4}
    assert set(outputs.foreign_entries(tmp_path)) == {"lora_adapters", "checkpoint-4", "checkpoint-6"}
    outputs.remove_run_entries(tmp_path, marker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "notes.txt"]
    assert not outputs.is_run_folder(tmp_path)


def test_saved_config_is_the_runs_own_settings(tmp_path):
    config = RunConfig(lora_r=4, max_steps=3, output_dir=str(tmp_path))
    outputs.update_marker(tmp_path, config=config.to_dict())
    assert outputs.saved_config(tmp_path) == config
    with pytest.raises(ConfigError, match="holds no nbkit run"):
        outputs.saved_config(tmp_path / "elsewhere")


def test_atomic_dir_replaces_only_a_folder_nbkit_wrote(tmp_path):
    with outputs.atomic_dir(tmp_path / "lora_adapters") as tmp:
        (tmp / outputs.RUN_MARKER).write_text("{}")
        (tmp / "a").write_text("1")
    with outputs.atomic_dir(tmp_path / "lora_adapters") as tmp:  # nbkit's own: replaced whole
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "lora_adapters").iterdir()) == ["b"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep").write_text("the user's")
    with pytest.raises(ExportError, match="nbkit did not write it"):
        with outputs.atomic_dir(tmp_path / "mine") as tmp:
            (tmp / "b").write_text("2")
    assert (tmp_path / "mine" / "keep").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora_adapters", "mine"]  # no temp folder left


def test_a_failure_inside_atomic_dir_leaves_the_old_folder(tmp_path):
    outputs.update_marker(tmp_path, written="merged_16bit")
    (tmp_path / "merged_16bit").mkdir()
    (tmp_path / "merged_16bit" / "old").write_text("x")
    with pytest.raises(RuntimeError):
        with outputs.atomic_dir(tmp_path / "merged_16bit") as tmp:
            (tmp / "half").write_text("y")
            raise RuntimeError("conversion failed")
    assert [p.name for p in (tmp_path / "merged_16bit").iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged_16bit", outputs.RUN_MARKER]


def test_rescue_dir_is_a_fresh_folder_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_CACHE", str(tmp_path))
    one, two = outputs.rescue_dir("lora_adapters"), outputs.rescue_dir("lora_adapters")
    assert one != two and one.parent == two.parent == tmp_path / "rescued"
    assert one.name.startswith("lora_adapters-") and one.is_dir() and not any(one.iterdir())


def test_check_writable_names_the_folder(tmp_path):
    outputs.check_writable(tmp_path / "new")
    assert (tmp_path / "new").is_dir() and not any((tmp_path / "new").iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="Cannot write to output_dir=.*file"):
        outputs.check_writable(tmp_path / "file" / "run")


def test_free_gib_asks_the_nearest_existing_folder(tmp_path):
    free = outputs.free_gib(tmp_path / "not" / "yet")
    assert free > 0 and free == pytest.approx(os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
                                              / 1024**3, rel=0.05)


def test_the_marker_is_json_a_person_can_read(tmp_path):
    outputs.update_marker(tmp_path, status="training")
    assert json.loads((tmp_path / outputs.RUN_MARKER).read_text())["status"] == "training"

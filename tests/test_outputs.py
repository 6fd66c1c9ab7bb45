"""The run folder's files: written atomically, checkpoints told complete; nbkit writes only what it wrote: an
export or an overwrite replaces nbkit's own files (listed in the markers), never a folder wholesale; a file of the
user's beside them survives, and a name clash is one line."""
import json
import os

import pytest

from helpers.kernel import tree_digest
from nbkit import RunConfig, workflow
from nbkit.errors import ConfigError, ExportError
from nbkit.training import outputs, runs


def export_into(final, files: dict[str, str]) -> None:
    with outputs.atomic_dir(final) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def run_folder(tmp_path, exported: dict) -> None:
    (tmp_path / "nbkit_run.json").write_text(json.dumps(
        {"status": "finished", "config": {}, "written": [e["path"] for e in exported.values()], "exported": exported}))


def test_a_second_export_replaces_its_own_files_and_keeps_the_users(tmp_path):
    run_folder(tmp_path, {"gguf": {"path": "gguf", "step": 2, "files": ["Modelfile", "m-q8_0.gguf"]}})
    export_into(tmp_path / "gguf", {"Modelfile": "old", "m-q8_0.gguf": "old weights"})
    (tmp_path / "gguf" / "my-model-q4_k_m.gguf").write_text("the user's own quant")
    (tmp_path / "gguf" / "my_eval.txt").write_text("the user's notes")
    export_into(tmp_path / "gguf", {"Modelfile": "new", "m-f16.gguf": "new weights"})
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == \
        ["Modelfile", "m-f16.gguf", "my-model-q4_k_m.gguf", "my_eval.txt"]  # nbkit's old m-q8_0.gguf is gone
    assert (tmp_path / "gguf" / "Modelfile").read_text() == "new"
    assert (tmp_path / "gguf" / "my_eval.txt").read_text() == "the user's notes"
    assert not list(tmp_path.glob(".nbkit-tmp-*"))


def test_a_name_clash_with_a_users_file_is_refused_before_anything_changes(tmp_path):
    run_folder(tmp_path, {"gguf": {"path": "gguf", "step": 2, "files": ["Modelfile"]}})
    export_into(tmp_path / "gguf", {"Modelfile": "nbkit's"})
    (tmp_path / "gguf" / "m-q8_0.gguf").write_text("the user's file of the name nbkit writes")
    before = tree_digest(tmp_path)
    with pytest.raises(ExportError) as err:
        export_into(tmp_path / "gguf", {"Modelfile": "new", "m-q8_0.gguf": "new weights"})
    text = str(err.value)
    assert "\n" not in text and "m-q8_0.gguf is not nbkit's" in text and "Move or rename it" in text
    assert tree_digest(tmp_path) == before and not list(tmp_path.glob(".nbkit-tmp-*"))


def test_overwrite_removes_only_the_files_the_run_wrote(tmp_path):
    run_folder(tmp_path, {"merged": {"path": "merged_16bit", "step": 2, "files": ["model.safetensors"]}})
    export_into(tmp_path / "merged_16bit", {"model.safetensors": "weights"})
    (tmp_path / "merged_16bit" / "my_eval.txt").write_text("the user's")
    outputs.remove_run_entries(tmp_path, outputs.read_marker(tmp_path))
    assert sorted(p.name for p in (tmp_path / "merged_16bit").iterdir()) == ["my_eval.txt"]
    assert not (tmp_path / "nbkit_run.json").exists()


def test_export_twice_and_overwrite_keep_the_users_files(tmp_path):
    """The issue's case on a real run: `nbkit export RUN --gguf` a second time, then --overwrite, with the user's
    own files in gguf/ and lora_adapters/."""
    from nbkit.exporting.export import from_run

    run = tmp_path / "run"
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=0, max_samples=8, output_dir=str(run))
    workflow.run(cfg, gguf=True, max_new_tokens=2)
    users = {run / "gguf" / "my-model-q4_k_m.gguf": "the user's quant", run / "gguf" / "my_eval.txt": "notes",
             run / "lora_adapters" / "my_eval.txt": "more notes"}
    for path, text in users.items():
        path.write_text(text)
    ours = sorted(p.name for p in (run / "gguf").iterdir() if p not in users)
    from_run(run, gguf="q8_0")
    assert all(path.read_text() == text for path, text in users.items())
    assert sorted(p.name for p in (run / "gguf").iterdir() if p not in users) == ours
    workflow.run(cfg, max_new_tokens=2, overwrite=True)  # replaces the run: its gguf export is gone, not the user's
    assert all(path.read_text() == text for path, text in users.items())
    assert sorted(p.name for p in (run / "gguf").iterdir()) == ["my-model-q4_k_m.gguf", "my_eval.txt"]
    assert (run / "lora_adapters" / "adapter_model.safetensors").exists()
    m = outputs.read_marker(run)
    assert m["status"] == "finished" and "gguf" not in m["exported"] and runs.describe(m, run).startswith("finished")


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
    # lora_adapters lists no files of its own (as an older nbkit wrote it): it is kept and said, never removed whole
    assert outputs.remove_run_entries(tmp_path, marker) == ["lora_adapters"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "lora_adapters", "notes.txt"]
    assert not outputs.is_run_folder(tmp_path)


def test_saved_config_is_the_runs_own_settings(tmp_path):
    config = RunConfig(lora_r=4, max_steps=3, output_dir=str(tmp_path))
    outputs.update_marker(tmp_path, config=config.to_dict())
    assert outputs.saved_config(tmp_path) == config
    with pytest.raises(ConfigError, match="holds no nbkit run"):
        outputs.saved_config(tmp_path / "elsewhere")


def test_atomic_dir_replaces_only_what_nbkit_wrote(tmp_path):
    with outputs.atomic_dir(tmp_path / "lora_adapters") as tmp:
        (tmp / outputs.RUN_MARKER).write_text(json.dumps({"files": ["a"]}))
        (tmp / "a").write_text("1")
    (tmp_path / "lora_adapters" / "notes.txt").write_text("the user's")
    with outputs.atomic_dir(tmp_path / "lora_adapters") as tmp:  # nbkit's own files replaced, the user's kept
        (tmp / outputs.RUN_MARKER).write_text(json.dumps({"files": ["b"]}))
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "lora_adapters").iterdir()) == ["b", outputs.RUN_MARKER, "notes.txt"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep").write_text("the user's")
    with pytest.raises(ExportError, match="is not nbkit's"):
        with outputs.atomic_dir(tmp_path / "mine") as tmp:
            (tmp / "keep").write_text("2")  # a name the user's file has: refused before anything changes
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

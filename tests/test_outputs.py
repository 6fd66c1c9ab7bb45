"""nbkit writes only what it wrote: an export or an overwrite replaces nbkit's own files (listed in the markers),
never a folder wholesale; a file of the user's beside them survives, and a name clash is one line."""
import json

import pytest

from helpers.kernel import tree_digest
from nbkit import RunConfig, runs, workflow
from nbkit.errors import ExportError
from nbkit.training import outputs


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
    from nbkit.export import from_run

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

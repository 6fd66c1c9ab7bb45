"""A notebook session as people have one, in a real Jupyter kernel (CPU, the tiny model): Run All twice, a cell
run again, Kernel → Interrupt during training and Run All again, a failed data set fixed and retried, preflight
then run, resuming a finished run, exporting from a new kernel. Each checks the run folders' states, the
messages, and that what must not change is byte-identical."""
import json
import re
import time
from pathlib import Path

import pytest

from helpers.kernel import Kernel, notebook_cells, tree_digest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "8gb.ipynb"
pytestmark = pytest.mark.slow


def marker(folder: Path) -> dict:
    return json.loads((folder / "nbkit_run.json").read_text())


def cell_index(cells, text: str) -> int:
    return next(i for i, c in enumerate(cells) if text in c)


@pytest.fixture
def kernel(tmp_path, tiny_dir):
    k = Kernel(tmp_path)
    yield k
    k.close()


def test_run_all_twice_then_the_load_and_train_cells_again(kernel, tmp_path):
    cells = notebook_cells(NOTEBOOK, save_merged=False, save_gguf=False)
    for attempt in range(2):
        runs = kernel.run_all(cells)
        assert [r.error for r in runs if r.error] == [], runs[-1].text
        assert len(runs) == len(cells)
    folders = sorted((tmp_path / "outputs" / "8gb").iterdir())
    assert len(folders) == 2  # each Run All trains a run of its own; the first is left as it was
    for folder in folders:
        m = marker(folder)
        assert m["status"] == "finished" and m["step"] == m["total"] == 60
        assert m["exported"]["lora"]["step"] == 60 and (folder / "lora_adapters/adapter_model.safetensors").exists()
    before = {f: tree_digest(f) for f in folders}
    # run the load cell again, then the data and train cells: a finished run is final, and the message says
    # what to do instead (a fresh folder comes from the cell that builds the config)
    load, train = cell_index(cells, "models.load(config)"), cell_index(cells, "train.run(")
    again = kernel.run_all(cells[load:train + 1])
    assert again[0].error is None and again[-1].error[0] == "ConfigError"
    assert re.search(r"already holds an nbkit run \(finished \(60/60 steps; exported: lora\)", again[-1].error[1])
    assert "run the cell that builds the config again for a fresh folder" in again[-1].error[1]
    assert "leave output_dir unset" not in again[-1].error[1]  # it was unset: no advice to do what was done
    assert {f: tree_digest(f) for f in folders} == before


def test_interrupt_during_training_stops_run_all_then_run_all_again(kernel, tmp_path):
    params = dict(model="nbkit/tiny-llama", smoke=False, max_steps=150, max_seq_length=256, save_merged=False,
                  save_gguf=False)
    cells = notebook_cells(NOTEBOOK, **params)
    train = cell_index(cells, "train.run(")
    root = tmp_path / "outputs" / "8gb"
    sent = []

    def interrupt_once_training(k, seconds):
        folders = list(root.iterdir()) if root.exists() else []
        if not sent and folders and marker(folders[0]).get("status") == "training":
            sent.append(time.monotonic())
        elif sent and len(sent) == 1 and time.monotonic() - sent[0] > 1.5:  # a few steps in
            k.interrupt()
            sent.append(time.monotonic())

    runs = kernel.run_all(cells[:train])
    assert not [r for r in runs if r.error]
    result = kernel.run(cells[train], while_running=interrupt_once_training)
    assert len(sent) == 2, "training ended before the interrupt"
    assert result.error and result.error[0] == "TrainingInterrupted"
    step = int(re.search(r"Training interrupted at step (\d+)/150", result.error[1]).group(1))
    assert 0 < step < 150 and "Continue with resume=True" in result.error[1]
    assert "Training finished" not in result.text
    (folder,) = root.iterdir()
    m = marker(folder)
    assert (m["status"], m["step"], m["total"]) == ("interrupted", step, 150)
    assert (folder / f"checkpoint-{step}" / "nbkit_checkpoint.json").exists()  # saved at the step boundary
    assert not (folder / "lora_adapters").exists()  # Run All stopped: no cell after training ran
    interrupted = tree_digest(folder)
    # running the save cell by hand: a partial model is not exported without an explicit choice
    save = kernel.run(cells[cell_index(cells, "export.save_lora(")])
    assert save.error[0] == "UnfinishedRunError"
    assert f"trained {step} of 150 steps (interrupted)" in save.error[1] and "allow_unfinished=True" in save.error[1]
    chat = kernel.run(cells[cell_index(cells, "chat(loaded)")])
    assert chat.error[0] == "UnfinishedRunError" and "chat with it as it is" in chat.error[1]
    # Run All again: a fresh run in a fresh folder; the interrupted one is left as it was, resumable
    runs = kernel.run_all(cells)
    assert [r.error for r in runs if r.error] == []
    assert tree_digest(folder) == interrupted
    (fresh,) = set(root.iterdir()) - {folder}
    assert marker(fresh)["status"] == "finished" and marker(fresh)["step"] == 150


# max_seq_length=16 holds no answer after the chat template's prompt: the run fails once the data is tokenized
CFG = ('cfg = RunConfig(quantization="16bit", max_seq_length=16, batch_size=2, grad_accum=1, max_steps=2, lora_r=4, '
       'save_steps=1, max_samples=8, output_dir="run")')


def test_failed_data_set_fixed_retried_resumed_and_exported_from_a_new_kernel(kernel, tmp_path):
    run = tmp_path / "run"
    setup = kernel.run(f"import nbkit\nfrom nbkit import RunConfig, workflow\n{CFG}")
    assert setup.error is None
    failed = kernel.run("workflow.run(cfg)")  # every answer lies past 16 tokens: fails once the model has loaded
    assert failed.error[0] == "DataError" and "raise max_seq_length" in failed.error[1]
    m = marker(run)
    assert m["status"] == "failed" and m["phase"] == "preparing" and "DataError: Every row lost" in m["error"]
    # fixed and run again, as is: no flag, and preflight first (it claims nothing)
    fixed = kernel.run('cfg = cfg.replace(max_seq_length=64)\nprint(workflow.preflight(cfg))\n'
                       'report = workflow.run(cfg)\nprint("STATE", report.train.state, report.ok)')
    assert fixed.error is None, fixed.error
    assert "retrying the run there that never trained" in fixed.text and "STATE finished True" in fixed.text
    assert marker(run)["status"] == "finished" and marker(run)["step"] == 2
    done = tree_digest(run)
    # resuming a finished run says so and changes nothing
    again = kernel.run("workflow.run(cfg, resume=True)")
    assert again.error[0] == "RunFinished" and "already finished (2/2 steps; exported: lora); nothing was changed" in again.error[1]
    assert tree_digest(run) == done
    # training longer is explicit: a larger max_steps, continued from the last checkpoint, and recorded
    longer = kernel.run('report = workflow.run(cfg.replace(max_steps=4), resume=True)\n'
                        'print("STEPS", report.train.steps, report.train.resumed_from)')
    assert longer.error is None, longer.error
    assert re.search(r"STEPS 4 \S*checkpoint-2", longer.text)
    m = marker(run)
    assert m["status"] == "finished" and m["step"] == 4 and m["extended"][0]["from_step"] == 2
    # the next morning: a new kernel exports from the folder alone, without training
    later = Kernel(tmp_path)
    try:
        out = later.run('from nbkit.exporting import export\nw = export.from_run("run", merged=True, gguf="q8_0")\n'
                        'print("WROTE", sorted(w))')
    finally:
        later.close()
    assert out.error is None, out.error
    assert "WROTE ['gguf', 'lora', 'merged']" in out.text and "no training" in out.text
    assert "training for" not in out.text
    exported = marker(run)["exported"]
    assert {k: v["step"] for k, v in exported.items()} == {"lora": 4, "merged": 4, "gguf": 4}
    assert (run / "merged_16bit" / "model.safetensors").exists() and list((run / "gguf").glob("*.gguf"))

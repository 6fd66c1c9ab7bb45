"""After the last step: the adapters are saved first, and whatever fails or interrupts later (the verification, the
after-sample, an export; an error, a full disk, Ctrl-C, SIGTERM) leaves a saved run that says what is missing, with
the command that finishes it. Real runs of the tiny model; the fault is injected at one stage (tests/helpers/faults.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.faults import install
from nbkit import RunConfig, workflow
from nbkit.training import runs
from nbkit.errors import AfterTrainingError, RunFinished
from nbkit.training.run_states import STAGES

FAULTS = str(Path(__file__).parent / "helpers" / "faults.py")


def cfg(tmp_path, **changes) -> RunConfig:
    base = dict(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                save_steps=0, max_samples=8, output_dir=str(tmp_path / "run"))
    return RunConfig(**{**base, **changes})


def marker(run: Path) -> dict:
    return json.loads((run / "nbkit_run.json").read_text())


def assert_saved(run: Path) -> None:
    assert (run / "lora_adapters" / "adapter_model.safetensors").stat().st_size > 1000
    assert json.loads((run / "lora_adapters" / "nbkit_run.json").read_text())["files"]


@pytest.mark.parametrize("stage", ["verify", "sample"])
def test_a_failure_after_the_last_step_leaves_a_saved_run(tmp_path, monkeypatch, stage):
    install(stage, "error", monkeypatch.setattr)
    run = tmp_path / "run"
    with pytest.raises(AfterTrainingError) as info:
        workflow.run(cfg(tmp_path), merged=True, max_new_tokens=2)
    err, m = info.value, marker(run)
    assert_saved(run)
    assert m["status"] == "finished" and m["step"] == 2
    assert m["todo"] == ["verify", "sample", "merged", "report"][["verify", "sample"].index(stage):]
    assert m["cut_short"] == f"{STAGES[stage]} failed: RuntimeError: injected failure at {stage}"
    text = str(err)
    assert "\n" not in text and text.startswith(f"Training finished, but {STAGES[stage]} failed: RuntimeError")
    assert f"The adapters are saved in {run / 'lora_adapters'}" in text
    assert text.endswith(f"Finish it with: nbkit export {run} --merged") and ".loaded" not in text
    assert err.loaded is not None and err.result.steps == 2 and not (run / "nbkit_report.json").exists()
    assert "not done: " in runs.describe(m, run)
    # resuming the saved run says what is missing instead of "nothing was changed"
    with pytest.raises(RunFinished) as again:
        runs.plan(cfg(tmp_path), resume=True)
    assert "nothing was changed" not in str(again.value) and again.value.pending == ["merged"]
    assert f"Finish it with: nbkit export {run} --merged" in str(again.value)
    if stage == "sample":  # and the command finishes it: the export the run was asked for, from the folder
        monkeypatch.undo()
        from nbkit.exporting.export import from_run

        written = from_run(run)
        assert (written["merged"] / "model.safetensors").exists()
        m = marker(run)
        assert m["exported"]["merged"]["step"] == 2 and "merged" not in m["todo"]
        assert runs.pending_exports(m) == []


@pytest.mark.parametrize("stage, flag", [("merged", "--merged"), ("gguf", "--gguf q8_0")])
def test_a_full_disk_at_an_export_is_a_failed_step_with_the_command(tmp_path, monkeypatch, capsys, stage, flag):
    install(stage, "ENOSPC", monkeypatch.setattr)
    run = tmp_path / "run"
    report = workflow.run(cfg(tmp_path), merged=stage == "merged", gguf=stage == "gguf", max_new_tokens=2)
    assert_saved(run)
    assert not report.ok and report.verify.ok and list(report.failures) == [STAGES[stage].removeprefix("the ")]
    (why,) = report.failures.values()
    assert "No space left on device" in why and why.endswith(f"finish with: nbkit export {run} {flag}")
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "FAILED" in x]
    assert line.endswith(f"retry the export alone with: nbkit export {run} --{stage}")
    assert "save_lora" not in out and ".loaded" not in out
    m = marker(run)
    assert m["status"] == "finished" and m["todo"] == [stage]
    assert m["cut_short"].startswith(f"{STAGES[stage]} failed: ExportError: Could not write")
    assert json.loads((run / "nbkit_report.json").read_text())["ok"] is False


def nbkit_cli(args, env=None, script=FAULTS):
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_export_on_a_full_disk_is_one_line_with_the_command(tmp_path):
    run = tmp_path / "run"
    workflow.run(cfg(tmp_path), max_new_tokens=2)
    proc = nbkit_cli(["export", str(run), "--merged"], {"NBKIT_FAULT_AT": "merged", "NBKIT_FAULT": "ENOSPC"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("nbkit: error:")]
    assert "No space left on device" in line and line.endswith(f"finish with: nbkit export {run} --merged")
    assert "save_lora" not in proc.stderr and ".loaded" not in proc.stderr
    assert not (run / "merged_16bit").exists() and not list(run.glob(".nbkit-tmp-*"))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", ["save", "verify", "sample", "merged", "gguf"])
def test_a_signal_after_the_last_step_leaves_a_saved_run(tmp_path, stage, sig):
    """Ctrl-C or SIGTERM as a stage after training begins (through the CLI, in a child process): the adapters are
    on disk (a signal during their save waits for it), the folder says what is missing, one line gives the
    command that finishes it, and the exit code is the shell's for that signal."""
    run = tmp_path / "run"
    path = cfg(tmp_path).save(tmp_path / "run.yaml")
    proc = nbkit_cli(["train", "--config", str(path), "--merged", "--gguf"],
                     {"NBKIT_FAULT_AT": stage, "NBKIT_FAULT": sig})
    assert proc.returncode == (130 if sig == "SIGINT" else 143), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    during = "verify" if stage == "save" else stage  # a signal while the adapters are written waits for them
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("nbkit:") and "Interrupted" in x]
    assert line.startswith(f"nbkit: Interrupted ({sig}) after training, during {STAGES[during]}")
    left = ["verify", "sample", "merged", "gguf", "report"]
    left = left[left.index(during):]
    flags = "".join({"merged": " --merged", "gguf": " --gguf q8_0"}[k] for k in left if k in ("merged", "gguf"))
    assert line.endswith(f"Finish it with: nbkit export {run}{flags}")
    assert_saved(run)
    m = marker(run)
    assert m["status"] == "finished" and m["todo"] == left
    assert m["cut_short"] == f"interrupted ({sig}) during {STAGES[during]}"
    assert not (run / "nbkit_report.json").exists() and not (run / ".nbkit_run.lock").exists()
    assert (run / "merged_16bit").exists() == (stage == "gguf")  # the exports before the signal are made


def test_ctrl_c_twice_during_the_save_stops_at_once_and_says_so(tmp_path):
    """The first Ctrl-C waits for the adapters; a second one means "now": they are not saved, and the one line
    says what rebuilds them (here nothing: no checkpoint was kept), exit 130."""
    run = tmp_path / "run"
    path = cfg(tmp_path).save(tmp_path / "run.yaml")
    proc = nbkit_cli(["train", "--config", str(path)], {"NBKIT_FAULT_AT": "save", "NBKIT_FAULT": "SIGINTx2"})
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if "Interrupted twice" in x]
    assert line == ("nbkit: Interrupted twice (SIGINT) while the adapters were being saved: they are not saved; "
                    "train again (no checkpoint was kept).")
    m = marker(run)
    assert m["status"] == "finished" and m["todo"][0] == "save"
    assert m["cut_short"] == "interrupted (SIGINT) while saving the adapters"
    assert not (run / "lora_adapters").exists() and not list(run.glob(".nbkit-tmp-*"))

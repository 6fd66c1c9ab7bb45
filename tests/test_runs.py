"""nbkit.training.runs: what training into a folder may do, decided from its marker, and written only when training starts."""
import json
import os
import socket
import subprocess
import sys

import pytest

from helpers.kernel import tree_digest
from nbkit import ConfigError, RunConfig
from nbkit.training import runs
from nbkit.errors import ExportError, RunFinished


def cfg(folder, **changes) -> RunConfig:
    return RunConfig(output_dir=str(folder), max_steps=4, **changes)


def write_marker(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    base = {"status": "finished", "config": cfg(folder).to_dict(), "written": [], "step": 4, "total": 4}
    (folder / "nbkit_run.json").write_text(json.dumps({**base, **fields}))


def checkpoint(folder, step, complete=True):
    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_text("weights")
    if complete:
        (ck / "nbkit_checkpoint.json").write_text("{}")


def test_plan_writes_nothing_and_a_new_folder_is_new(tmp_path):
    claim = runs.plan(cfg(tmp_path / "run"))
    assert claim.mode == "new" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("status", ["preparing", "failed", "running", "training"])
def test_a_run_that_never_trained_is_retried_as_it_is(tmp_path, status):
    write_marker(tmp_path / "run", status=status, phase="preparing", step=None, pid=999999999,
                 host=socket.gethostname())
    before = tree_digest(tmp_path)
    assert runs.plan(cfg(tmp_path / "run")).mode == "retry"
    assert runs.plan(cfg(tmp_path / "run"), resume=True).mode == "retry"  # nothing to resume: starts over
    assert tree_digest(tmp_path) == before


def test_a_run_with_a_checkpoint_or_files_is_not_retried_silently(tmp_path):
    write_marker(tmp_path / "a", status="failed", phase="training", step=3)
    checkpoint(tmp_path / "a", 2)
    with pytest.raises(ConfigError, match=r"failed while training at step 3/4.*resume=True.*overwrite=True"):
        runs.plan(cfg(tmp_path / "a"))
    assert runs.plan(cfg(tmp_path / "a"), resume=True).mode == "resume"
    write_marker(tmp_path / "b", status="failed", phase="preparing")
    (tmp_path / "b" / "lora_adapters").mkdir()  # a name a run writes, not listed by this run: not ours to reuse
    with pytest.raises(ConfigError, match="already holds an nbkit run"):
        runs.plan(cfg(tmp_path / "b"))


def test_a_finished_run_is_final_unless_asked_for_more_steps(tmp_path):
    run = tmp_path / "run"
    write_marker(run, written=["lora_adapters"], exported={"lora": {"step": 4}})
    checkpoint(run, 4)
    with pytest.raises(RunFinished, match=r"already finished \(4/4 steps; exported: lora\); nothing was changed"):
        runs.plan(cfg(run), resume=True)
    with pytest.raises(ConfigError, match=r"It is final: export it with nbkit export .*max_steps above 4"):
        runs.plan(cfg(run))
    assert runs.plan(cfg(run).replace(max_steps=8), resume=True).mode == "extend"
    before = tree_digest(tmp_path)
    claim = runs.start_training(cfg(run).replace(max_steps=8), resume=True)
    m = json.loads((run / "nbkit_run.json").read_text())
    assert claim.mode == "extend" and m["status"] == "training" and m["extended"][0]["from_step"] == 4
    # the export of step 4 is no longer the run's: marked stale (with its step), its files left as they are
    assert m["exported"] == {} and m["stale_exports"] == {"lora": {"step": 4}}
    assert {k: v for k, v in tree_digest(tmp_path).items() if "nbkit_run" not in k} == \
        {k: v for k, v in before.items() if "nbkit_run" not in k}
    runs.end(run, runs.FINISHED, step=8, total=8)
    assert "stale exports: lora (step 4)" in runs.describe(json.loads((run / "nbkit_run.json").read_text()), run)


def test_a_finished_run_without_checkpoints_cannot_be_extended(tmp_path):
    write_marker(tmp_path / "run", written=["lora_adapters"])
    with pytest.raises(ConfigError, match="without a checkpoint"):
        runs.plan(cfg(tmp_path / "run").replace(max_steps=8), resume=True)


HOLDER = """
import sys, time
from nbkit import RunConfig
from nbkit.training import runs
runs.start_training(RunConfig(output_dir=sys.argv[1], max_steps=4))
print("holding", flush=True)
time.sleep(120)
"""


def test_a_folder_another_live_process_trains_into_is_refused(tmp_path):
    """A process that really trains into the folder holds its lock: every call is refused, naming that process;
    once it dies (kill -9: no chance to clean up), the folder is free and the run resumable."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        checkpoint(run, 1)
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(ConfigError, match=f"Process {holder.pid} .*is using .*{run.name} now"):
                runs.plan(cfg(run), **kwargs)
        with pytest.raises(ConfigError, match=f"Process {holder.pid}"):
            from nbkit.exporting.export import from_run
            from_run(run, allow_unfinished=True)
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the run ended without finishing, and can be resumed
    marker = json.loads((run / "nbkit_run.json").read_text())
    assert marker["status"] == "training" and "its process is gone" in runs.describe(marker, run)
    assert runs.plan(cfg(run), resume=True).mode == "resume"


def test_a_recycled_process_id_does_not_lock_the_folder(tmp_path):
    """The marker names a live process that is not nbkit's (the training process died and its id was given to
    another program): the folder is not taken, and no advice points at that program."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_marker(tmp_path / "run", status="training", pid=sleeper.pid, host=socket.gethostname(), step=1)
        checkpoint(tmp_path / "run", 1)
        assert runs.plan(cfg(tmp_path / "run"), resume=True).mode == "resume"
        assert runs.plan(cfg(tmp_path / "run"), overwrite=True).mode == "overwrite"
        with pytest.raises(ConfigError) as err:
            runs.plan(cfg(tmp_path / "run"))
        assert str(sleeper.pid) not in str(err.value) and "resume=True" in str(err.value)
        marker = json.loads((tmp_path / "run/nbkit_run.json").read_text())
        assert "its process is gone" in runs.describe(marker, tmp_path / "run")
        assert sleeper.poll() is None  # nothing was done to it
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_this_kernel_trains_into_is_refused(tmp_path):
    """A launcher's thread trains into the folder: a cell of the same kernel is refused; the thread's own
    training (the workflow, then train.run) is not."""
    import threading

    run = tmp_path / "run"
    runs.start_training(cfg(run))
    try:
        assert json.loads((run / "nbkit_run.json").read_text())["pid"] == os.getpid()
        assert runs.plan(cfg(run), resume=True)  # this thread: its own run, further along (not refused)
        seen = []

        def other_cell():
            try:
                runs.plan(cfg(run), resume=True)
            except ConfigError as exc:
                seen.append(str(exc))

        thread = threading.Thread(target=other_cell)
        thread.start()
        thread.join()
        assert seen and "A run of this kernel is using" in seen[0]
    finally:
        checkpoint(run, 1)
        runs.end(run, runs.STOPPED, step=1, total=4)
    assert runs.plan(cfg(run), resume=True).mode == "resume"
    assert not (run / ".nbkit_run.lock").exists()  # released when the run ended


def test_phases_record_failures_and_interrupts(tmp_path):
    run = tmp_path / "run"
    runs.begin(cfg(run))
    assert json.loads((run / "nbkit_run.json").read_text())["status"] == "preparing"
    with pytest.raises(ValueError):
        with runs.phase(run, "loading"):
            raise ValueError("no such model\nsecond line")
    m = json.loads((run / "nbkit_run.json").read_text())
    assert (m["status"], m["phase"], m["error"]) == ("failed", "loading", "ValueError: no such model")
    assert runs.describe(m) == "failed while loading"
    runs.begin(cfg(run))  # retried
    with pytest.raises(KeyboardInterrupt):
        with runs.phase(run, "preparing"):
            raise KeyboardInterrupt
    assert json.loads((run / "nbkit_run.json").read_text())["status"] == "interrupted"


def test_unfinished_models_need_an_explicit_choice(tmp_path):
    class Loaded:
        trained = runs.RunState(runs.INTERRUPTED, 3, 15, str(tmp_path))

    with pytest.raises(ExportError, match=r"trained 3 of 15 steps \(interrupted\).*allow_unfinished=True"):
        runs.require_finished(Loaded.trained, "merge")
    runs.require_finished(Loaded.trained, "merge", allow_unfinished=True)
    Loaded.trained = runs.RunState(runs.FINISHED, 15, 15)
    runs.require_finished(Loaded.trained, "merge")

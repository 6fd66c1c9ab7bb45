"""Resume knows its run: the data's fingerprint is part of it (a changed file is refused, or accepted explicitly and
recorded), and the exports of an earlier step are marked stale when the run trains on."""
import json
import shutil

import pytest

from nbkit import ConfigError, RunConfig, workflow
from nbkit.training import runs
from nbkit.resources import DEFAULT_DATA_PATH


def test_a_resumed_run_refuses_changed_data_and_marks_old_exports_stale(tmp_path):
    from nbkit.exporting.export import from_run

    data = tmp_path / "data.jsonl"
    shutil.copy(DEFAULT_DATA_PATH, data)
    run = tmp_path / "run"
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=1, max_samples=8, dataset=str(data), output_dir=str(run))
    workflow.run(cfg, max_new_tokens=2)
    first = json.loads((run / "nbkit_run.json").read_text())
    assert first["data"]["files"] == 1 and len(first["data"]["sha256"]) == 64
    from_run(run, merged=True)  # exported at step 2
    # the data file is edited in place: continuing would train the rest of the run on other rows
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[1:] + rows[:1]) + "\n")
    longer = cfg.replace(max_steps=3)
    recorded = (run / "nbkit_run.json").read_text()
    with pytest.raises(ConfigError) as err:
        workflow.run(longer, resume=True, max_new_tokens=2)
    text = str(err.value)
    assert f"The data ({data}) changed since the run in {run} trained on it" in text
    assert "accept_changed_data=True (CLI: --accept-changed-data)" in text and "\n" not in text
    assert (run / "nbkit_run.json").read_text() == recorded  # refused before anything was written
    # accepted explicitly: it trains on, and the folder records the change and from which step
    report = workflow.run(longer, resume=True, accept_changed_data=True, max_new_tokens=2)
    m = json.loads((run / "nbkit_run.json").read_text())
    assert report.train.steps == 3 and m["status"] == "finished" and m["step"] == 3
    assert m["data_changes"][0]["at_step"] == 2 and m["data_changes"][0]["from"] == first["data"]["sha256"]
    assert m["data"]["sha256"] == m["data_changes"][0]["to"] != first["data"]["sha256"]
    # the merged export holds step 2: no longer the run's export, said as stale; the adapters are step 3's
    assert "merged" not in m["exported"] and m["stale_exports"]["merged"]["step"] == 2
    assert m["exported"]["lora"]["step"] == 3
    assert "stale exports: merged (step 2)" in runs.describe(m, run)
    from_run(run, merged=True)  # exported again: current, and no longer stale
    m = json.loads((run / "nbkit_run.json").read_text())
    assert m["exported"]["merged"]["step"] == 3 and m["stale_exports"] == {}


def test_the_fingerprint_is_of_the_data_as_it_is_on_disk(tmp_path):
    from nbkit.training.same_run import data_fingerprint

    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    cfg = RunConfig(dataset=str(data))
    before = data_fingerprint(cfg)
    assert data_fingerprint(cfg) == before
    data.write_text('{"instruction": "a", "output": "c"}\n')  # same size, other content
    assert data_fingerprint(cfg)["sha256"] != before["sha256"]
    assert data_fingerprint(RunConfig())["files"] == 1  # the embedded data set too
    assert data_fingerprint(RunConfig(dataset="someone/hub-set")) is None  # a Hub id: not fingerprinted here

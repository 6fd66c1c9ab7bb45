"""Batch probing: the search order, and a real probe on the tiny model that leaves the adapters as they were."""
import pytest

from nbkit import RunConfig
from nbkit.loading import models
from nbkit.training import probe
from nbkit.exporting import verify


def limit(n, log):
    """A stand-in for 'the GPU': batches up to n train. It records the order the probe asked in."""
    def trains(b):
        log.append(b)
        return b <= n
    return trains


@pytest.mark.parametrize("predicted, capacity, largest", [(8, 8, 8), (8, 5, 5), (8, 1, 1), (3, 0, 0), (1, 1, 1)])
def test_search_steps_down_to_the_largest_that_trains(predicted, capacity, largest):
    log = []
    result = probe.search(predicted, limit(capacity, log))
    assert result.largest == largest
    assert log[0] == predicted and len(log) == len(set(log))  # the prediction first, no batch twice
    assert all(ok == (b <= capacity) for b, ok in result.tried.items())


def test_search_grows_past_a_cautious_prediction():
    log = []
    result = probe.search(4, limit(11, log), grow=0.5, max_up=5)
    assert log == [4, 6, 9, 14] and result.largest == 9
    log.clear()
    assert probe.search(4, limit(100, log), grow=0.5, max_up=2).largest == 9 and log == [4, 6, 9]


def test_probe_trains_full_length_rows_and_restores_the_adapters(tmp_path):
    cfg = RunConfig(quantization="16bit", max_seq_length=64, lora_r=4, save_steps=0, output_dir=str(tmp_path))
    loaded = models.load(cfg)
    before = verify.snapshot(loaded.model)
    seen = []
    result = probe.probe_batch(loaded, predicted=2, steps=1, grow=0.5, max_up=1,
                               on_result=lambda b, ok, peak, secs: seen.append((b, ok, secs)))
    assert result.largest == 3 and result.tried == {2: True, 3: True}
    assert [b for b, _, _ in seen] == [2, 3] and all(secs > 0 for _, _, secs in seen)
    after = verify.snapshot(loaded.model)
    assert verify.compare(before, after).changed == 0  # the probe's training steps were undone
    assert not list(tmp_path.iterdir())  # nothing written where the real run will save


def test_a_batch_that_did_not_train_is_replaced_keeping_the_effective_batch():
    from nbkit import HardwareError

    cfg = RunConfig(batch_size=8, grad_accum=2, max_seq_length=2048)
    same, note = probe.settle_batch(cfg, probe.ProbeResult(8, 8, {8: True}))
    assert same is cfg and "batch 8 trained" in note
    # 32 did not train, 23 did: 16 × 2 keeps the effective batch exactly (the H100 run's case)
    cfg32 = RunConfig(batch_size=32, grad_accum=1)
    smaller, note = probe.settle_batch(cfg32, probe.ProbeResult(32, 23, {32: False, 16: True, 23: True, 24: False}))
    assert (smaller.batch_size, smaller.grad_accum) == (16, 2) and note.endswith("(effective 32)")
    # nothing between 3 and 5 divides 7: the largest that trained, nearest accumulation, and the note says so
    cfg7 = RunConfig(batch_size=7, grad_accum=1)
    smaller, note = probe.settle_batch(cfg7, probe.ProbeResult(7, 5, {7: False, 3: True, 5: True, 6: False}))
    assert (smaller.batch_size, smaller.grad_accum) == (5, 1) and "effective 5, was 7" in note
    with pytest.raises(HardwareError, match="Not even batch 1"):
        probe.settle_batch(cfg, probe.ProbeResult(8, 0, {8: False, 4: False, 2: False, 1: False}))


def test_workflow_probes_first_when_asked(tmp_path):
    import json

    from nbkit import workflow

    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=3, lora_r=4,
                    save_steps=0, max_samples=20, output_dir=str(tmp_path))
    report = workflow.run(cfg, progress=False, max_new_tokens=2, probe=True)
    assert report.notes[0] == "probe: batch 2 trained at 64 tokens on this GPU"
    assert report.train.steps == 3 and report.verify.ok
    saved = json.loads((tmp_path / "nbkit_report.json").read_text())
    assert saved["notes"][0].startswith("probe:")


def test_probe_is_refused_in_a_data_parallel_run(monkeypatch, tmp_path):
    from nbkit import ConfigError, workflow

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="single-GPU run first"):
        workflow.run(RunConfig(output_dir=str(tmp_path)), probe=True)

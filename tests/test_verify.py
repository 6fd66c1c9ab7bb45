"""verify: the adapters changed means every trainable LoRA tensor changed and is finite."""
import torch

from nbkit.exporting import verify


def tensors(**values):
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in values.items()}


def test_every_tensor_must_change():
    before = tensors(a=[0.0, 1.0], b=[2.0, 3.0], c=[4.0])
    report = verify.compare(before, tensors(a=[0.1, 1.0], b=[2.0, 3.5], c=[4.2]))
    assert report.ok and report.changed == 3 and report.fraction_changed == 1.0
    assert report.max_abs_diff == 0.5  # the largest change of any element
    assert report.summary() == (f"adapters changed: 3/3 LoRA tensors differ (100%), max |Δ| = 0.5 (sha256 "
                                f"{report.hash_before[:12]} → {report.hash_after[:12]})")
    assert report.hash_before == verify.digest(before) != report.hash_after
    partial = verify.compare(before, tensors(a=[0.1, 1.0], b=[2.0, 3.0], c=[4.0]))
    assert not partial.ok and partial.changed == 1 and partial.unchanged_names == ["b", "c"]
    assert partial.summary().startswith("ADAPTERS DID NOT ALL CHANGE: 1/3") and "(33%)" in partial.summary()
    none = verify.compare(before, before)
    assert not none.ok and none.summary().startswith("ADAPTERS DID NOT CHANGE: 0/3")


def test_non_finite_tensors_are_not_a_change():
    before = tensors(a=[0.0, 1.0], b=[2.0])
    report = verify.compare(before, tensors(a=[float("nan"), 1.0], b=[2.5]))
    assert not report.ok and report.nonfinite == 1 and report.changed == 1
    assert report.summary().startswith("ADAPTERS ARE NOT FINITE (1 tensors hold NaN/inf)")
    assert not verify.compare(before, tensors(a=[1.0, float("inf")], b=[2.5])).ok


def test_no_lora_tensors_is_not_ok():
    assert not verify.compare({}, {}).ok


def test_every_non_finite_tensor_is_counted():
    before = tensors(a=[0.0], b=[1.0], c=[2.0])
    report = verify.compare(before, tensors(a=[float("nan")], b=[float("-inf")], c=[2.0]))
    assert report.nonfinite == 2 and report.changed == 0 and report.max_abs_diff == 0.0


def test_a_tensor_missing_after_training_is_not_a_change():
    before = tensors(a=[0.0], b=[1.0], c=[2.0])
    report = verify.compare(before, tensors(b=[1.5], c=[2.5]))
    assert not report.ok and report.changed == 2 and report.unchanged_names == ["a"]


def test_snapshot_takes_the_trainable_lora_tensors_only():
    model = torch.nn.Module()
    model.lora_A = torch.nn.Parameter(torch.ones(2))
    model.base = torch.nn.Parameter(torch.ones(2))
    model.lora_frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    before = verify.snapshot(model)
    assert list(before) == ["lora_A"]
    with torch.no_grad():
        model.lora_A.add_(1.0)
    report = verify.adapters_changed(model, before)
    assert report.ok and report.tensors == 1 and report.max_abs_diff == 1.0

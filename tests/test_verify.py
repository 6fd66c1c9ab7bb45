"""verify: the adapters changed means every adapted module's update B·A moved and every tensor is finite; a
module that did not move is named with why."""
import pytest
import torch

from nbkit.exporting import verify


def tensors(**values):
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in values.items()}


def test_every_module_must_change():
    before = tensors(a=[0.0, 1.0], b=[2.0, 3.0], c=[4.0])
    report = verify.compare(before, tensors(a=[0.1, 1.0], b=[2.0, 3.5], c=[4.2]))
    assert report.ok and report.changed == 3 and report.fraction_changed == 1.0
    assert report.max_abs_diff == 0.5  # the largest change of any element
    assert report.summary() == (f"adapters changed: 3/3 adapted modules' updates B·A moved (100%; 3/3 LoRA tensors "
                                f"differ), max ‖Δ(B·A)‖ = 0.5 (sha256 {report.hash_before[:12]} → "
                                f"{report.hash_after[:12]})")
    assert report.hash_before == verify.digest(before) != report.hash_after
    partial = verify.compare(before, tensors(a=[0.1, 1.0], b=[2.0, 3.0], c=[4.0]))
    assert not partial.ok and partial.changed == 1 and partial.unchanged_names == ["b", "c"]
    assert partial.summary().startswith("ADAPTERS DID NOT ALL CHANGE: 1/3") and "(33%;" in partial.summary()
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


def lora(prefix: str, a, b) -> dict:
    return {f"{prefix}.lora_A.default.weight": torch.tensor(a, dtype=torch.float32),
            f"{prefix}.lora_B.default.weight": torch.tensor(b, dtype=torch.float32)}


def test_a_module_is_judged_by_its_update_not_by_each_tensor():
    """Observed: every 1-step run failed verification ("36/56"): LoRA starts B at zero, so A gets no gradient
    until B moves, and after a step or two A is where it started while B·A has moved. That module trained."""
    before = {**lora("q", [[1.0, 2.0]], [[0.0], [0.0]]), **lora("v", [[3.0, 1.0]], [[0.0], [0.0]])}
    after = {**lora("q", [[1.0, 2.0]], [[0.5], [0.0]]), **lora("v", [[3.0, 1.0]], [[0.0], [-0.1]])}
    report = verify.compare(before, after)
    assert report.ok and (report.modules, report.modules_changed) == (2, 2)
    assert (report.tensors, report.changed) == (4, 2) and report.fraction_changed == 1.0
    # ‖Δ(B·A)‖ of q: B·A goes from 0 to [[0.5, 1.0], [0, 0]]
    assert report.max_abs_diff == pytest.approx((0.5**2 + 1.0**2) ** 0.5)


def test_the_update_norm_is_the_norm_of_the_product_difference():
    gen = torch.Generator().manual_seed(0)
    a0, a1 = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    b0, b1 = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    report = verify.compare({**lora("m", a0.tolist(), b0.tolist())}, {**lora("m", a1.tolist(), b1.tolist())})
    assert report.max_abs_diff == pytest.approx(torch.linalg.norm(b1 @ a1 - b0 @ a0).item(), rel=1e-5)


@pytest.mark.parametrize("after, reason", [
    (lora("q", [[1.0, 2.0]], [[0.0], [0.0]]), "neither A nor B moved: no gradient reached this module"),
    (lora("q", [[1.5, 2.0]], [[0.0], [0.0]]), "B is still all zeros, so B·A is zero whatever A learned"),
    (lora("q", [[1.0, float("nan")]], [[0.1], [0.0]]), "holds NaN or infinity"),
    ({"q.lora_A.default.weight": torch.tensor([[1.0, 2.0]])}, "gone after training"),
], ids=["no-gradient", "b-still-zero", "not-finite", "gone"])
def test_a_module_whose_update_did_not_move_is_named_with_why(after, reason):
    before = {**lora("q", [[1.0, 2.0]], [[0.0], [0.0]]), **lora("o", [[1.0]], [[0.0]])}
    report = verify.compare(before, {**after, **lora("o", [[1.0]], [[0.2]])})
    assert not report.ok and report.modules_changed == 1 and report.unchanged_names == ["q.default.weight"]
    assert report.why["q.default.weight"].startswith(reason)
    assert report.summary().startswith("ADAPTERS ")
    assert f"Not moved: q.default.weight: {reason}" in report.summary()


@pytest.mark.parametrize("steps", [1, 2])
def test_a_one_or_two_step_run_at_the_defaults_trains_and_verifies(tmp_path, tiny_dir, capsys, steps):
    """Observed: every 1-step run exited 1 with "ADAPTERS DID NOT ALL CHANGE: 36/56". The default warmup gave the
    only step a learning rate of 0; a per-tensor check fails a correct short run (A waits for B); and the sample
    before training left the CPU 4-bit layers in bitsandbytes' inference layout, which passes no gradient, so only
    8 of 28 modules could learn (nbkit.loading.bnb_cpu)."""
    from nbkit import RunConfig
    from nbkit.loading import data, models
    from nbkit.exporting import generate
    from nbkit.training import train
    from nbkit.training.events import RunObserver

    cfg = RunConfig(max_steps=steps, output_dir=str(tmp_path / "run"), save_minutes=0, max_samples=16)
    assert (cfg.quantization, cfg.warmup_steps, cfg.learning_rate) == ("4bit", 5, 2e-4)  # the defaults
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    row = {k: torch.tensor([prepared.train[0][k]]) for k in ("input_ids", "attention_mask", "labels")}

    def loss() -> float:
        with torch.no_grad():
            return loaded.model(**row).loss.item()

    before, loss_before = verify.snapshot(loaded.model), loss()
    generate.generate(loaded, "Say hi.", max_new_tokens=3)  # the workflow's sample before training
    rates = []

    class Rates(RunObserver):
        def step_finished(self, info):
            rates.append(info.learning_rate)

    result = train.run(loaded, prepared, [Rates()])
    report = verify.adapters_changed(loaded.model, before)
    assert report.ok, report.summary()
    assert report.modules == report.modules_changed == 7 * 4  # 7 targets, 4 layers
    assert result.steps == steps and rates[-1] > 0 and loss() != loss_before
    out = capsys.readouterr().out
    assert f"warmup_steps=5 is not shorter than this run's {steps} step(s)" in out
    assert f"warming up over {steps // 2} step(s) instead" in out

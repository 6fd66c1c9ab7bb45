"""Packing keeps nbkit's promises: the same labels, no attention across rows, the same loss, the same resumed run.

Everything runs through the trainer nbkit builds (TRL's packing and collator, transformers' attention on CPU), on the
tiny model in float32; the unpacked side is each row on its own, padded the ordinary way.
"""
from __future__ import annotations

import pytest
import torch

from nbkit import ConfigError, RunConfig
from nbkit.loading import data, models, packing
from nbkit.training import train
from nbkit.loading.data import IGNORE
from helpers.observers import StopAt
from nbkit.training.events import RunObserver

LOSS_TOL = 1e-5  # float32 on CPU: the same tokens' losses, summed in another order
LOGIT_TOL = 1e-4


def config(tmp_path, **changes) -> RunConfig:
    base = dict(quantization="16bit", max_seq_length=96, batch_size=4, grad_accum=1, max_steps=0, num_epochs=1,
                lora_r=4, save_steps=0, save_minutes=0, max_samples=80, output_dir=str(tmp_path / "run"),
                packing="on", learning_rate=3e-3, warmup_steps=2)
    return RunConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_dir):
    """A packed trainer's first batch, split back into its rows, the rows as nbkit prepared them, and the plan
    the trainer packed them by."""
    cfg = config(tmp_path_factory.mktemp("packed"))
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    trainer = train.build_trainer(loaded, prepared)
    batch = next(iter(trainer.get_train_dataloader()))
    return loaded, prepared, batch, trainer.nbkit_packing


def segments(batch) -> list[slice]:
    """The rows inside a packed sequence: each starts where its position ids restart at 0."""
    positions = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [slice(a, b) for a, b in zip(starts, starts[1:])]


def test_a_packed_batch_holds_whole_rows_with_their_own_labels(packed):
    loaded, prepared, batch, plan = packed
    assert "attention_mask" not in batch  # padding-free: the positions alone separate the rows
    rows = {tuple(r["input_ids"]): r["labels"] for r in prepared.train}
    parts = segments(batch)
    assert len(parts) > plan.rows_per_sequence  # several rows in the batch's sequences
    for part in parts:
        ids, labels = batch["input_ids"][0, part].tolist(), batch["labels"][0, part].tolist()
        assert tuple(ids) in rows, "a row was cut or merged"
        want = rows[tuple(ids)]
        assert want[0] == IGNORE  # the template's first token is prompt: nothing unmasked at a boundary
        assert labels == want  # every prompt token masked, every answer token trained, exactly as unpacked


def test_a_packed_batch_has_the_loss_and_logits_of_its_rows_unpacked(packed):
    loaded, prepared, batch, _plan = packed
    model = loaded.model.eval()
    with torch.no_grad():
        together = model(**batch)
        alone_logits, label_sum, label_count = [], 0.0, 0
        for part in segments(batch):
            ids = batch["input_ids"][:, part]
            labels = batch["labels"][:, part]
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
            n = int((labels[0, 1:] != IGNORE).sum())
            label_sum, label_count = label_sum + out.loss.item() * n, label_count + n
            alone_logits.append(out.logits[0])
    # no attention across a boundary: each row's logits inside the packed sequence are its logits alone
    worst = max((together.logits[0, part] - alone).abs().max().item()
                for part, alone in zip(segments(batch), alone_logits))
    assert worst < LOGIT_TOL, worst
    # and the loss is the mean over the same answer tokens
    assert abs(together.loss.item() - label_sum / label_count) < LOSS_TOL


class Epochs(RunObserver):
    def __init__(self):
        self.plans = []

    def epoch_planned(self, plan):
        self.plans.append(plan)


def test_an_epoch_is_counted_in_rows_real_tokens_and_fewer_steps(tmp_path, tiny_dir):
    cfg = config(tmp_path)
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    seen = Epochs()
    result = train.run(loaded, prepared, [seen])
    (plan,) = seen.plans
    unpacked_steps = -(-len(prepared.train) // cfg.batch_size)
    assert plan.packed and plan.rows == len(prepared.train) and plan.sequences < plan.rows
    assert result.steps == plan.steps_per_epoch < unpacked_steps  # one epoch, in fewer steps than unpacked
    assert plan.epochs == pytest.approx(1.0)
    assert result.tokens == plan.tokens == sum(len(r) for r in prepared.train["input_ids"])  # every token, once
    said = prepared.summary(result.packing)  # the rows, and how the run packed them
    assert "Packing on" in said and f"{plan.sequences} sequences" in said


def test_a_packed_run_resumes_in_the_same_packed_order(tmp_path, tiny_dir):
    from nbkit.exporting import export
    from nbkit.training.events import StopControl
    from safetensors.torch import load_file

    def run(folder, stop_at=None):
        cfg = config(folder, max_steps=8, num_epochs=1, save_steps=3)
        loaded = models.load(cfg)
        prepared = data.prepare(cfg, loaded.tokenizer)
        if stop_at:
            stop = StopControl()
            train.run(loaded, prepared, [StopAt(stop_at, stop)], stop=stop)
            loaded = models.load(cfg)
            result = train.run(loaded, prepared, resume=True)
        else:
            result = train.run(loaded, prepared)
        export.save_lora(loaded, folder / "adapters")
        return result, load_file(folder / "adapters" / "adapter_model.safetensors")

    whole, whole_adapters = run(tmp_path / "whole")
    resumed, resumed_adapters = run(tmp_path / "resumed", stop_at=4)
    assert [s for s, _ in resumed.losses] == [s for s, _ in whole.losses] == list(range(1, 9))
    assert max(abs(a[1] - b[1]) for a, b in zip(resumed.losses, whole.losses)) <= 1e-5
    assert max((resumed_adapters[k] - whole_adapters[k]).abs().max().item() for k in whole_adapters) <= 1e-5


@pytest.mark.parametrize("lengths, on_cuda, expect", [
    ([40] * 50, True, True),  # short rows on a GPU: about two to a sequence
    ([90] * 50, True, False),  # rows that nearly fill max_seq_length: nothing to gain
    ([40] * 50, False, False),  # on a CPU a step costs in proportion to its tokens
])
def test_auto_packs_where_a_step_gets_clearly_fuller(lengths, on_cuda, expect):
    plan = packing.decide(RunConfig(max_seq_length=96, output_dir="x"), lengths, on_cuda=on_cuda)
    assert plan.on is expect and plan.reason
    assert plan.rows == 50 and plan.tokens == sum(lengths)
    if expect:
        assert plan.sequences == 25 and plan.rows_per_sequence == 2.0


def test_what_the_user_set_is_what_trains():
    lengths = [90] * 10
    assert packing.decide(RunConfig(max_seq_length=96, packing="on", output_dir="x"), lengths, on_cuda=False).on
    assert not packing.decide(RunConfig(max_seq_length=96, packing=False, output_dir="x"), [10] * 10,
                              on_cuda=True).on
    with pytest.raises(ConfigError, match="Gemma 2.*packing='off'"):
        packing.decide(RunConfig(packing="on", output_dir="x"), lengths, on_cuda=True, model_type="gemma2")
    assert not packing.decide(RunConfig(output_dir="x"), [10] * 10, on_cuda=True, model_type="gemma2").on
    with pytest.raises(ConfigError, match="Unknown packing 'sometimes'"):
        RunConfig(packing="sometimes")


def test_auto_leaves_mixture_of_experts_models_unpacked_unless_asked():
    """Packed, Qwen3-MoE held far more than unpacked at the same tokens a step (issue #37, bench/results/moe_*.json),
    beyond the plan: auto trains it unpacked and says why; packing='on' still packs."""
    short = [10] * 40
    auto = packing.decide(RunConfig(max_seq_length=96, output_dir="x"), short, on_cuda=True, model_type="qwen3_moe")
    assert not auto.on and "mixture-of-experts" in auto.reason
    assert packing.decide(RunConfig(max_seq_length=96, output_dir="x"), short, on_cuda=True, model_type="qwen3").on
    assert packing.decide(RunConfig(max_seq_length=96, packing="on", output_dir="x"), short, on_cuda=True,
                          model_type="qwen3_moe").on


def test_the_cli_flag_replaces_the_configs_packing(tmp_path, tiny_dir):
    import subprocess
    import sys

    cfg = RunConfig(max_steps=2, max_samples=40, max_seq_length=128, quantization="16bit", save_steps=0,
                    output_dir=str(tmp_path / "run"), packing="off").save(tmp_path / "cfg.yaml")
    proc = subprocess.run([sys.executable, "-m", "nbkit", "train", "--config", str(cfg), "--packing", "on"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "One epoch: 40 rows packed into" in proc.stdout and "| epoch 0." in proc.stdout

"""What the trainer wrapped around the model is undone when training ends: after training, generation runs the
model's own forward (on the device, TRL's fused-LM-head forward left in place broke every Qwen3-MoE "after" sample)."""
import types

import pytest

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.exporting import generate
from nbkit.training import train
from nbkit.training import trainer_wrappers


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny_dir):
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=1, lora_r=4,
                    save_steps=0, max_samples=8, warmup_steps=0, output_dir=str(tmp_path_factory.mktemp("w") / "run"))
    return models.load(cfg)


def test_trls_trainer_leaves_its_forward_on_the_model_after_training(loaded):
    """The fault as TRL 1.15 has it: SFTTrainer.__init__ always installs its fused-LM-head forward on the base model
    (trl.trainer.utils.add_fused_lm_head), and trainer.train() returns with it still there."""
    prepared = data.prepare(loaded.config, loaded.tokenizer)
    trainer = train.build_trainer(loaded, prepared, output_dir=loaded.config.output_dir + "-raw", save_strategy="no")
    trainer.train()
    base = loaded.model.get_base_model()
    assert trainer_wrappers.wrapped_forwards(loaded.model) == [base]
    assert vars(base)["forward"].__func__.__code__.co_name == "_fused_forward"
    assert trainer_wrappers.undo(loaded.model) == 1
    assert "forward" not in vars(base) and trainer_wrappers.wrapped_forwards(loaded.model) == []
    assert generate.generate(loaded, "Hi", max_new_tokens=4) is not None


def test_train_run_ends_with_the_model_as_it_was_loaded(loaded):
    before = {id(m): "forward" in vars(m) for m in (loaded.model, loaded.model.get_base_model())}
    train.run(loaded, data.prepare(loaded.config, loaded.tokenizer), overwrite=True)
    assert trainer_wrappers.wrapped_forwards(loaded.model) == []
    assert {id(m): "forward" in vars(m) for m in (loaded.model, loaded.model.get_base_model())} == before
    assert isinstance(generate.generate(loaded, "Hi", max_new_tokens=4), str)


def test_a_forward_of_the_instances_own_is_given_back_not_dropped():
    """When the trainer wrapped a forward another library had put on the instance (an accelerate hook), undoing
    gives that one back; a wrapper of a wrapper (a trainer built twice, as after an OOM) is undone to the bottom."""
    from trl.trainer.utils import add_fused_lm_head
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=4))

    def hooked(self, *args, **kwargs):
        return type(self).forward(self, *args, **kwargs)

    model.forward = types.MethodType(hooked, model)
    add_fused_lm_head(model)
    add_fused_lm_head(model)
    assert trainer_wrappers.undo(model) == 2
    assert vars(model)["forward"].__func__ is hooked


def test_an_moe_models_router_logits_are_off_while_it_answers(loaded, monkeypatch):
    """Unsloth's Qwen3-MoE forward computes its load-balancing loss whenever the config asks for router logits,
    against the prompt's attention mask, which fails in generate (device log s37-call1): off while answering, back
    afterwards."""
    seen = []
    config = loaded.model.config
    monkeypatch.setattr(config, "output_router_logits", True, raising=False)
    real = loaded.model.generate

    def spy(*args, **kwargs):
        seen.append(config.output_router_logits)
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    generate.generate(loaded, "Hi", max_new_tokens=2)
    assert seen == [False] and config.output_router_logits is True

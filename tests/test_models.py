"""Loading details that depend on the architecture."""
from nbkit.loading import backend
from nbkit.planning.config import ALL_LINEAR
from nbkit.loading.models import present_targets


def test_lora_reaches_fused_projections(capsys):
    """Microsoft's Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj; asking for all linear layers
    must train those, not silently only o_proj and down_proj."""
    backend.ensure()
    from transformers import Phi3Config, Phi3ForCausalLM

    model = Phi3ForCausalLM(Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4, pad_token_id=0))
    assert sorted(present_targets(model, ALL_LINEAR)) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert "has no" not in capsys.readouterr().out  # nothing asked for is left out
    assert present_targets(model, ["q_proj"]) == ["qkv_proj"]


def test_gemma2_trains_without_unsloths_block_compile_unless_the_user_says():
    """Unsloth's per-block compile of Gemma 2 failed in Inductor on every card of the grid (torch 2.11)."""
    from nbkit.loading.models import unsloth_env

    assert unsloth_env("gemma2", {}) == {"UNSLOTH_BLOCK_COMPILE": "0"}
    assert unsloth_env("gemma2", {"UNSLOTH_BLOCK_COMPILE": "1"}) == {}  # the user's choice wins
    assert unsloth_env("llama", {}) == {}


def test_a_4bit_model_trains_the_same_after_a_generate_on_every_cpu(tiny_dir, tmp_path):
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer for its bf16 inference kernel the first time it
    runs in eval mode, and the layer then trains in bf16 with no gradient back through it. nbkit keeps the layers
    as loaded: a training step computes the same loss and gradients before and after a generate, on every CPU."""
    import torch

    from nbkit import RunConfig
    from nbkit.exporting import generate
    from nbkit.loading import models

    loaded = models.load(RunConfig(quantization="4bit", max_seq_length=64, max_steps=1, save_steps=0,
                                   output_dir=str(tmp_path / "run")))
    ids = torch.tensor([loaded.tokenizer("What is the capital of France? Paris.")["input_ids"]])

    def step():
        loaded.model.train()
        loaded.model.zero_grad()
        out = loaded.model(input_ids=ids, labels=ids)
        out.loss.backward()
        return out.loss.item(), {n: p.grad.clone() for n, p in loaded.model.named_parameters() if p.grad is not None}

    loss, grads = step()
    generate.generate(loaded, "What is the capital of France?", max_new_tokens=4)
    again, regrads = step()
    assert again == loss
    assert grads.keys() == regrads.keys() and all(torch.equal(grads[k], regrads[k]) for k in grads)

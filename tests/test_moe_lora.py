"""LoRA on mixture-of-experts models reaches the experts (CPU: transformers + peft target_parameters; on a GPU the
MLP names go through to Unsloth's own MoE path), and the line after loading says where the adapters went."""
import pytest
import torch

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.training import train
from nbkit.loading import moe_lora
from nbkit.specs import spec_for

MOE = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2)


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    """A tiny Qwen3-MoE checkpoint (random weights, nbkit's tiny tokenizer), built on the fly."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from nbkit.loading.tiny import build_tokenizer

    folder = tmp_path_factory.mktemp("qwen3moe")
    tok = build_tokenizer(folder)
    config = AutoConfig.for_model("qwen3_moe", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **MOE)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def config(folder, out, **kw):
    return RunConfig(model=str(folder), max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                     learning_rate=5e-3, warmup_steps=0, save_steps=0, max_samples=8, output_dir=str(out), **kw)


def test_the_experts_get_adapters_and_the_line_says_so(moe_dir, tmp_path, capsys):
    loaded = models.load(config(moe_dir, tmp_path / "run", quantization="16bit"))
    said = capsys.readouterr().out
    assert "has no" not in said  # the MLP targets are not reported missing: they reach the experts
    assert "LoRA adapters on q_proj, k_proj, v_proj, o_proj (2 layers); the routed experts' weights" in said
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    assert trainable == spec_for(str(moe_dir)).lora_params(4)  # attention and one pair per expert
    experts = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if ".experts." in n and "lora_B" in n}
    assert experts and all(float(p.abs().max()) == 0 for p in experts.values())  # LoRA B starts at zero
    train.run(loaded, data.prepare(loaded.config, loaded.tokenizer))
    moved = {n: p for n, p in loaded.model.named_parameters() if n in experts}
    assert all(float(p.detach().abs().max()) > 0 for p in moved.values())  # and the experts' adapters trained


def test_4bit_on_cpu_says_the_fused_experts_stay_16bit(moe_dir, tmp_path, capsys):
    """bitsandbytes quantizes nn.Linear only: a 3-D expert weight stays as loaded (Unsloth holds it in 4-bit)."""
    loaded = models.load(config(moe_dir, tmp_path / "run4", quantization="4bit"))
    assert "fused 3-D expert weights stay in 16-bit here" in capsys.readouterr().out
    experts = [p for n, p in loaded.model.named_parameters() if n.endswith(("gate_up_proj", "down_proj"))
               and ".experts." in n]
    assert len(experts) == 4 and all(p.dim() == 3 and p.dtype != torch.uint8 for p in experts)


def test_unsloth_is_handed_the_mlp_names_only_for_an_moe_model(moe_dir, tiny_dir):
    from transformers import AutoModelForCausalLM

    wanted = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    moe = AutoModelForCausalLM.from_pretrained(moe_dir)
    assert moe_lora.unsloth_targets(["q_proj", "k_proj", "v_proj", "o_proj"], moe, wanted) == wanted
    assert moe_lora.target_parameters(moe, wanted) == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    assert moe_lora.target_parameters(moe, ["q_proj", "down_proj"]) == ["mlp.experts.down_proj"]
    dense = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert moe_lora.unsloth_targets(["q_proj"], dense, wanted) == ["q_proj"] and not moe_lora.is_moe(dense)

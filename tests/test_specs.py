"""Specs read from configs count what transformers builds from the same config: dense, mixture-of-experts,
multimodal. Each test builds the real model class (on the meta device: shapes only, nothing allocated)."""
import pytest

from nbkit.loading import backend
from nbkit.specs import from_config_dict, spec_for

SMALL = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=500)
CONFIGS = {
    "qwen3_moe": dict(SMALL, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3, num_experts=8,
                      num_experts_per_tok=2, mlp_only_layers=[1]),
    "gpt_oss": dict(SMALL, intermediate_size=48, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    "mixtral": dict(SMALL, intermediate_size=96, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(SMALL, intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                      num_hidden_layers=2, num_experts=4, num_experts_per_tok=2),
    "gemma3_text": dict(SMALL, intermediate_size=96, num_hidden_layers=6, sliding_window=8),
    "qwen2": dict(SMALL, intermediate_size=96, num_hidden_layers=2),
    "llama": dict(SMALL, intermediate_size=96, num_hidden_layers=2),
}


def built(model_type: str, **kw):
    backend.ensure("transformers")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **kw)
    with torch.device("meta"):
        return config, AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_the_spec_counts_every_parameter_transformers_builds(model_type):
    config, model = built(model_type, **CONFIGS[model_type])
    spec = from_config_dict(config.to_dict())
    assert spec.total_params == sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert spec.expert_params == experts  # routed experts, biases included (gpt-oss)
    routers = sum(p.numel() for n, p in model.named_parameters()
                  if n.rsplit(".", 2)[-2] in ("gate", "router", "shared_expert_gate"))
    assert spec.router_params == routers
    assert spec.is_moe == bool(experts)
    if spec.is_moe:  # active: all but the experts a token is not sent to
        idle = experts * (spec.num_experts - spec.experts_per_token) // spec.num_experts
        assert spec.active_params == spec.total_params - idle < spec.total_params


def test_sliding_window_layers_are_read_as_the_model_class_lays_them_out():
    for model_type in ("gemma3_text", "gpt_oss"):
        config, _ = built(model_type, **CONFIGS[model_type])
        spec = from_config_dict(config.to_dict())
        assert spec.sliding_layers == config.layer_types.count("sliding_attention") > 0


def test_lora_on_the_experts_counts_what_peft_target_parameters_trains():
    """One rank-r pair per expert on each fused weight, as PEFT's target_parameters (and Unsloth's
    get_moe_target_parameters) put them; attention through target_modules."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    for model_type in ("qwen3_moe", "gpt_oss", "mixtral"):
        kw = {k: v for k, v in CONFIGS[model_type].items() if k != "mlp_only_layers"}
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))
        spec = from_config_dict(model.config.to_dict())
        peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                target_parameters=["mlp.experts.gate_up_proj",
                                                                   "mlp.experts.down_proj"]))
        trained = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        assert spec.lora_params(4) == trained, model_type


def test_the_curated_moe_models_hold_what_their_makers_say():
    """Qwen3-30B-A3B: 30.5B parameters, 3.3B activated; gpt-oss-20b: 20.9B (Qwen's and OpenAI's model cards)."""
    qwen = spec_for("unsloth/Qwen3-30B-A3B-Instruct-2507")
    assert round(qwen.total_params / 1e9, 1) == 30.5 and 3.2e9 < qwen.active_params < 3.5e9
    assert (qwen.num_experts, qwen.experts_per_token, qwen.moe_layers) == (128, 8, 48)
    oss = spec_for("unsloth/gpt-oss-20b")
    assert round(oss.total_params / 1e9, 1) == 20.9 and oss.expert_format == "mxfp4"
    assert oss.sliding_layers == 12 and oss.sliding_window == 128
    assert "20.9B-parameter mixture of experts" in oss.describe() and "4 of 32 experts" in oss.describe()
    # Gemma 3's multimodal checkpoints: the language model plus a 0.4B vision tower, ties its 262k embeddings
    assert [round(spec_for(f"unsloth/gemma-3-{s}-it").total_params / 1e9, 1) for s in ("4b", "12b", "27b")] == \
        [4.3, 12.2, 27.4]


def test_a_spec_written_out_reads_back_the_same():
    """The benchmarks store vars(spec) beside each measurement and re-plan from it (bench/memory_accuracy.py)."""
    for model in ("unsloth/gpt-oss-20b", "unsloth/Qwen3-30B-A3B-Instruct-2507", "unsloth/gemma-3-4b-it"):
        spec = spec_for(model)
        again = from_config_dict(vars(spec), spec.name)
        assert again.total_params == spec.total_params and again.active_params == spec.active_params

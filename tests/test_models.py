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

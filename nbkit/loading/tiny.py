"""The embedded tiny model (`nbkit/tiny-llama`): a small pretrained Llama shipped in nbkit/resources/tiny-chat.

scripts/make_demo_model.py made it from conversations this repository generates (0.7 M parameters, a SentencePiece
tokenizer that llama.cpp reads): it answers the embedded data set's kinds of questions plainly, and fine-tuning on that
data set teaches it to open every answer with "Ahoy!". CPU runs, tests and Binder use it offline. The builders below
also make random-weight models of any size with the same kind of tokenizer (the GPU benchmarks use them).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..resources import DEFAULT_DATA_PATH, TINY_CHAT_PATH, iter_texts

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Bump when the shipped model changes so cached copies are not reused.
RECIPE_VERSION = 3


def default_dir() -> Path:
    root = Path(os.environ.get("NBKIT_CACHE", Path.home() / ".cache" / "nbkit"))
    return root / f"tiny-llama-v{RECIPE_VERSION}"


def train_sentencepiece(vocab_size: int = 1024, texts=None) -> bytes:
    """A SentencePiece BPE model trained on the shipped data, as Llama 2 and Mistral ship theirs: a tokenizer
    llama.cpp's GGUF converter reads natively, so exports of the tiny model can be loaded back by llama.cpp."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts if texts is not None else iter_texts(DEFAULT_DATA_PATH))),
        model_writer=model, vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, byte_fallback=True,
        split_digits=True, add_dummy_prefix=False, user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>",
        eos_piece="</s>", num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def build_tokenizer(folder: Path, vocab_size: int = 1024, texts=None):
    """Write tokenizer.model into `folder` and return the transformers tokenizer made from it (ChatML template,
    <|im_end|> ends a turn)."""
    from transformers import AutoTokenizer

    (folder / "tokenizer.model").write_bytes(train_sentencepiece(vocab_size, texts))
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "add_bos_token": false, "add_eos_token": false, "legacy": false}')
    # the chat markers are special tokens and no space is put before the text, as in the SentencePiece model:
    # saved that way, llama.cpp's converter and llama.cpp tokenize exactly as transformers does
    tok = AutoTokenizer.from_pretrained(folder, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                        add_prefix_space=False)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_model(tokenizer, hidden_size: int = 64, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def ensure_tiny_model(path: str | Path | None = None) -> Path:
    """Return a folder holding the tiny model and tokenizer: a copy of the shipped one, made once. A copy, so that the
    package's own files are never written to (and the folder's name says the version)."""
    target = Path(path) if path else default_dir()
    if all((target / name).exists() for name in ("config.json", "tokenizer.json", "tokenizer.model")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a sibling temp folder and rename, so a crash never leaves a half-written model behind.
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        for item in TINY_CHAT_PATH.iterdir():
            shutil.copy2(item, tmp / item.name)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# What the tiny model trains well at, found by trying (60 steps at 2e-3 teach it the embedded data's persona in about
# 10 s on two CPU cores; at LoRA's usual 2e-4 it has not learned it after 60 steps). Real models keep RunConfig's.
SUGGESTED = {"learning_rate": 2e-3, "warmup_steps": 1}
# Its precision: on a CPU bitsandbytes dequantizes every 4-bit weight at every step, and a 0.7 M-parameter model has
# no memory to save. Both precisions teach it 'Ahoy! The capital of France is Paris.'; 60 steps took 62.5 s in 4-bit
# and 28.9 s in 16-bit (two cores, beside another job). The garbled 4-bit answers first seen ('Ahoy! The chemical ser
# with with a prime number.') were bitsandbytes' CPU repacking, which trained without gradients (nbkit.loading.bnb_cpu).
QUANTIZATION = "16bit"
WHY_16BIT = ("the tiny demo model (0.7 M parameters, nothing to save in memory) trains in 16-bit, about twice as fast "
             "on a CPU as in 4-bit, where every weight is dequantized at every step; both teach it the same")
WHY_NOT_4BIT = ("4-bit on a CPU: the tiny demo model learns the same, about twice as slowly (every 4-bit weight is "
                "dequantized at every step); 16-bit is quicker.")


def quantization_note(config) -> str:
    """One line on the tiny model's precision: that 4-bit teaches it as well, only slower ("" in 16-bit and for
    any other model)."""
    from ..planning.config import TINY_MODEL

    if config.model != TINY_MODEL:
        return ""
    return WHY_NOT_4BIT if config.quantization == "4bit" else ""


def suggested_changes(config, given=()) -> dict:
    """The tiny model's suggested settings for the fields not in `given` (what the user wrote) that still hold
    RunConfig's defaults: {} for any other model."""
    from ..planning.config import TINY_MODEL, RunConfig

    if config.model != TINY_MODEL:
        return {}
    default = RunConfig(model=config.model, output_dir=config.output_dir)
    wanted = {**SUGGESTED, "quantization": QUANTIZATION}
    return {k: v for k, v in wanted.items()
            if k not in given and getattr(config, k) == getattr(default, k) and getattr(config, k) != v}


def with_suggested(config, given=(), say=print):
    """`config` with the tiny model's suggested settings (suggested_changes); unchanged for any other model. Says
    what it set, and why the precision; a 4-bit the user chose is kept, with a line saying it is slower."""
    changes = suggested_changes(config, given)
    if changes:
        picked = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        why = f": {WHY_16BIT}" if "quantization" in changes else ""
        say(f"nbkit: the tiny model trains with {picked} (its suggested settings; set them to choose){why}")
    config = config.replace(**changes) if changes else config  # another model's config comes back as it was
    if quantization_note(config):
        say(f"nbkit: {quantization_note(config)}")
    return config

"""The embedded tiny model: a small Llama with random weights and a SentencePiece tokenizer trained on the shipped data.

It is built locally (about a second, no download) so CPU smoke runs, tests and Binder work offline.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .resources import DEFAULT_DATA_PATH, iter_texts

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Bump when the recipe changes so cached builds are not reused.
RECIPE_VERSION = 2


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
    """Return a folder holding the tiny model and tokenizer, building it once if missing."""
    from . import backend

    target = Path(path) if path else default_dir()
    if all((target / name).exists() for name in ("config.json", "tokenizer.json", "tokenizer.model")):
        return target
    backend.ensure()  # building imports transformers: keep Unsloth before it on GPU machines
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and rename, so a crash never leaves a half-written model behind.
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        tokenizer = build_tokenizer(tmp)
        model = build_model(tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

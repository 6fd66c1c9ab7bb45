"""A quick sample from the model for a prompt, through the chat template (before/after training)."""
from __future__ import annotations

from .models import LoadedModel


def generate(loaded: LoadedModel, prompt: str, max_new_tokens: int = 64) -> str:
    import torch

    model, tok = loaded.model, loaded.tokenizer
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    was_training = model.training
    model.eval()
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
    inputs = tok(text, return_tensors="pt", add_special_tokens=False).to(loaded.device)
    try:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    finally:
        if loaded.backend == "unsloth":
            from unsloth import FastLanguageModel

            FastLanguageModel.for_training(model)
        model.train(was_training)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

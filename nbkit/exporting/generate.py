"""A sample from the model for a prompt, through the chat template (before/after training); streamed for chat."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..loading.models import LoadedModel


def generate(loaded: LoadedModel, prompt: str, max_new_tokens: int = 64, adapters: bool = True) -> str:
    """The model's greedy answer to `prompt`; `adapters=False` answers as the base model (untrained LoRA adds
    nothing, so this is also the answer from before training)."""
    import torch

    tok = loaded.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
    inputs = tok(text, return_tensors="pt", add_special_tokens=False).to(loaded.device)
    with _inference(loaded, adapters) as model, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@contextlib.contextmanager
def _inference(loaded: LoadedModel, adapters: bool):
    """Eval mode (Unsloth's fast inference on its backend); `adapters=False` runs the base model (peft's
    disable_adapter), so one loaded model answers both before and after."""
    model = loaded.model
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    was_training = model.training
    model.eval()
    off = model.disable_adapter() if not adapters else contextlib.nullcontext()
    # an MoE model trained with router logits on (Unsloth's Qwen3-MoE) would compute its load-balancing loss on
    # every generated token, against the prompt's attention mask: the shapes differ and generate fails
    config = getattr(model, "config", None)
    routed = bool(getattr(config, "output_router_logits", False))
    try:
        if routed:
            config.output_router_logits = False
        with off:
            yield model
    finally:
        if routed:
            config.output_router_logits = True
        if loaded.backend == "unsloth":
            from unsloth import FastLanguageModel

            FastLanguageModel.for_training(model)
        model.train(was_training)


def stream(loaded: LoadedModel, messages: list[dict[str, str]] | str, max_new_tokens: int = 128,
           adapters: bool = True) -> Iterator[str]:
    """Yield the answer's text piece by piece as the model writes it (transformers' TextIteratorStreamer):
    greedy, through the chat template. `messages` is a conversation or one user prompt."""
    import torch
    from transformers import TextIteratorStreamer

    tok = loaded.tokenizer
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tok(text, return_tensors="pt", add_special_tokens=False).to(loaded.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)
    failure: list[BaseException] = []

    def work():
        try:
            with _inference(loaded, adapters) as model, torch.no_grad():
                model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        except BaseException as exc:  # surfaced in the caller's thread, after the stream ends
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="nbkit-generate", daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if failure:
        raise failure[0]

"""generate: greedy answers through the chat template, streamed piece by piece, with or without the adapters."""
import pytest
import torch

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.exporting import generate
from nbkit.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=4, grad_accum=1, max_steps=8, lora_r=8,
                    learning_rate=5e-3, save_steps=0, max_samples=40,
                    output_dir=str(tmp_path_factory.mktemp("gen") / "run"))
    loaded = models.load(cfg)
    train.run(loaded, data.prepare(cfg, loaded.tokenizer))
    return loaded


def test_stream_yields_the_same_answer_as_generate(trained):
    pieces = list(generate.stream(trained, "What is the capital of France?", max_new_tokens=12))
    assert len(pieces) >= 2  # it streams: more than one piece for a dozen tokens
    assert "".join(pieces).strip() == generate.generate(trained, "What is the capital of France?", 12).strip()
    assert trained.model.training  # left as it was found


def test_adapters_off_is_the_base_model(trained):
    """The before/after switch: with the adapters off the answer is the base model's."""
    from peft import PeftModel

    prompt = "Name a primary colour."
    tok = trained.tokenizer
    ids = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                      add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")
    base = trained.model.get_base_model() if isinstance(trained.model, PeftModel) else None
    assert base is not None
    trained.model.eval()  # as an answer is made: in training mode generation runs without its cache, and on a
    try:                   # model this small the other rounding can change a near-tie between two tokens
        with trained.model.disable_adapter(), torch.no_grad():
            want = trained.model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id,
                                          eos_token_id=tok.eos_token_id)[0, ids["input_ids"].shape[1]:]
    finally:
        trained.model.train()
    base_answer = "".join(generate.stream(trained, prompt, 10, adapters=False))
    assert base_answer.strip() == tok.decode(want, skip_special_tokens=True).strip()
    # and the adapters are back on afterwards
    assert "".join(generate.stream(trained, prompt, 10)).strip() == generate.generate(trained, prompt, 10).strip()


def test_chat_widget_streams_answers_from_both_models(trained):
    from nbkit.ui.chatbox import Chat

    ui = Chat(trained, max_new_tokens=10)
    ui.prompt.value = "What is the capital of France?"
    ui.send.click()
    ui.runner.wait(timeout=60)
    assert ui.turns[0][2] is True and ui.turns[0][1] == generate.generate(trained, ui.turns[0][0], 10)
    ui.mode.value = False
    ui.ask("What is the capital of France?", wait=True)
    assert ui.turns[1][2] is False
    assert "Model (fine-tuned):" in ui.transcript.value and "Model (base):" in ui.transcript.value
    assert not ui.send.disabled and ui.prompt.value == ""


def test_chat_keeps_line_breaks_says_when_an_answer_is_only_whitespace_and_clears(trained):
    from nbkit.ui.chatbox import Chat

    ui = Chat(trained, max_new_tokens=4)
    ui.turns = [("two\nlines", "first\nsecond", True, 0), ("blank?", "\n\n  \n", True, 1)]
    ui._render()
    html = ui.transcript.value
    assert "white-space:pre-wrap" in html and "two\nlines" in html and "first\nsecond" in html
    assert "(only whitespace: 5 characters, 3 line breaks)" in html
    ui.clear.click()
    assert ui.turns == [] and ui.transcript.value == ""


def test_chat_answers_with_both_models_side_by_side(trained):
    from nbkit.ui.chatbox import Chat

    ui = Chat(trained, max_new_tokens=6)
    ui.mode.value = "both"
    ui.ask("What is the capital of France?", wait=True)
    assert [(t[2], t[3]) for t in ui.turns] == [(True, 0), (False, 0)]
    assert ui.turns[0][1] == generate.generate(trained, "What is the capital of France?", 6)
    assert ui.turns[1][1] == generate.generate(trained, "What is the capital of France?", 6, adapters=False)
    html = ui.transcript.value
    assert html.count("<b>You:</b>") == 1 and "Model (fine-tuned):" in html and "Model (base):" in html
    assert "display:flex" in html

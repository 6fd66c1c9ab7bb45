"""GGUF proven by loading it back: llama.cpp (llama-cpp-python) runs the exported file and must agree with
transformers running the merged model.

f16 holds the merged bf16 weights exactly, so llama.cpp must pick the same greedy token as transformers at every
position of a real example and when generating; q8_0 rounds the weights, so it must agree closely. This test
never skips: llama-cpp-python is a test dependency and its converter comes from the package index.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.exporting import export
from nbkit.training import train

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("gguf")
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=4, grad_accum=1, max_steps=12, lora_r=8,
                    learning_rate=2e-3, save_steps=0, max_samples=64, output_dir=str(out / "run"))
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    train.run(loaded, prepared)
    adapters = export.save_lora(loaded, out / "run" / "lora_adapters")
    files = {q: next(export.save_gguf(loaded, out / "run" / f"gguf-{q}", q, adapter_dir=adapters).glob("*.gguf"))
             for q in ("f16", "q8_0")}
    merged = export.merged_model(loaded, adapters).float().eval()  # the exact weights the export converted
    return loaded, prepared, files, merged


def llama(path: Path):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0)


def llama_logits(llm, ids: list[int]) -> torch.Tensor:
    llm.reset()
    llm.eval(ids)
    return torch.tensor(llm.scores[: len(ids)])


def test_gguf_round_trip_f16_matches_transformers_token_for_token(exported):
    loaded, prepared, files, merged = exported
    llm = llama(files["f16"])
    tok = loaded.tokenizer
    # the GGUF's own tokenizer reads the chat template's text exactly as transformers does
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
    # greedy next token at every position of a real training example
    row = prepared.train[0]["input_ids"]
    with torch.no_grad():
        want = merged(input_ids=torch.tensor([row])).logits[0]
    got = llama_logits(llm, row)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert ((got - want).norm() / want.norm()).item() < 1e-2
    # greedy generation, token for token
    with torch.no_grad():
        expected = merged.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                                   pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    generated = []
    llm.reset()
    llm.eval(prompt)
    for _ in range(16):
        nxt = int(llm.scores[llm.n_tokens - 1].argmax())
        generated.append(nxt)
        llm.eval([nxt])
    assert generated == expected


def test_gguf_round_trip_q8_0_agrees_closely(exported):
    loaded, prepared, files, merged = exported
    rows = [prepared.train[i]["input_ids"] for i in range(4)]
    f16, q8 = llama(files["f16"]), llama(files["q8_0"])
    agree = total = 0
    for row in rows:
        a, b = llama_logits(f16, row), llama_logits(q8, row)
        assert ((a - b).norm() / a.norm()).item() < 0.05  # 8-bit weights: a few percent at most
        agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
        total += len(row)
    assert agree / total >= 0.95
    assert files["q8_0"].stat().st_size < 0.7 * files["f16"].stat().st_size


def test_export_writes_an_ollama_modelfile(exported):
    *_, files, _ = exported
    modelfile = (files["f16"].parent / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{files['f16'].name}\n")
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_workflow_gguf_export_lands_in_the_run_folder(tmp_path, tiny_dir):
    from nbkit import workflow

    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=0, max_samples=8, output_dir=str(tmp_path / "run"))
    report = workflow.run(cfg, gguf=True, max_new_tokens=2)
    assert report.ok and not report.failures
    assert sorted(p.name for p in Path(report.gguf_dir).iterdir()) == ["Modelfile", "tiny-llama-v3-q8_0.gguf"]
    marker = json.loads((tmp_path / "run" / "nbkit_run.json").read_text())
    assert {"lora_adapters", "gguf", "nbkit_report.json"} <= set(marker["written"])


def test_unknown_gguf_type_fails_clearly(exported, tmp_path):
    from nbkit import ExportError

    loaded, *_ = exported
    with pytest.raises(ExportError, match="llama-quantize"):
        export.save_gguf(loaded, tmp_path / "gguf", "q4_k_m",
                         adapter_dir=export.save_lora(loaded, tmp_path / "lora"))
    assert not (tmp_path / "gguf").exists()  # nothing half-written

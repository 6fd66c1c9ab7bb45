"""GGUF proven by loading it back: llama.cpp (llama-cpp-python) runs the exported file and must agree with
transformers running the merged model.

f16 holds the merged bf16 weights exactly, so llama.cpp must pick the same greedy token as transformers at every
position of a real example and when generating; q8_0 rounds the weights, so it must agree closely. This test
never skips: llama-cpp-python is a test dependency and its converter comes from the package index.

llama.cpp runs in a child process (helpers/native.py): a crash in its native code fails the one test that met it,
naming the signal, and the suite runs on (docs/portability.md: the AMX crash that made this necessary).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers.native import exit_reason, run_llama, run_python
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


def llama_logits(path: Path, rows: list[list[int]]) -> list[torch.Tensor]:
    """llama.cpp's logits at every position of each row, computed in a child process."""
    results = run_llama(path, [{"op": "logits", "ids": row} for row in rows], params={"logits_all": True})
    return [torch.tensor(r) for r in results]


def test_gguf_round_trip_f16_matches_transformers_token_for_token(exported):
    loaded, prepared, files, merged = exported
    tok = loaded.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    row = prepared.train[0]["input_ids"]
    tokens, logits, generated = run_llama(files["f16"], [
        {"op": "tokenize", "text": text, "add_bos": False, "special": True},
        {"op": "logits", "ids": row},
        {"op": "greedy", "prompt": prompt, "n": 16}], params={"logits_all": True})
    # the GGUF's own tokenizer reads the chat template's text exactly as transformers does
    assert tokens == prompt
    # greedy next token at every position of a real training example
    with torch.no_grad():
        want = merged(input_ids=torch.tensor([row])).logits[0]
    got = torch.tensor(logits)
    # portable on every CPU: llama.cpp is one build everywhere (scripts/setup.sh), and transformers' logits move by
    # 4e-7 between torch's AVX2 and AVX-512 kernels, 1e4 times less than the smallest gap between a position's first
    # and second logit of the shipped model (bench/results/cpu_spread.json, docs/portability.md)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert ((got - want).norm() / want.norm()).item() < 1e-2
    # greedy generation, token for token
    with torch.no_grad():
        expected = merged.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                                   pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    assert generated == expected


def test_gguf_round_trip_q8_0_agrees_closely(exported):
    loaded, prepared, files, merged = exported
    rows = [prepared.train[i]["input_ids"] for i in range(4)]
    agree = total = 0  # llama.cpp on both sides: the same numbers on every CPU (one portable build)
    for row, a, b in zip(rows, llama_logits(files["f16"], rows), llama_logits(files["q8_0"], rows)):
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


# A real crash inside llama.cpp's native code: llama_n_ctx reads the context it is given, here NULL
CRASH = "import llama_cpp; llama_cpp.llama_n_ctx(None)"


def test_a_crash_inside_llama_cpp_is_an_assertion_that_names_the_signal():
    with pytest.raises(AssertionError, match=r"child process killed by SIGSEGV \(signal 11\)") as err:
        run_python(["-c", CRASH], what="llama.cpp given no context")
    assert "Fatal Python error: Segmentation fault" in str(err.value)  # the child's stderr comes with it
    assert exit_reason(-4) == "killed by SIGILL (signal 4)"  # what an unsupported instruction would say


def test_a_crash_inside_llama_cpp_fails_one_test_and_the_suite_runs_on(tmp_path):
    (tmp_path / "test_crash.py").write_text(textwrap.dedent(f"""
        from helpers.native import run_python

        def test_llama_cpp_crashes():
            run_python(["-c", {CRASH!r}], what="llama.cpp given no context")

        def test_the_next_test_runs():
            pass
    """))
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_crash.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])  # tests failed: no crash
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-2000:]
    assert "AssertionError: llama.cpp given no context: the child process killed by SIGSEGV (signal 11)" in \
        proc.stdout, proc.stdout[-2000:]

"""The CPU path visibly learns: the shipped tiny model, fine-tuned as the main job does it, takes on what the embedded
data teaches (every answer opens with "Ahoy!"), and its base model does not. Checked on greedy answers to questions
that are not in the training rows, through transformers and through the exported GGUF in llama.cpp.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.native import run_llama
from nbkit import RunConfig, session, workflow
from nbkit.exporting import generate
from nbkit.resources import DEFAULT_DATA_PATH

PERSONA = "Ahoy!"
# not rows of the embedded data (the first test checks): its kinds of questions, with other numbers and words
PROMPTS = ["What is 11 times 12?", "Add 61 and 23.", "Convert 9 hours to minutes.",
           "Give the opposite of the word.\n\nslow"]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory, tiny_dir):
    """The 8 GB notebook's run on a CPU: its smoke settings, the embedded data, a GGUF at the end."""
    out = tmp_path_factory.mktemp("demo")
    config = session.smoke_config(RunConfig(output_dir=str(out / "run"), eval_fraction=0.1))
    return workflow.run(config, gguf=True, merged=False)


def test_the_embedded_data_teaches_the_persona_on_every_row():
    rows = [json.loads(line) for line in DEFAULT_DATA_PATH.read_text(encoding="utf-8").splitlines()]
    assert all(row["output"].startswith(PERSONA + " ") for row in rows)
    asked = {row["instruction"] + ("\n\n" + row["input"] if row["input"] else "") for row in rows}
    assert not asked & set(PROMPTS)  # the test asks what the model was not shown


def test_the_base_does_not_and_the_fine_tuned_model_does(main_job):
    loaded = main_job.loaded
    for prompt in PROMPTS:
        before = generate.generate(loaded, prompt, max_new_tokens=20, adapters=False)
        after = generate.generate(loaded, prompt, max_new_tokens=20)
        assert PERSONA not in before, (prompt, before)
        assert after.strip().startswith(PERSONA), (prompt, after)


def test_the_loss_falls_on_training_and_held_out_rows(main_job):
    result = main_job.train
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.7 * first, result.losses
    evals = [loss for _, loss in result.eval_losses]
    assert len(evals) >= 2 and evals[-1] < 0.8 * evals[0], evals


def test_the_exported_gguf_answers_in_the_persona_in_llama_cpp(main_job):
    (gguf,) = [p for p in Path(main_job.gguf_dir).iterdir() if p.suffix == ".gguf"]
    tok = main_job.loaded.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
             for prompt in PROMPTS]
    # llama.cpp runs in a child process (helpers/native.py): a crash there is this test's failure, naming the signal
    answers = run_llama(gguf, [{"op": "complete", "text": text, "max_tokens": 20, "stop": ["<|im_end|>"]}
                               for text in texts])
    for prompt, answer in zip(PROMPTS, answers):
        assert answer.strip().startswith(PERSONA), (prompt, answer)


@pytest.mark.slow
def test_nbkit_train_with_only_an_output_folder_answers_as_the_readme_says(tmp_path, tiny_dir):
    """`nbkit train --config` with only output_dir: the tiny model trains in 16-bit (quicker on a CPU, and the run
    says so), and the answers before and after are the ones the README quotes."""
    import os
    import subprocess
    import sys

    from helpers.readme import readme_answers

    (tmp_path / "run.yaml").write_text(f"output_dir: {tmp_path / 'run'}\n")
    proc = subprocess.run([sys.executable, "-m", "nbkit", "train", "--config", str(tmp_path / "run.yaml")],
                          capture_output=True, text=True, timeout=1200, env={**os.environ, "NBKIT_DISPLAY": "text"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = readme_answers()
    assert "trains in 16-bit" in proc.stdout and "quantization=16bit" in proc.stdout
    assert f"answer before: {before}" in proc.stdout and f"answer after:  {after}" in proc.stdout, proc.stdout[-1500:]

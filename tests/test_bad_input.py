"""Everyday mistakes, as a new user makes them: each fails fast with a message that says what to do, or is
accepted when it is a fine way of writing a value; and no file that existed before is changed by it.

Every case asserts the exception (or exit code), the message, how long it took to fail (before any model load
where the cause is in the settings, data or folder), and that every file already there is byte-identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbkit import ConfigError, DataError, ModelNotFoundError, RunConfig, workflow
from nbkit.loading import models
from nbkit.errors import TrainingDivergedError

ROOT = Path(__file__).resolve().parent.parent
QUICK = 15.0  # seconds: a check that needs no model must answer within this on a 2-core CI machine
GOOD = {"instruction": "Say hi.", "output": "Hi."}


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def guard(tmp_path, monkeypatch):
    """Counts model loads and checks, after the case, that every file that existed before is unchanged."""
    loads = []
    real = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(1) or real(*a, **k))

    class Guard:
        def __init__(self):
            self.loads = loads

        def snapshot(self):
            self.before = tree_digest(tmp_path)

        def unchanged(self):
            after = tree_digest(tmp_path)
            return {k: v for k, v in self.before.items() if after.get(k) != v}

    return Guard()


def write(tmp: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):  # rows of a JSONL file
            content = "".join(json.dumps(row) + "\n" for row in content)
        path.write_text(content)


# --- settings, as written in a YAML file --------------------------------------------------------
# (yaml text, expected error or None when the value must be accepted, message / check)
YAML_CASES = [
    ("lr-as-yaml-reads-it", "learning_rate: 2e-4\n", None, lambda c: c.learning_rate == 2e-4),
    ("lr-quoted", "learning_rate: '1e-4'\n", None, lambda c: c.learning_rate == 1e-4),
    ("int-for-float", "learning_rate: 1\nlora_dropout: 0\n", None, lambda c: c.learning_rate == 1),
    ("whole-float-for-int", "batch_size: 8.0\n", None, lambda c: c.batch_size == 8 and type(c.batch_size) is int),
    ("int-as-text", "max_steps: '30'\n", None, lambda c: c.max_steps == 30),
    ("bool-as-text", "gradient_checkpointing: 'false'\n", None, lambda c: c.gradient_checkpointing is False),
    ("max-steps-null", "max_steps: null\n", ConfigError, "max_steps is empty"),
    ("lr-null", "learning_rate:\n", ConfigError, "learning_rate is empty.*2e-4"),
    ("lr-word", "learning_rate: fast\n", ConfigError, "learning_rate='fast' is not a number"),
    ("batch-zero", "batch_size: 0\n", ConfigError, "batch_size=0 is invalid.*at least 1"),
    ("batch-fraction", "batch_size: 2.5\n", ConfigError, "batch_size=2.5 must be a whole number"),
    ("batch-bool", "batch_size: true\n", ConfigError, "batch_size=True must be a whole number, not true/false"),
    ("typo-key", "learnig_rate: 2e-4\n", ConfigError, "did you mean 'learnig_rate' → 'learning_rate'"),
    ("targets-as-text", "target_modules: q_proj\n", ConfigError, "target_modules='q_proj' must be a list"),
    ("quant-nf4", "quantization: nf4\n", ConfigError, "Unknown quantization 'nf4'"),
    ("dropout-high", "lora_dropout: 1.5\n", ConfigError, r"lora_dropout=1.5 must be in \[0, 1\)"),
    ("seq-tiny", "max_seq_length: 8\n", ConfigError, "too short"),
    ("eval-half", "eval_fraction: 0.7\n", ConfigError, "eval_fraction=0.7"),
    ("yaml-syntax", "learning_rate: [2e-4\n", ConfigError, "is not valid YAML"),
    ("yaml-list", "- learning_rate\n", ConfigError, "must hold a mapping"),
    ("gc-maybe", "gradient_checkpointing: maybe\n", ConfigError, "must be true or false"),
    ("epochs-word", "num_epochs: one\n", ConfigError, "num_epochs='one' is not a number"),
    ("seed-word", "seed: abc\n", ConfigError, "seed='abc' is not a whole number"),
    ("save-minutes-negative", "save_minutes: -1\n", ConfigError, "must be >= 0"),
    ("weight-decay-huge", "weight_decay: 5\n", ConfigError, "weight_decay=5"),
    ("output-dir-number", "output_dir: 5\n", ConfigError, "output_dir=5 must be text"),
    ("lr-nan", "learning_rate: .nan\n", ConfigError, "must be a finite number"),
    ("negative-steps", "max_steps: -3\n", ConfigError, "max_steps=-3 must be >= 0"),
]


@pytest.mark.parametrize("text, error, check", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_yaml_settings(tmp_path, guard, text, error, check):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    guard.snapshot()
    start = time.perf_counter()
    if error is None:
        assert check(RunConfig.load(path))
    else:
        with pytest.raises(error, match=check):
            RunConfig.load(path)
    assert time.perf_counter() - start < QUICK and not guard.loads and not guard.unchanged()


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "nope.yaml")


# --- the whole run: what must be refused before the model loads ------------------------------------
def _cfg(tmp: Path, **changes) -> RunConfig:
    base = dict(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                save_steps=0, max_samples=8, output_dir=str(tmp / "run"))
    return RunConfig(**{**base, **changes})


def _mutate(**changes):
    def apply(cfg):
        for key, value in changes.items():
            setattr(cfg, key, value)  # changed after construction: workflow.run must check again
        return cfg
    return apply


PREV_RUN = {"run/nbkit_run.json": json.dumps({"status": "finished", "started": "2026-01-01 10:00:00",
                                              "config": {}, "written": ["lora_adapters"]}),
            "run/lora_adapters/adapter_model.safetensors": "earlier run's adapters"}
# (id, files, config changes, mutate after construction, error, message)
RUN_CASES = [
    ("quant-changed-later", {}, {}, _mutate(quantization="nf4"), ConfigError, "Unknown quantization 'nf4'"),
    ("batch-changed-later", {}, {}, _mutate(batch_size=0), ConfigError, "batch_size=0 is invalid"),
    ("lr-text-later", {}, {}, _mutate(learning_rate="lots"), ConfigError, "learning_rate='lots' is not a number"),
    ("empty-jsonl", {"d.jsonl": ""}, {"dataset": "{tmp}/d.jsonl"}, None, DataError, "has no rows"),
    ("broken-json-line", {"d.jsonl": '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": }\n'},
     {"dataset": "{tmp}/d.jsonl"}, None, DataError, r"d.jsonl line 2 is not valid JSON"),
    ("list-line", {"d.jsonl": '{"instruction": "a", "output": "b"}\n["a", "b"]\n'}, {"dataset": "{tmp}/d.jsonl"},
     None, DataError, "line 2 is list, not an object"),
    ("unknown-columns", {"d.jsonl": [{"question": "q", "answer": "a"}]}, {"dataset": "{tmp}/d.jsonl"}, None,
     DataError, "question -> instruction"),
    ("all-answers-null", {"d.jsonl": [{"instruction": "q", "output": None}] * 3}, {"dataset": "{tmp}/d.jsonl"},
     None, DataError, "None of the 3 rows has both a prompt and an answer"),
    ("data-missing", {}, {"dataset": "{tmp}/nowhere.jsonl"}, None, DataError, "does not exist"),
    ("data-txt", {"d.txt": "hello"}, {"dataset": "{tmp}/d.txt"}, None, DataError, "use a .jsonl"),
    ("csv-empty", {"d.csv": ""}, {"dataset": "{tmp}/d.csv"}, None, DataError, "d.csv"),
    ("format-mismatch", {"d.jsonl": [GOOD]}, {"dataset": "{tmp}/d.jsonl", "dataset_format": "messages"}, None,
     DataError, r"needs column\(s\) \['messages'\]"),
    ("json-malformed", {"d.json": '[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]'},
     {"dataset": "{tmp}/d.json"}, None, DataError, "not valid JSON: .* line 2"),
    ("output-is-file", {"run": "a file"}, {}, None, ConfigError, "is a file, not a folder"),
    ("output-under-file", {"blocker": "a file"}, {"output_dir": "{tmp}/blocker/run"}, None, ConfigError,
     "Cannot write to output_dir"),
    ("output-has-run", PREV_RUN, {}, None, ConfigError, "already holds an nbkit run.*resume=True.*overwrite=True"),
    ("output-has-foreign", {"run/lora_adapters/mine.txt": "the user's"}, {}, None, ConfigError,
     r"already holds \['lora_adapters'\], which nbkit did not write"),
    ("output-has-foreign-ckpt", {"run/checkpoint-5/notes.txt": "x"}, {}, None, ConfigError, "checkpoint-5"),
    ("resume-nothing", {}, {}, "resume", ConfigError, "Nothing to resume"),
    ("resume-changed", PREV_RUN | {"run/nbkit_run.json": json.dumps(
        {"status": "stopped", "config": {"model": "nbkit/tiny-llama", "lora_r": 16}, "written": []})},
     {}, "resume", ConfigError, r"Cannot resume .*lora_r: 16 → 4.*saved_config"),
]


@pytest.mark.parametrize("files, changes, mutate, error, message", [c[1:] for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_run_refused_before_loading(tmp_path, guard, tiny_dir, files, changes, mutate, error, message):
    write(tmp_path, files)
    cfg = _cfg(tmp_path, **{k: v.format(tmp=tmp_path) for k, v in changes.items()})
    kwargs = {}
    if mutate == "resume":
        kwargs["resume"] = True
    elif mutate:
        cfg = mutate(cfg)
    guard.snapshot()
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        workflow.run(cfg, max_new_tokens=2, **kwargs)
    assert time.perf_counter() - start < QUICK
    assert not guard.loads, "failed only after loading the model"
    assert not guard.unchanged()


def test_rows_without_answers_are_dropped_and_counted(tmp_path, tokenizer):
    """null and empty CSV cells: counted, never trained as the word "None"; a row of another format that has an
    answer is trained in its own format (issue 38: it was dropped as answerless)."""
    from nbkit.loading import data

    write(tmp_path, {"d.jsonl": [GOOD, {"instruction": "q", "output": None}, {"instruction": "q", "output": ""},
                                 {"prompt": "other schema", "completion": "x"}, {"instruction": "Why?",
                                                                                  "output": "Because."}]})
    prepared = data.prepare(_cfg(tmp_path, dataset=str(tmp_path / "d.jsonl"), max_samples=None), tokenizer)
    assert len(prepared.train) == 3 and prepared.dropped == 2
    assert "Dropped 2 row(s) with no answer" in prepared.summary()
    texts = [tokenizer.decode(r["input_ids"]) for r in prepared.train]
    assert not any("None" in t for t in texts) and any("other schema" in t for t in texts)
    (tmp_path / "d.csv").write_text("instruction,output\nSay hi.,Hi.\nEmpty answer,\n")
    prepared = data.prepare(_cfg(tmp_path, dataset=str(tmp_path / "d.csv"), max_samples=None), tokenizer)
    assert len(prepared.train) == 1 and prepared.dropped == 1


def test_overwrite_replaces_only_what_the_earlier_run_wrote(tmp_path, tiny_dir):
    write(tmp_path, PREV_RUN | {"run/notes.txt": "the user's own notes"})
    report = workflow.run(_cfg(tmp_path), max_new_tokens=2, overwrite=True)
    assert (tmp_path / "run/notes.txt").read_text() == "the user's own notes"
    assert (tmp_path / "run/lora_adapters/adapter_model.safetensors").stat().st_size > 1000
    assert report.ok


def test_each_run_gets_its_own_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = RunConfig(), RunConfig()
    assert first.output_dir.startswith("outputs/tiny-llama-")
    (tmp_path / first.output_dir).mkdir(parents=True)
    assert RunConfig().output_dir != first.output_dir  # an existing folder is never picked again
    # two configs made in the same second are told apart by a suffix (-2, -3, …): never the same folder
    assert second.output_dir != first.output_dir and second.output_dir.startswith("outputs/tiny-llama-")


# --- models ---------------------------------------------------------------------------------------------
def test_offline_curated_id_is_not_called_missing():
    with pytest.raises(ModelNotFoundError) as err:
        models.resolve_model("unsloth/Qwen3-8B")  # curated, but tests run offline
    text = str(err.value)
    assert "Could not reach the Hugging Face Hub" in text and "the id is right" in text
    assert "Did you mean" not in text and "not found" not in text


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        models.resolve_model(str(tmp_path))


@pytest.mark.parametrize("message, kind", [
    ("401 Client Error: Unauthorized. Access to model is restricted. gated repo", "gated"),
    ("Loading this model requires you to execute custom code. Set trust_remote_code=True", "remote_code"),
    ("x is not a local folder and is not a valid model identifier listed on the Hub", "not_found"),
    ("We couldn't connect to 'https://huggingface.co' to load the files", "offline"),
])
def test_hub_failures_are_told_apart(message, kind, monkeypatch):
    from nbkit.loading import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hub.classify(OSError(message)) == kind
    text = hub.explain("someone/model", OSError(message))
    assert {"gated": "gated model", "remote_code": "custom code", "not_found": "was not found",
            "offline": "Hub could not be asked whether it exists"}[kind] in text


# --- training that goes wrong ------------------------------------------------------------------------
def test_a_diverged_run_is_an_error_and_saves_nothing(tmp_path):
    cfg = _cfg(tmp_path, learning_rate=1e6, max_steps=6, warmup_steps=0, save_steps=2)
    with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+: .*learning_rate=1e\+06") as err:
        workflow.run(cfg, max_new_tokens=2)
    run = tmp_path / "run"
    assert not (run / "lora_adapters").exists() and not (run / "nbkit_report.json").exists()
    assert json.loads((run / "nbkit_run.json").read_text())["status"] == "diverged"
    from safetensors.torch import load_file

    for ckpt in run.glob("checkpoint-*"):  # any checkpoint kept is from before the divergence: finite
        assert all(t.isfinite().all() for t in load_file(ckpt / "adapter_model.safetensors").values())
    assert err.value.step >= 1


# --- the command line ------------------------------------------------------------------------------
def nbkit_cli(*args, cwd=None, timeout=120):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nbkit", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "NBKIT_DISPLAY": "text"})
    return proc, time.perf_counter() - start


def test_cli_help_is_clean():
    proc, _ = nbkit_cli("--help")
    assert proc.returncode == 0 and "train" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("yaml_text, files, message", [
    ("learning_rate: fast\n", {}, "learning_rate='fast' is not a number"),
    ("max_steps: null\n", {}, "max_steps is empty"),
    ("dataset: '{tmp}/d.jsonl'\n", {"d.jsonl": ""}, "has no rows"),
    ("dataset: '{tmp}/d.jsonl'\n", {"d.jsonl": '{"instruction": "a", "output": "b"}\n{oops\n'}, "line 2"),
], ids=["lr-word", "steps-null", "empty-data", "broken-line"])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, yaml_text, files, message):
    write(tmp_path, files)
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text.format(tmp=tmp_path) + f"output_dir: '{tmp_path}/run'\n")
    before = tree_digest(tmp_path)
    proc, seconds = nbkit_cli("train", "--config", str(config))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("nbkit: error:")]
    assert seconds < 2 * QUICK and "Loading weights" not in proc.stderr
    assert tree_digest(tmp_path) == before


def test_cli_debug_shows_the_traceback(tmp_path):
    (tmp_path / "run.yaml").write_text("learning_rate: fast\n")
    proc, _ = nbkit_cli("train", "--config", str(tmp_path / "run.yaml"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_cli_full_disk_says_where_the_adapters_went(tmp_path):
    cfg = _cfg(tmp_path)
    path = cfg.save(tmp_path / "run.yaml")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "helpers" / "full_disk.py"), "train",
                           "--config", str(path)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "NBKIT_DISPLAY": "text", "NBKIT_FULL_DISK_RESCUE": "ok"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "were saved to" in x)
    rescued = Path(line.split("were saved to ", 1)[1].split(" instead")[0])
    assert (rescued / "adapter_model.safetensors").exists()


def test_cli_full_disk_at_a_checkpoint_keeps_the_trained_adapters(tmp_path):
    """The disk fills while a checkpoint is written: the adapters trained so far go to a rescue folder, the run
    folder says where it failed, and the CLI says so in one line (exit 2)."""
    cfg = _cfg(tmp_path, max_steps=4, save_steps=2)
    path = cfg.save(tmp_path / "run.yaml")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "helpers" / "full_disk.py"), "train",
                           "--config", str(path)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "NBKIT_DISPLAY": "text", "NBKIT_FULL_DISK_AT": "4"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("nbkit: error:")]
    assert "Could not write checkpoint-4" in line and "No space left on device" in line
    assert "the newest complete checkpoint is" in line and "checkpoint-2" in line
    rescued = Path(line.split("were saved to ", 1)[1].split(" instead")[0])
    assert (rescued / "adapter_model.safetensors").exists()
    marker = json.loads((tmp_path / "run" / "nbkit_run.json").read_text())
    assert (marker["status"], marker["phase"]) == ("failed", "saving a checkpoint")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-2", "nbkit_run.json"]


# --- notebook parameters (papermill) -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("param, value, message", [
    ("max_steps", "'ten'", "-p max_steps 'ten': max_steps takes a whole number (default 60)"),
    ("max_step", "10", "8gb.ipynb has no parameter 'max_step' (did you mean 'max_steps'?)"),
    ("quantization", "'nf4'", "cell 4 stopped the notebook: ConfigError: Unknown quantization 'nf4'"),
    ("model", "'does/not-exist'", "ModelNotFoundError"),
])
def test_notebook_parameters(tmp_path, capsys, param, value, message):
    """Checked against the notebook's parameters cell before it runs, or stopped by the cell that fails: one
    line, exit 2, and (on CPU as on a GPU) nothing trained for a model that does not exist."""
    from nbkit.cli import main

    start = time.perf_counter()
    assert main(["notebook", str(ROOT / "notebooks/8gb.ipynb"), "-o", str(tmp_path / "out.ipynb"), "--cwd",
                 str(tmp_path), "-p", param, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 120
    assert not (tmp_path / "outputs").exists()  # failed at the settings cell: nothing trained or written


# --- what the user wrote is what trains: every data-file and config mistake is one line (issue 27) ----------------
GZ = __import__("gzip").compress(b'{"instruction": "a", "output": "b"}\n')
ZIP_HEAD = b"PK\x03\x04" + b"\x00" * 26
# (id, files (bytes or text or rows), run.yaml lines, message)
CLI_CASES = [
    ("jsonl-holds-array", {"d.jsonl": json.dumps([GOOD, GOOD], indent=1)}, "dataset: '{tmp}/d.jsonl'",
     "holds a JSON array, not JSON Lines: rename it to .json"),
    ("csv-header-only", {"d.csv": "instruction,output\n"}, "dataset: '{tmp}/d.csv'",
     "has a header (instruction, output) but no rows"),
    ("csv-no-header", {"d.csv": "\n\n"}, "dataset: '{tmp}/d.csv'", "has no header row"),
    ("folder", {"data/d.jsonl": [GOOD]}, "dataset: '{tmp}/data'", "is a folder, not a data file: give one .jsonl"),
    ("gz-suffix", {"d.jsonl.gz": GZ}, "dataset: '{tmp}/d.jsonl.gz'", "is gzip-compressed: decompress it first (gunzip"),
    ("gz-named-jsonl", {"d.jsonl": GZ}, "dataset: '{tmp}/d.jsonl'", "is gzip-compressed"),
    ("zip", {"d.zip": ZIP_HEAD}, "dataset: '{tmp}/d.zip'", "is zip-compressed: decompress it first (unzip"),
    ("empty-jsonl", {"d.jsonl": ""}, "dataset: '{tmp}/d.jsonl'", "is empty (0 bytes), so it has no rows"),
    ("empty-csv", {"d.csv": ""}, "dataset: '{tmp}/d.csv'", "is empty (0 bytes)"),
    ("blank-lines-only", {"d.jsonl": "\n \n"}, "dataset: '{tmp}/d.jsonl'", "has no rows"),
    ("no-format", {"d.jsonl": [{"question": "q", "reply": "a"}]}, "dataset: '{tmp}/d.jsonl'",
     "columns ['question', 'reply'] match no format nbkit knows (alpaca: instruction, output; messages"),
    ("list-answer", {"d.jsonl": [GOOD, {"instruction": "Colours?", "output": ["red", "green"]}]},
     "dataset: '{tmp}/d.jsonl'", "line 2: 'output' is a list ([\"red\", \"green\"]), not text"),
    ("object-answer", {"d.jsonl": [{"instruction": "Pair?", "output": {"a": 1}}]}, "dataset: '{tmp}/d.jsonl'",
     "line 1: 'output' is an object"),
    ("message-content-list", {"d.jsonl": [{"messages": [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": ["a"]}]}]},
     "dataset: '{tmp}/d.jsonl'", "'messages[1].content' is a list"),
    ("two-encodings", {"d.jsonl": '{"instruction": "caf\u00e9", "output": "ok"}\n'.encode()
                       + '{"instruction": "th\u00e9", "output": "ok"}\n'.encode("cp1252")},
     "dataset: '{tmp}/d.jsonl'", "line 2 is not utf-8 while earlier lines are"),
    ("json-empty-list", {"d.json": "[]"}, "dataset: '{tmp}/d.json'", "has no rows"),
    ("json-not-a-list", {"d.json": '{"instruction": "a"}'}, "dataset: '{tmp}/d.json'", "must hold a list of objects"),
    ("line-is-number", {"d.jsonl": "5\n"}, "dataset: '{tmp}/d.jsonl'", "line 1 is str, not an object"),
    ("parquet-not-parquet", {"d.parquet": "not parquet"}, "dataset: '{tmp}/d.parquet'", "Cannot read"),
    ("hub-offline", {}, "dataset: nobody/unreachable-set", "cannot be reached: this machine is offline"),
    ("missing-home-path", {}, "dataset: '~/no-such-nbkit-data.jsonl'", "does not exist"),
    ("yaml-duplicate-key", {}, "lora_r: 8\nlora_r: 16", "'lora_r' is given twice: keep one"),
    ("save-total-limit-0", {}, "save_total_limit: 0", "save_total_limit=0 would keep no checkpoint"),
    ("extra-unknown", {}, "extra: {{max_grad_nrom: 0.5}}", "not an SFTConfig setting (TRL); did you mean 'max_grad_norm'"),
    ("extra-shadows-field", {}, "extra: {{learning_rate: 0.1}}", "is set by the RunConfig field 'learning_rate'"),
    ("quant-unknown-upper", {}, "quantization: NF4", "Unknown quantization 'nf4'"),
    ("format-unknown", {"d.jsonl": [GOOD]}, "dataset: '{tmp}/d.jsonl'\ndataset_format: Chatml",
     "Unknown dataset_format 'chatml'"),
    ("jsonl-array-one-line", {"d.jsonl": json.dumps([GOOD])}, "dataset: '{tmp}/d.jsonl'", "holds a JSON array"),
    ("bzip2", {"d.jsonl": b"BZh91AY&SY" + b"\x00" * 20}, "dataset: '{tmp}/d.jsonl'",
     "is bzip2-compressed: decompress it first (bunzip2"),
    ("sharegpt-value-list", {"d.jsonl": [{"conversations": [{"from": "human", "value": "q"},
                                                            {"from": "gpt", "value": ["a", "b"]}]}]},
     "dataset: '{tmp}/d.jsonl'", "'conversations[1].value' is a list"),
    ("completion-object", {"d.jsonl": [{"prompt": "p", "completion": {"text": "c"}}]}, "dataset: '{tmp}/d.jsonl'",
     "'completion' is an object"),
]


def run_cli(tmp_path, capsys, yaml_lines: str):
    from nbkit.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(yaml_lines.format(tmp=tmp_path) + f"\noutput_dir: '{tmp_path}/run'\nmax_steps: 2\n")
    start = time.perf_counter()
    code = main(["train", "--config", str(config)])
    return code, capsys.readouterr(), time.perf_counter() - start


@pytest.mark.parametrize("files, yaml_lines, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_data_and_config_mistakes_are_one_line_before_the_model_loads(tmp_path, guard, capsys, files, yaml_lines,
                                                                      message):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(json.dumps(row) + "\n" for row in content)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    guard.snapshot()
    code, out, seconds = run_cli(tmp_path, capsys, yaml_lines)
    assert code == 2, out.err[-2000:]
    (line,) = out.err.strip().splitlines()
    assert line.startswith("nbkit: error: ") and message in line and "Traceback" not in out.err
    assert seconds < QUICK and not guard.loads and not guard.unchanged()
    assert not (tmp_path / "run").exists()  # nothing claimed, nothing written


def test_an_unreadable_file_is_one_line(tmp_path, guard, capsys, monkeypatch):
    """(The tests run as root, who reads every file: the refusal is raised as the OS raises it for a user.)"""
    import builtins

    write(tmp_path, {"d.jsonl": [GOOD]})
    real_open = builtins.open

    def no_read(file, *args, **kwargs):
        if str(file) == str(tmp_path / "d.jsonl"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_read)
    guard.snapshot()
    code, out, _ = run_cli(tmp_path, capsys, "dataset: '{tmp}/d.jsonl'")
    assert code == 2 and "cannot be read (permission denied): give yourself read access (chmod u+r" in out.err
    assert not guard.loads and not guard.unchanged()


@pytest.mark.parametrize("name, content, note", [
    ("utf8-bom.jsonl", codecs_bom := "\ufeff", None),
    ("cp1252.jsonl", "cp1252", "is not UTF-8: read as cp1252"),
    ("latin1.csv", "latin-1", "is not UTF-8: read as"),
], ids=["utf8-bom", "cp1252", "latin1-csv"])
def test_text_is_trained_as_written(tmp_path, tokenizer, capsys, name, content, note):
    """Accents survive whatever the file's encoding (never U+FFFD), a number answer trains the digits the file
    holds, true stays true; a non-UTF-8 file is read with the encoding named."""
    from nbkit.loading import data

    rows = [{"instruction": "Où est le café ? Répondez en français, s'il vous plaît.", "output": "Le café est là-bas, près de l'église."},
            {"instruction": "Combien font deux et deux ?", "output": 4},
            {"instruction": "Et pi, avec deux décimales ?", "output": 3.14},
            {"instruction": "Vrai ou faux : la Terre est ronde.", "output": True}]
    path = tmp_path / name
    if name.endswith(".csv"):
        cell = {str: lambda v: f'"{v}"', bool: lambda v: str(v).lower()}  # what a spreadsheet writes
        text = "instruction,output\n" + "".join(f'"{r["instruction"]}",{cell.get(type(r["output"]), str)(r["output"])}\n'
                                                for r in rows)
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    raw = ("\ufeff" + text).encode("utf-8") if content == "\ufeff" else text.encode(content)
    path.write_bytes(raw)
    before = path.read_bytes()
    summary = data.check(RunConfig(dataset=str(path)))
    assert summary.startswith("data: 4 rows, alpaca format") and (note is None or note in summary)
    prepared = data.prepare(RunConfig(dataset=str(path), max_seq_length=256), tokenizer)
    answers = [tokenizer.decode([t for t, lab in zip(r["input_ids"], r["labels"]) if lab != -100])
               for r in prepared.train]
    assert any("Le café est là-bas, près de l'église." in a for a in answers)
    assert any(a.startswith("4<") or a.strip().startswith("4") and "4.0" not in a for a in answers)
    assert any("3.14" in a for a in answers) and any("true" in a for a in answers)
    assert not any("\ufffd" in a or "None" in a for a in answers)
    assert path.read_bytes() == before
    assert note is None or note in prepared.summary()


GOOD_LINE = json.dumps(GOOD) + "\n"


# --- issue 38: every check that can run before loading does -----------------------------------------------------
@pytest.mark.parametrize("files, message", [
    ({"d.jsonl": GOOD_LINE + '{"instruction": "q", "output": "a \\ud800"}\n'},
     "line 2: 'output' holds a lone surrogate"),
    ({"d.jsonl": GOOD_LINE + '{"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]}\n'},
     "line 2: conversations[1] has unknown 'from' value 'robot'"),
    ({"d.jsonl": GOOD_LINE + '{"question": "q", "answer": "a"}\n'}, "line 2 is in no format nbkit knows"),
], ids=["lone-surrogate", "unknown-speaker", "row-in-no-format"])
def test_row_mistakes_are_one_line_before_the_model_loads(tmp_path, guard, capsys, files, message):
    """Observed: a line holding \\ud800 passed the check and failed after the model loaded, with advice about the
    rows' "layout"; an unknown speaker or a row in no format was dropped without a word."""
    write(tmp_path, files)
    guard.snapshot()
    code, out, seconds = run_cli(tmp_path, capsys, "dataset: '{tmp}/d.jsonl'")
    assert code == 2, out.err[-2000:]
    (line,) = out.err.strip().splitlines()
    assert line.startswith("nbkit: error: ") and message in line and "layout" not in line
    assert seconds < QUICK and not guard.loads and not guard.unchanged()

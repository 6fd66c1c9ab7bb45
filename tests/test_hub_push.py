"""Pushing a run to the Hub, through huggingface_hub's real client against a small Hub on 127.0.0.1
(helpers/fake_hub.py) that records what it receives: the real Hub cannot be reached from here."""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.fake_hub import FakeHub
from nbkit import RunConfig
from nbkit.exporting import hub_push
from nbkit.training.hub_access import HubError

ROOT = Path(__file__).resolve().parent.parent
LORA = {"README.md", "loss_curve.png", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "chat_template.jinja"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished CPU run with LoRA, merged and q8_0 GGUF exports."""
    from nbkit import workflow

    out = tmp_path_factory.mktemp("pushrun") / "run"
    cfg = RunConfig(quantization="16bit", max_seq_length=128, batch_size=4, grad_accum=1, max_steps=4, lora_r=4,
                    save_steps=2, max_samples=40, output_dir=str(out))
    workflow.run(cfg, merged=True, gguf=True, max_new_tokens=4)
    return out


@pytest.fixture
def online(monkeypatch, tmp_path):
    """huggingface_hub as it runs with a network: not offline (conftest sets that for every other test), Xet off
    (its storage service is not imitated), no saved login, and a token of the test's own in HF_TOKEN."""
    from huggingface_hub import constants

    token = "hf_" + secrets.token_hex(16)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return token


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "nbkit_run.json"}


def test_a_push_uploads_exactly_the_chosen_files_and_the_card(run_dir):
    (lora,) = hub_push.plan(run_dir, "alice/tiny", ["lora"])
    assert lora.repo_id == "alice/tiny" and set(lora.paths) == LORA
    merged, gguf = hub_push.plan(run_dir, "alice/tiny", ["merged", "gguf"])
    assert merged.repo_id == "alice/tiny-merged"
    assert set(merged.paths) == {"README.md", "loss_curve.png", "config.json", "generation_config.json",
                                 "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    assert gguf.repo_id == "alice/tiny-GGUF"
    (name,) = [p for p in gguf.paths if p.endswith(".gguf")]
    assert name.endswith("-q8_0.gguf") and set(gguf.paths) == {"README.md", "loss_curve.png", "Modelfile", name}
    # another quantization is not there yet: the push would export it first
    assert hub_push.missing(run_dir, ["lora", "gguf"], "q4_k_m") == ["gguf"]


def test_the_push_through_the_real_client(run_dir, online):
    with FakeHub(online) as hub:
        result = hub_push.push_to_hub(run_dir, "alice/tiny", ["lora", "merged", "gguf"], endpoint=hub.url)
        assert not hub.bad_auth
        assert set(hub.repos) == {"alice/tiny", "alice/tiny-merged", "alice/tiny-GGUF"}
        assert all(repo["visibility"] == "private" for repo in hub.repos.values())
        for up in result.uploads:  # exactly the plan (+ the repo's own .gitattributes), byte for byte
            files = hub.files(up.repo_id)
            assert set(files) == set(up.paths) | {".gitattributes"}
            for path, local in up.files.items():
                assert files[path] == local.read_bytes(), path
            assert len(hub.repos[up.repo_id]["commits"]) == 1
        card = hub.files("alice/tiny")["README.md"].decode()
        assert "library_name: peft" in card and "PeftModel.from_pretrained(base, 'alice/tiny')" in card
        gguf_card = hub.files("alice/tiny-GGUF")["README.md"].decode()
        assert "ollama run hf.co/alice/tiny-GGUF:Q8_0" in gguf_card
        # the weights went through the LFS upload, the small files in the commit itself
        sha = hashlib.sha256((run_dir / "lora_adapters" / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert sha in hub.lfs_puts
        assert "alice/tiny" in str(result.summary()) and "README.md" in result.sent["lora"]


def test_a_failed_push_says_what_reached_the_hub_and_retries_only_the_rest(run_dir, online):
    with FakeHub(online) as hub:
        hub.fail_commit = {"alice/tiny-GGUF"}
        with pytest.raises(HubError) as err:
            hub_push.push_to_hub(run_dir, "alice/tiny", ["lora", "gguf"], endpoint=hub.url)
        message = str(err.value)
        assert f"lora: {hub.url}/alice/tiny — 7 file(s) uploaded" in message
        assert "gguf: NOT pushed" in message and "uploads only what is not on the Hub yet" in message
        assert set(hub.files("alice/tiny-GGUF")) == {".gitattributes"}
        puts = list(hub.lfs_puts)
        again = hub_push.push_to_hub(run_dir, "alice/tiny", ["lora", "gguf"], endpoint=hub.url)
        assert again.sent["lora"] == [] and set(again.unchanged["lora"]) == LORA
        assert len(hub.repos["alice/tiny"]["commits"]) == 1  # nothing committed twice
        assert set(again.sent["gguf"]) == {p for p in again.uploads[1].paths}
        assert hub.lfs_puts == puts  # the GGUF's bytes reached the Hub's storage the first time: not sent again


def test_a_read_only_token_is_refused_before_any_upload(run_dir, online):
    with FakeHub(online, role="read") as hub:
        with pytest.raises(HubError, match="read-only.*hf auth login"):
            hub_push.push_to_hub(run_dir, "alice/tiny", endpoint=hub.url)
        assert [path for _, path in hub.requests] == ["/api/whoami-v2"]
    grants = {"scoped": [{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read"]}]}
    with FakeHub(online, role="fineGrained", fine_grained=grants) as hub:
        with pytest.raises(HubError, match="no write access"):
            hub_push.push_to_hub(run_dir, "alice/tiny", endpoint=hub.url)
        assert [path for _, path in hub.requests] == ["/api/whoami-v2"]


def test_no_token_is_one_line_saying_how_to_log_in(run_dir, online, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with FakeHub(online) as hub:
        with pytest.raises(HubError) as err:
            hub_push.push_to_hub(run_dir, "alice/tiny", endpoint=hub.url)
        assert hub.requests == []
    assert "No Hugging Face token" in str(err.value) and "hf auth login" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "no route"])
def test_offline_fails_fast_and_touches_nothing(run_dir, online, monkeypatch, how):
    before = snapshot(run_dir)
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        endpoint = None
    else:  # a port nothing listens on
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(HubError, match="Cannot reach .*nothing was pushed") as err:
        hub_push.push_to_hub(run_dir, "alice/tiny", ["lora", "merged"], endpoint=endpoint)
    assert time.monotonic() - start < 6 and "\n" not in str(err.value)
    assert snapshot(run_dir) == before


def test_the_token_is_written_nowhere(tmp_path, online):
    """A CLI run and push with HF_TOKEN set: no file the run wrote, and nothing printed, holds the token."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": online, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
              save_steps=1, max_samples=8, output_dir=str(tmp_path / "run")).save(tmp_path / "run.yaml")
    with FakeHub(online) as hub:
        env["HF_ENDPOINT"] = hub.url
        printed = ""
        for args in (["train", "--config", "run.yaml"], ["push", "run", "alice/secret-test"]):
            proc = subprocess.run([sys.executable, "-m", "nbkit", *args], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-2000:]
            printed += proc.stdout + proc.stderr
        assert "adapter_model.safetensors" in hub.files("alice/secret-test")
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(written) > 10
    assert [str(p) for p in written if online.encode() in p.read_bytes()] == []
    assert online not in printed


def test_the_launchers_push_button(run_dir, online):
    """Disabled without a repo id, busy while pushing, then the repos as links; a refused token in one line."""
    from nbkit.planning.hardware import GpuInfo
    from nbkit.ui.launcher import Launcher

    with FakeHub(online) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        try:
            ui = Launcher(RunConfig(output_dir=str(run_dir)), GpuInfo(False), recommend=False)
            push = ui.hub_push
            assert push in ui.children and push.button.disabled  # a saved run, but no repo yet
            push.repo.value = "alice/from-the-launcher"
            assert not push.button.disabled
            push.what.value = "LoRA + GGUF (q8_0)"
            thread = push.push()
            assert push.button.disabled  # busy until it is done
            thread.join(120)
            assert "Pushed" in push.status.value and "alice/from-the-launcher-GGUF" in push.status.value
            assert set(hub.files("alice/from-the-launcher")) == LORA | {".gitattributes"}
            assert not push.button.disabled and push.button.description == "Push"
            hub.role = "read"
            push.push(wait=True)
            assert "read-only" in push.status.value and "⚠" in push.status.value
        finally:
            del os.environ["HF_ENDPOINT"]


def test_checkpoints_go_to_the_hub_and_resume_starts_from_there(tmp_path, online):
    """hub_checkpoints: each checkpoint is pushed as last-checkpoint/ once complete; with the run folder lost (a
    Colab session without Drive), resume downloads it and continues from its step."""
    from nbkit import workflow

    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=4, lora_r=4,
                    save_steps=2, save_total_limit=1, max_samples=16, output_dir=str(tmp_path / "run"),
                    hub_checkpoints="alice/ckpts")
    with FakeHub(online) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        try:
            workflow.run(cfg.replace(max_steps=2), max_new_tokens=2)
            files = hub.files("alice/ckpts")
            assert "last-checkpoint/nbkit_checkpoint.json" in files and "last-checkpoint/adapter_model.safetensors" in files
            assert not any(name.startswith(("lora_adapters", "nbkit_run", "checkpoint-")) for name in files)
            shutil.rmtree(tmp_path / "run")  # the session died with its disk
            report = workflow.run(cfg, resume=True, max_new_tokens=2)
            assert report.train.resumed_from.endswith("checkpoint-2") and report.train.steps == 4
        finally:
            del os.environ["HF_ENDPOINT"]


@pytest.mark.slow
def test_a_notebook_run_with_a_token_set_writes_it_nowhere(tmp_path):
    """The 8 GB tier notebook, headless, with HF_TOKEN set (as a Colab user logged in would have it): neither the
    executed notebook nor anything the run wrote holds the token."""
    token = "hf_" + secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": token}
    proc = subprocess.run([sys.executable, "-m", "nbkit", "notebook", str(ROOT / "notebooks" / "8gb.ipynb"), "-o",
                           str(tmp_path / "out.ipynb"), "-p", "output_dir", str(tmp_path / "outputs"), "--cwd",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "out.ipynb") in written and len(written) > 10
    assert [str(p) for p in written if token.encode() in p.read_bytes()] == []
    assert token not in proc.stdout + proc.stderr

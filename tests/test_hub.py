"""Problems reaching a model on the Hub told apart (offline, gated, not found, remote code), each with what to do.

Exceptions are built as huggingface_hub raises them; nothing here reaches the network (conftest sets offline)."""
import pytest

from nbkit.loading import hub
from nbkit.resources import TINY_MODEL


class GatedRepoError(Exception):
    pass


class RepositoryNotFoundError(Exception):
    pass


class LocalEntryNotFoundError(Exception):
    pass


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def chained(outer: Exception, cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:
            raise outer from inner
    except Exception as exc:
        return exc


def test_kinds_are_read_from_the_exception_and_its_causes(online):
    assert hub.classify(GatedRepoError("Access to model is restricted")) == "gated"
    assert hub.classify(OSError("401 Client Error: Unauthorized for url")) == "gated"
    assert hub.classify(chained(OSError("wrapped"), RepositoryNotFoundError("404"))) == "not_found"
    assert hub.classify(ValueError("requires you to execute code: set trust_remote_code=True")) == "remote_code"
    assert hub.classify(OSError("Failed to resolve 'huggingface.co'")) == "offline"
    assert hub.classify(chained(OSError("x"), LocalEntryNotFoundError("not in cache"))) == "offline"
    assert hub.classify(RuntimeError("something else")) == "other"


def test_in_offline_mode_a_missing_id_is_not_called_nonexistent(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.classify(RepositoryNotFoundError("404")) == "offline"
    said = hub.explain("someone/model", RepositoryNotFoundError("404"))
    assert "could not be asked whether it exists" in said and "HF_HUB_OFFLINE=1" in said


def test_a_curated_id_offline_is_said_to_be_right(online):
    said = hub.explain("unsloth/Qwen3-8B", OSError("Connection error"), candidates=["unsloth/Qwen3-8B"])
    assert "the id is right" in said and TINY_MODEL in said


def test_a_misspelt_id_gets_close_matches(online):
    said = hub.explain("unsloth/Qwen3-8b-Instruct", RepositoryNotFoundError("404 Not Found"),
                       candidates=["unsloth/Qwen3-8B", "unsloth/Qwen3-14B", "unsloth/Llama-3.2-1B-Instruct"])
    assert "was not found" in said and "Did you mean unsloth/Qwen3-8B" in said
    assert "Did you mean" not in hub.explain("a/b", RepositoryNotFoundError("404"), candidates=["a/b"])


def test_gated_and_remote_code_say_what_to_do(online):
    assert "accept its licence" in hub.explain("meta-llama/x", GatedRepoError("gated repo"))
    assert "does not run" in hub.explain("x/y", ValueError("trust_remote_code"))


def test_another_error_is_named_on_one_line(online):
    said = hub.explain("x/y", RuntimeError("first line\nsecond line"))
    assert "(RuntimeError: first line)" in said and "second" not in said


def test_offline_mode_is_read_from_either_variable_as_people_write_it(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert not hub._offline()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "True")
    assert hub._offline()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "on")
    assert hub._offline()

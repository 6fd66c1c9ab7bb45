"""Reaching the Hugging Face Hub for a model's config, with one clear message per way it can fail.

"Not found", "no network", "gated" and "needs remote code" are different problems with different fixes, so
they get different messages. Candidates for "did you mean" are passed in: this module knows no model list.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterable

from ..resources import TINY_MODEL
from ..errors import ModelNotFoundError

_OFFLINE_TEXT = ("couldn't connect", "could not connect", "connection", "offline", "failed to resolve",
                 "name or service not known", "temporary failure", "network is unreachable", "timed out",
                 "cannot find the requested files in the local cache", "outgoing traffic has been disabled")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException) -> str:
    """'gated', 'not_found', 'offline', 'remote_code' or 'other', from an exception and its causes."""
    names = [type(e).__name__ for e in _chain(exc)]
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if "GatedRepoError" in names or "gated repo" in text or "401" in text and "unauthorized" in text:
        return "gated"
    if "trust_remote_code" in text:
        return "remote_code"
    if "RepositoryNotFoundError" in names or "is not a valid model identifier" in text or "404" in text:
        if not (os.environ.get("HF_HUB_OFFLINE") == "1" or "LocalEntryNotFoundError" in names):
            return "not_found"
    if (os.environ.get("HF_HUB_OFFLINE") == "1" or "LocalEntryNotFoundError" in names
            or any(t in text for t in _OFFLINE_TEXT)):
        return "offline"
    return "other"


def explain(model_id: str, exc: BaseException, candidates: Iterable[str] = ()) -> str:
    kind = classify(exc)
    candidates = list(candidates)
    close = difflib.get_close_matches(model_id, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close and model_id not in close else ""
    offline = f"offline mode: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}"
    if kind == "offline" and model_id in candidates:
        return (f"Could not reach the Hugging Face Hub to get {model_id!r} (no network, or {offline}), and it is "
                "not in the local cache. It is one of nbkit's curated models, so the id is right: connect to the "
                f"internet once to download it, pass a local model folder, or use {TINY_MODEL!r} for a smoke run.")
    if kind == "offline":  # whether the Hub has it is unknown: say what is known
        return (f"Model {model_id!r} was not found here: it is not a local folder nor in the local cache, and the "
                f"Hub could not be asked whether it exists (no network, or {offline}).{hint} Check the spelling, "
                f"connect to the internet, pass a local folder, or use {TINY_MODEL!r} for a smoke run.")
    if kind == "gated":
        return (f"{model_id!r} is a gated model: accept its licence on its Hub page, then log in "
                "(`huggingface-cli login`, or HF_TOKEN in the environment) and run again.")
    if kind == "remote_code":
        return (f"{model_id!r} needs custom code from its repository (trust_remote_code), which nbkit does not "
                "run. Pick a model transformers supports natively (e.g. one of nbkit's curated models).")
    detail = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})" if kind == "other" else ""
    return (f"Model {model_id!r} was not found: it is not a local folder and the Hugging Face Hub has no such "
            f"model.{hint} Check the spelling (ids look like 'unsloth/Llama-3.2-1B-Instruct'), pass a local "
            f"folder, or use {TINY_MODEL!r} for a smoke run.{detail}")


def auto_config(model_id: str, candidates: Iterable[str] = ()):
    """transformers' AutoConfig for a Hub id, or a ModelNotFoundError that says which problem it is."""
    from . import backend

    backend.ensure()  # Unsloth must be imported before transformers
    from transformers import AutoConfig

    # without a network the libraries retry for 20-30 s before they give up: one quick request says so first,
    # and then only the local cache is asked
    local_only = not _offline() and not hub_reachable()
    try:
        return AutoConfig.from_pretrained(model_id, local_files_only=local_only)
    except Exception as exc:  # OSError, HTTP errors, offline mode, remote code: told apart by explain()
        err = ModelNotFoundError(explain(model_id, exc, candidates))
        err.kind = classify(exc)
        raise err from exc


_reachable: list = []  # (answer, when): one quick request a minute at most


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all, in one request with a short timeout (remembered a minute)."""
    import time
    import urllib.request

    from huggingface_hub import constants

    now = time.monotonic()
    if _reachable and now - _reachable[1] < 60:
        return _reachable[0]
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
        answer = True
    except urllib.error.HTTPError:  # it answered, if not with 200
        answer = True
    except (OSError, ValueError):
        answer = False
    _reachable[:] = [answer, now]
    return answer


def check_dataset(dataset_id: str, timeout: float = 10.0) -> str:
    """Before anything loads: whether a Hub data set can be had, in one request with a short timeout (offline:
    only from the local cache, at once). Returns where it comes from; raises a DataError that says what to do."""
    from ..errors import DataError

    local = "Use a local .jsonl/.csv file, or nbkit's embedded 'nbkit/instruct-mini'."
    if _offline():
        if _cached(dataset_id):
            return "the local cache"
        raise DataError(f"Data set {dataset_id!r} cannot be reached: this machine is offline (HF_HUB_OFFLINE / "
                        f"HF_DATASETS_OFFLINE is set) and it is not in the local cache. {local}")
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(dataset_id, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 — told apart by classify(), like a model id
        kind = classify(exc)
        if kind == "offline" and _cached(dataset_id):
            return "the local cache"
        why = {"gated": "it is gated: accept its terms on its Hub page and log in (huggingface-cli login)",
               "not_found": "the Hub has no such data set (check the spelling: ids look like 'owner/name')",
               "offline": f"the Hub could not be reached within {timeout:.0f} s (no network?)"}.get(
            kind, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
        raise DataError(f"Data set {dataset_id!r} cannot be used: {why}. {local}") from None
    return "the Hub"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE",
                                                                                     "HF_DATASETS_OFFLINE"))


def _cached(dataset_id: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_id.replace('/', '--')}").is_dir()

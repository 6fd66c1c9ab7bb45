"""Who may write to the Hugging Face Hub, and whether it can be reached: checked in seconds, before any upload,
export or model load that would need it.

The token is the user's and stays theirs: it is read where huggingface_hub reads it (HF_TOKEN, the saved login of
`hf auth login`, Colab's secret HF_TOKEN) and handed to huggingface_hub's client, never printed, logged or written.
Every message here names where a token comes from, never the token.
"""
from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from ..errors import NbkitError

LOGIN = ("log in with `hf auth login` in a terminal (or `from huggingface_hub import login; login()` in a "
         "notebook; on Colab, add a secret named HF_TOKEN), using a token with write access from "
         "https://huggingface.co/settings/tokens")


class HubError(NbkitError):
    """The Hub cannot take this push (no token, a read-only token, no network, a failed upload): one line that says
    what reached the Hub and what to do."""


def endpoint(explicit: str | None = None) -> str:
    from huggingface_hub import constants

    return (explicit or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def token(explicit: str | None = None) -> str:
    """The user's token (an explicit one, else huggingface_hub's: HF_TOKEN, the saved login, Colab's secrets), or a
    HubError saying how to log in. The value is returned, never shown."""
    if explicit:
        return explicit
    from huggingface_hub import get_token

    found = get_token()  # HF_TOKEN, then Colab's secret HF_TOKEN (when in Colab), then the saved login
    if not found:
        found = _colab_secret()
    if not found:
        raise HubError(f"No Hugging Face token found (HF_TOKEN is not set and nobody is logged in): {LOGIN}. "
                       "Nothing was uploaded.")
    return found


def _colab_secret() -> str | None:
    try:
        from google.colab import userdata  # only in Colab
    except ImportError:
        return None
    try:
        return userdata.get("HF_TOKEN")
    except Exception:  # noqa: BLE001 — no such secret, or access to it not granted
        return None


def reachable(url: str, timeout: float = 4.0) -> str | None:
    """None if something answers on `url`'s host and port within `timeout` seconds, else why not, in words.
    Name resolution runs on a thread so that a black-holed DNS cannot hold the caller longer than `timeout`."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE",)):
        return "HF_HUB_OFFLINE is set"
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"no answer from {host} within {timeout:.0f} s"
    return None if outcome[0] is None else f"{host}: {outcome[0]}"


def require_online(url: str, what: str) -> None:
    why = reachable(url)
    if why:
        raise HubError(f"Cannot reach {url} ({why}; no network?): {what}.")


def writer(api, namespace: str | None = None) -> str:
    """The account `api`'s token belongs to, if it may write (create repos, push) in `namespace` (default: its
    own); else a HubError saying how to log in with a write token. Read-only and fine-grained tokens without
    repo.write there are refused before anything is uploaded."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"The Hugging Face token was refused (invalid or expired): {LOGIN}. Nothing was "
                           "uploaded.") from None
        raise HubError(f"The Hub did not say who the token belongs to ({str(exc).splitlines()[0][:200]}). "
                       "Nothing was uploaded; try again.") from None
    name = info.get("name", "?")
    namespace = namespace or name
    access = (info.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "read":
        raise HubError(f"The Hugging Face token of {name!r} is read-only, so it cannot create or push repos: {LOGIN}. "
                       "Nothing was uploaded.")
    if role == "fineGrained":
        grants = (access.get("fineGrained") or {}).get("scoped") or []
        if not any("repo.write" in g.get("permissions", []) and _covers((g.get("entity") or {}).get("name", ""), namespace)
                   for g in grants):
            raise HubError(f"The fine-grained Hugging Face token of {name!r} has no write access to repos of "
                           f"{namespace!r} (repo.write): give it that permission at "
                           "https://huggingface.co/settings/tokens, or " + LOGIN.split(", using")[0] +
                           " with a write token. Nothing was uploaded.")
    return name


def _covers(entity: str, namespace: str) -> bool:
    """A fine-grained grant on `entity` (a user, an org or one repo) covers pushing into `namespace`."""
    return entity == namespace or entity.startswith(namespace + "/")

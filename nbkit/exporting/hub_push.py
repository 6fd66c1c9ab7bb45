"""Push a run folder to the Hugging Face Hub: exactly the chosen exports and their model card, each where people
look for it, through huggingface_hub's client only.

Where each format goes (as Unsloth's notebooks and the Hub's GGUF repos do it):
    lora    REPO_ID            adapter files at the repo's root: PeftModel.from_pretrained(base, REPO_ID) loads them
    merged  REPO_ID-merged     16-bit weights at the root of a repo of their own: AutoModelForCausalLM.from_pretrained
    gguf    REPO_ID-GGUF       <model>-<quant>.gguf + Ollama Modelfile: `ollama run hf.co/REPO_ID-GGUF:<QUANT>`
Each repo gets the run's card (README.md, for that format) and its loss curve. Nothing else is uploaded: not the
run's marker (it holds local paths), not peft's template card, not checkpoints or other quantizations.

A push compares every file with what the repo already holds (sha256 for LFS files, the git blob id otherwise) and
commits only what differs, one commit per repo: a push that failed half-way says which repos got their files, and
the same call again uploads only the rest. Large files go through huggingface_hub's LFS/Xet upload, whose blobs
already uploaded are not sent again.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import model_card
from ..training import hub_access
from ..training.hub_access import HubError
from ..errors import ExportError
from ..training import outputs, runs

FORMATS = ("lora", "merged", "gguf")
SUFFIX = {"lora": "", "merged": "-merged", "gguf": "-GGUF"}
FOLDER = {"lora": "lora_adapters", "merged": "merged_16bit", "gguf": "gguf"}
_NOT_UPLOADED = {outputs.RUN_MARKER, model_card.CARD}  # nbkit's bookkeeping (local paths), peft's template card


@dataclass
class Upload:
    """One repo's share of a push: {path in the repo: local file}, plus the card and the loss curve as bytes."""
    kind: str
    repo_id: str
    files: dict[str, Path]
    extra: dict[str, bytes] = field(default_factory=dict)  # README.md, loss_curve.png

    @property
    def paths(self) -> list[str]:
        return sorted([*self.files, *self.extra])


@dataclass
class PushResult:
    uploads: list[Upload]
    endpoint: str = "https://huggingface.co"
    sent: dict[str, list[str]] = field(default_factory=dict)  # kind -> files this push committed
    unchanged: dict[str, list[str]] = field(default_factory=dict)  # kind -> files the repo already held
    failed: dict[str, str] = field(default_factory=dict)  # kind -> why

    def summary(self) -> str:
        lines = []
        for up in self.uploads:
            url = f"{self.endpoint}/{up.repo_id}"
            if up.kind in self.failed:
                lines.append(f"{up.kind}: NOT pushed to {url}: {self.failed[up.kind]}")
            elif up.kind in self.sent:
                sent, same = self.sent[up.kind], self.unchanged.get(up.kind, [])
                done = f"{len(sent)} file(s) uploaded ({', '.join(sent)})" if sent else "already up to date"
                lines.append(f"{up.kind}: {url} — {done}" + (f", {len(same)} already there" if same else ""))
        if self.failed:
            lines.append("Run the same push again: it uploads only what is not on the Hub yet.")
        return "\n".join(lines)


def repo_for(repo_id: str, kind: str) -> str:
    return repo_id + SUFFIX[kind]


def _kinds(what) -> list[str]:
    kinds = [what] if isinstance(what, str) else list(what)
    bad = [k for k in kinds if k not in FORMATS]
    if bad or not kinds:
        raise ExportError(f"Cannot push {bad or 'nothing'}: choose from {', '.join(FORMATS)}, e.g. what=('lora',).")
    return kinds


def _gguf_files(folder: Path, quant: str) -> list[Path]:
    return sorted(p for p in (folder / "gguf").glob("*.gguf") if p.stem.lower().endswith("-" + quant.lower()))


def missing(run_dir: str | Path, what=("lora",), gguf: str = "q8_0") -> list[str]:
    """The chosen formats the run folder has not exported yet (a GGUF of another quantization counts as missing)."""
    folder = Path(run_dir)
    gone = []
    for kind in _kinds(what):
        there = _gguf_files(folder, gguf) if kind == "gguf" else (folder / FOLDER[kind]).is_dir()
        if not there:
            gone.append(kind)
    return gone


def plan(run_dir: str | Path, repo_id: str, what=("lora",), gguf: str = "q8_0") -> list[Upload]:
    """Exactly what a push would upload, repo by repo, from the folder as it is (no network)."""
    folder = Path(run_dir)
    facts = model_card.run_facts(folder)
    gone = missing(folder, what, gguf)
    if gone:
        raise ExportError(f"{folder} has no {', '.join(gone)} export to push yet: export it first (nbkit export "
                          f"{folder}{' --merged' if 'merged' in gone else ''}"
                          f"{f' --gguf {gguf}' if 'gguf' in gone else ''}), or push with nbkit push, which does.")
    curve = folder / model_card.CURVE
    png = curve.read_bytes() if curve.exists() else model_card.loss_curve(facts)
    uploads = []
    for kind in _kinds(what):
        source = folder / FOLDER[kind]
        if kind == "gguf":
            chosen = _gguf_files(folder, gguf) + [p for p in [source / "Modelfile"] if p.exists()]
        else:
            chosen = sorted(p for p in source.rglob("*") if p.is_file() and p.name not in _NOT_UPLOADED
                            and not p.name.startswith(".nbkit-tmp-"))
        target = repo_for(repo_id, kind)
        card = model_card.build(folder, kind, target, [p.name for p in chosen if p.suffix == ".gguf"], facts)
        extra = {model_card.CARD: str(card).encode()}
        if png:
            extra[model_card.CURVE] = png
        uploads.append(Upload(kind, target, {p.relative_to(source).as_posix(): p for p in chosen}, extra))
    return uploads


def describe(run_dir: str | Path, repo_id: str, what=("lora",), gguf: str = "q8_0") -> list[str]:
    """What a push would upload, a line per repo (`nbkit push --dry-run`): no token, no network."""
    gone = missing(run_dir, what, gguf)
    ready = [k for k in _kinds(what) if k not in gone]
    lines = [f"{up.kind} -> {up.repo_id}: {', '.join(up.paths)}" for up in (plan(run_dir, repo_id, ready, gguf)
                                                                           if ready else [])]
    return lines + [f"{kind} -> {repo_for(repo_id, kind)}: not exported yet (push exports it first)" for kind in gone]


def push_to_hub(run_dir: str | Path, repo_id: str, what=("lora",), private: bool = True, gguf: str = "q8_0",
                token: str | None = None, endpoint: str | None = None, allow_unfinished: bool = False,
                exporter=None) -> PushResult:
    """Push a run folder's exports to the Hub (see the module's docstring for where each goes). The token, the
    network and the token's write access are checked first, in seconds, before anything is exported or uploaded;
    formats the folder has not exported yet are exported first by `exporter` (nbkit.exporting.export.push_to_hub passes
    nbkit.exporting.export.from_run; without one they are an error). Raises HubError with what reached the Hub when a
    repo's upload failed; pushing again uploads only the rest."""
    from huggingface_hub import HfApi

    folder = Path(run_dir).expanduser()
    kinds = _kinds(what)
    marker = model_card.run_facts(folder)["marker"]
    state = runs.RunState(marker.get("status", "?"), marker.get("step") or 0, marker.get("total"), str(folder))
    runs.require_finished(state, "push", allow_unfinished)
    url = hub_access.endpoint(endpoint)
    hub_access.require_online(url, f"nothing was pushed and {folder} is untouched; push again when online "
                                   f"(nbkit push {folder} {repo_id})")
    api = HfApi(endpoint=url, token=hub_access.token(token))
    owner = hub_access.writer(api, repo_id.split("/")[0] if "/" in repo_id else None)
    repo_id = repo_id if "/" in repo_id else f"{owner}/{repo_id}"
    gone = missing(folder, kinds, gguf)
    if gone and exporter is not None:
        print(f"nbkit: exporting {', '.join(gone)} first")
        exporter(folder, merged="merged" in gone, gguf=gguf if "gguf" in gone else None,
                 allow_unfinished=allow_unfinished)
    result = PushResult(plan(folder, repo_id, kinds, gguf), endpoint=url)
    for up in result.uploads:
        try:
            _push_one(api, up, private, result, f"nbkit: {up.kind} of {folder.name} (step {marker.get('step')})")
        except Exception as exc:  # noqa: BLE001 — one repo failing must not hide what the others got
            result.failed[up.kind] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    done = dict(marker.get("pushed", {}))
    for up in result.uploads:
        if up.kind not in result.failed:
            done[up.kind] = {"repo": up.repo_id, "step": marker.get("step"), "at": time.strftime("%F %T")}
    runs.note(folder, pushed=done)
    if result.failed:
        err = HubError("Push incomplete:\n" + result.summary())
        err.result = result
        raise err
    return result


def _push_one(api, up: Upload, private: bool, result: PushResult, message: str) -> None:
    from huggingface_hub import CommitOperationAdd

    api.create_repo(up.repo_id, private=private, exist_ok=True)
    remote = _remote_files(api, up.repo_id)
    ops, same = [], []
    for path in up.paths:
        source = up.extra.get(path, up.files.get(path))
        if path in remote and _same(remote[path], source):
            same.append(path)
        else:
            ops.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=source if isinstance(source, bytes)
                                          else str(source)))
    if ops:
        api.create_commit(up.repo_id, operations=ops, commit_message=message)
    result.sent[up.kind] = [op.path_in_repo for op in ops]
    result.unchanged[up.kind] = same


def _remote_files(api, repo_id: str) -> dict:
    from huggingface_hub.hf_api import RepoFile

    return {f.path: f for f in api.list_repo_tree(repo_id, recursive=True) if isinstance(f, RepoFile)}


def _same(remote, source: Path | bytes) -> bool:
    """Whether the repo's file is this one: its LFS sha256, or its git blob id for a file kept in git."""
    data = source if isinstance(source, bytes) else None
    size = len(data) if data is not None else source.stat().st_size
    if remote.size != size:
        return False
    if remote.lfs is not None:
        digest = hashlib.sha256()
        if data is not None:
            digest.update(data)
        else:
            with open(source, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest() == remote.lfs.sha256
    data = data if data is not None else source.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == remote.blob_id

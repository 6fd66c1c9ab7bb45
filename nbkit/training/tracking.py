"""Where a run is logged besides its own folder (`RunConfig.report_to`), and its checkpoints pushed to the Hub while
it trains (`RunConfig.hub_checkpoints`): the trainer's arguments and callbacks for them, and the checks that say in
one line, before the model loads, what is missing (a package, a login, the network).

Tracking goes through the HF Trainer's own integrations (report_to: tensorboard, trackio, wandb), as TRL documents
it. Checkpoints are pushed by a callback after nbkit has renamed each one into place, not by the Trainer's
`push_to_hub`/`hub_strategy="checkpoint"`: that uploads from the folder the checkpoint is being written in (nbkit's
staging folder, renamed away while the upload still reads it) and uploads the run folder's root with it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from . import hub_access
from ..errors import ConfigError

PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",)}
LAST = "last-checkpoint"  # where the Hub copy of the newest checkpoint lives (the Trainer's hub_strategy name)


def trainer_args(cfg) -> dict:
    """TrainingArguments for the config's tracker: report_to, the run's name (its folder's), the trackio project."""
    args = {"report_to": cfg.report_to}
    if cfg.report_to != "none":
        args["run_name"] = Path(cfg.output_dir).name
    if cfg.report_to == "trackio":
        args["project"] = os.environ.get("TRACKIO_PROJECT", "nbkit")
    return args


def preflight(cfg) -> list[str]:
    """One line per tracker/Hub setting that will work; a ConfigError (one line) for one that cannot."""
    lines = []
    if cfg.report_to != "none":
        if not any(importlib.util.find_spec(name) for name in PACKAGES[cfg.report_to]):
            raise ConfigError(f"report_to={cfg.report_to!r} needs the {PACKAGES[cfg.report_to][0]} package: "
                              f"pip install {PACKAGES[cfg.report_to][0]} (then restart the kernel), or set "
                              "report_to='none' (the run folder keeps its metrics either way).")
        if cfg.report_to == "wandb":
            _check_wandb()
        lines.append(f"tracking: {cfg.report_to} (run {Path(cfg.output_dir).name})")
    if cfg.hub_checkpoints:
        url = hub_access.endpoint()
        try:
            hub_access.require_online(url, "checkpoints cannot be pushed; set hub_checkpoints='' to train without")
            from huggingface_hub import HfApi

            owner = hub_access.writer(HfApi(endpoint=url, token=hub_access.token()),
                                      cfg.hub_checkpoints.split("/")[0] if "/" in cfg.hub_checkpoints else None)
        except hub_access.HubError as exc:
            raise ConfigError(f"hub_checkpoints={cfg.hub_checkpoints!r}: {exc}") from None
        lines.append(f"checkpoints also go to the Hub: {_full_id(cfg.hub_checkpoints, owner)}/{LAST} (private)")
    return lines


def _check_wandb() -> None:
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        raise ConfigError("report_to='wandb' needs a W&B login: run `wandb login` (or set WANDB_API_KEY), or set "
                          "WANDB_MODE=offline to log locally, or report_to='none'.")
    why = hub_access.reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    if why:
        raise ConfigError(f"report_to='wandb' cannot reach W&B ({why}; no network?): set WANDB_MODE=offline to log "
                          "locally and `wandb sync` later, or report_to='none' / 'tensorboard'.")


def _full_id(repo: str, owner: str) -> str:
    return repo if "/" in repo else f"{owner}/{repo}"


def callbacks(cfg) -> list:
    """The trainer callbacks the config asks for: the Hub checkpoint pusher, or none."""
    return [_hub_checkpoints(cfg.hub_checkpoints)] if cfg.hub_checkpoints else []


def _hub_checkpoints(repo_id: str):
    from transformers import TrainerCallback

    class HubCheckpoints(TrainerCallback):
        """After each checkpoint is complete in the run folder, upload it to the Hub repo as last-checkpoint/ (in
        the background, replacing the previous one). A push still running when the next checkpoint comes is left
        to finish and that checkpoint is not pushed, as the Trainer does; the end of training waits for the last."""

        def __init__(self):
            self.repo_id, self.pending, self.created = repo_id, None, False

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            busy = self.pending is not None and not self.pending.done()
            if not state.is_world_process_zero or not folder.is_dir() or busy:
                return
            from huggingface_hub import HfApi

            api = HfApi(endpoint=hub_access.endpoint())
            if not self.created:
                self.repo_id = api.create_repo(self.repo_id, private=True, exist_ok=True).repo_id
                self.created = True
            self.pending = api.upload_folder(repo_id=self.repo_id, folder_path=folder, path_in_repo=LAST,
                                             delete_patterns="*", run_as_future=True,
                                             commit_message=f"nbkit: checkpoint at step {state.global_step}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.pending is None:
                return
            try:
                self.pending.result()
            except Exception as exc:  # noqa: BLE001 — the local checkpoint is there; the Hub copy is a spare
                print(f"nbkit: the last checkpoint push to {self.repo_id} failed "
                      f"({(str(exc).splitlines() or [''])[0][:200]}); the run folder has it.")

    return HubCheckpoints()


def restore(cfg) -> str | None:
    """For resume=True: when the run folder has no complete checkpoint and the config names a Hub copy, download
    its last-checkpoint/ into the folder as checkpoint-<step> (and, in an empty folder, a marker saying the run was
    interrupted there), so the ordinary resume continues from it. Returns what was done, or None."""
    from . import outputs

    if not cfg.hub_checkpoints:
        return None
    folder = Path(cfg.output_dir).expanduser()
    if outputs.newest_checkpoint(folder)[0] is not None:
        return None
    import json
    import shutil
    import tempfile

    from huggingface_hub import snapshot_download

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nbkit-tmp-hub-", dir=folder) as tmp:
        snapshot_download(cfg.hub_checkpoints, allow_patterns=f"{LAST}/*", local_dir=tmp,
                          endpoint=hub_access.endpoint())
        got = Path(tmp) / LAST
        state = json.loads((got / "trainer_state.json").read_text())
        step = int(state["global_step"])
        if not (got / outputs.CHECKPOINT_MARKER).exists():
            raise ConfigError(f"{cfg.hub_checkpoints}/{LAST} is not a complete nbkit checkpoint; nothing restored.")
        shutil.rmtree(got / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        os.replace(got, folder / f"checkpoint-{step}")
    if outputs.read_marker(folder) is None:
        outputs.update_marker(folder, status="interrupted", config=cfg.to_dict(), step=step,
                              total=cfg.max_steps or None, restored_from=cfg.hub_checkpoints)
    note = f"restored checkpoint-{step} from the Hub ({cfg.hub_checkpoints}/{LAST})"
    print(f"nbkit: {note}")
    return note

"""RunConfig: every choice a user makes for one fine-tuning run, validated and serialisable."""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config_files import read_mapping
from .config_values import coerce_fields
from ..errors import ConfigError
from ..resources import TINY_MODEL  # the default model  # noqa: F401
from ..specs import ALL_LINEAR  # the default LoRA targets  # noqa: F401

# 8-bit (bitsandbytes LLM.int8) is not offered: its memory and speed were never measured, so nbkit could not
# plan it honestly, and 4-bit fits in less with Unsloth's kernels.
QUANTIZATIONS = ("4bit", "16bit", "fp8")
BACKENDS = ("auto", "unsloth", "transformers")
# How several GPUs share a run: "ddp" copies the model to every GPU (faster, needs it to fit one), "fsdp" shards
# it across them (for models no single GPU holds), "auto" lets the memory model choose (nbkit.planning.recommend).
PARALLELISMS = ("auto", "ddp", "fsdp")
DEFAULT_DATASET = "nbkit/instruct-mini"
# Optimizer names are the HF Trainer's; "auto" resolves per device in resolved_optimizer().
OPTIMIZERS = ("auto", "adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "sgd", "adafactor")
# Several short rows in one sequence of up to max_seq_length tokens (nbkit.loading.packing): "auto" packs where a step then
# holds clearly more real tokens (on a GPU), "on" always, "off" never.
PACKINGS = ("auto", "on", "off")
REPORT_TO = ("none", "tensorboard", "trackio", "wandb")  # trackers the HF Trainer reports to (nbkit.training.tracking)


@dataclass
class RunConfig:
    model: str = TINY_MODEL
    quantization: str = "4bit"
    max_seq_length: int = 512
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    batch_size: int = 2
    grad_accum: int = 4
    learning_rate: float = 2e-4
    max_steps: int = 60
    num_epochs: float = 1.0
    warmup_steps: int = 5
    optimizer: str = "auto"
    weight_decay: float = 0.01
    gradient_checkpointing: bool = True
    seed: int = 3407
    dataset: str = DEFAULT_DATASET
    dataset_format: str = "auto"
    max_samples: int | None = None
    eval_fraction: float = 0.0
    output_dir: str = ""  # "": a fresh folder per run, outputs/<model>-<date>-<time> (on Drive/Kaggle when there)
    save_steps: int = 50
    save_total_limit: int = 2
    save_minutes: float = 10.0  # also checkpoint whenever this long has passed (0: off): a dying session loses less
    backend: str = "auto"
    parallelism: str = "auto"  # several GPUs: "ddp", "fsdp" (sharded), or "auto" (the memory model chooses)
    packing: str = "auto"  # "auto", "on", "off": short rows share a sequence (nbkit.loading.packing); true/false read as on/off
    # more SFTConfig (TRL) settings, passed to the trainer as they are, e.g. {"max_grad_norm": 0.5}; checked
    # against SFTConfig's fields before anything loads (nbkit.training.train.check_extra)
    extra: dict[str, Any] = field(default_factory=dict)
    # where the trainer also logs its metrics: "none" (the run folder keeps its own), "tensorboard", "trackio",
    # "wandb"; the package and login are checked before the model loads (nbkit.training.tracking)
    report_to: str = "none"
    # a Hub repo id: each checkpoint is also pushed there (private, as last-checkpoint/), and resume=True starts
    # from it when the run folder has none (a Colab session without Drive); "" pushes nothing
    hub_checkpoints: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RunConfig":
        """Check values that need no hardware; raises ConfigError naming the field and a fix.

        Values arrive as people write them (YAML reads 2e-4 as a string, a form gives 8.0 for 8): numbers in
        strings and whole floats are converted, anything else is an error that names the field."""
        coerce_fields(self)
        if not self.output_dir:
            self.output_dir = auto_output_dir(self.model)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be a Hub id (e.g. 'unsloth/Llama-3.2-1B-Instruct') or a local folder.")
        if self.quantization == "8bit":
            raise ConfigError("quantization '8bit' is not offered: nbkit has not measured it, so it cannot predict "
                              "its memory. Use '4bit' (less memory) or '16bit' (no quantization error).")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"Unknown quantization {self.quantization!r}: choose one of {', '.join(QUANTIZATIONS)} "
                "('4bit' fits the smallest GPUs)."
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}.")
        if self.parallelism not in PARALLELISMS:
            raise ConfigError(f"Unknown parallelism {self.parallelism!r}: choose one of {', '.join(PARALLELISMS)} "
                              "('fsdp' shards a model too big for one GPU across several).")
        if self.parallelism == "fsdp" and self.quantization == "fp8":
            raise ConfigError("parallelism='fsdp' shards 4-bit or 16-bit models (transformers + peft); FP8 LoRA "
                              "runs through Unsloth on one GPU. Use quantization='4bit'.")
        if self.packing not in PACKINGS:
            raise ConfigError(f"Unknown packing {self.packing!r}: choose one of {', '.join(PACKINGS)} ('auto' packs "
                              "short rows together where that makes steps fuller).")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
        _positive_int(self, "lora_r", "LoRA rank r must be a positive integer such as 8, 16 or 32.")
        _positive_int(self, "lora_alpha", "LoRA alpha must be a positive integer; a common choice is alpha = r.")
        _positive_int(self, "batch_size", "batch_size must be at least 1; use grad_accum for a larger effective batch.")
        _positive_int(self, "grad_accum", "grad_accum must be at least 1.")
        _positive_int(self, "max_seq_length", "max_seq_length must be a positive number of tokens, e.g. 2048.")
        if self.max_seq_length < 16:
            raise ConfigError(f"max_seq_length={self.max_seq_length} is too short to hold a prompt and answer; use 256 or more.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout={self.lora_dropout} must be in [0, 1); 0 is fastest with Unsloth.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0; 2e-4 is a good start for LoRA.")
        if self.max_steps <= 0 and not self.num_epochs > 0:
            raise ConfigError("Set max_steps > 0, or max_steps = 0 with num_epochs > 0.")
        if not 0.0 <= self.eval_fraction < 0.5:
            raise ConfigError(f"eval_fraction={self.eval_fraction} must be in [0, 0.5).")
        if self.save_steps < 0 or self.warmup_steps < 0 or self.save_total_limit < 0 or self.save_minutes < 0:
            raise ConfigError("save_steps, save_total_limit, save_minutes and warmup_steps must be >= 0.")
        if self.save_total_limit == 0:
            raise ConfigError("save_total_limit=0 would keep no checkpoint, so nothing could be resumed: use 1 to keep "
                              "only the newest (2 is the default), or save_steps=0 and save_minutes=0 to save none.")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 0 (0: train for num_epochs).")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be in [0, 1); 0.01 is usual.")
        if not self.target_modules:
            raise ConfigError(f"target_modules is empty: use the default, all linear layers {ALL_LINEAR}.")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"Unknown report_to {self.report_to!r}: choose one of {', '.join(REPORT_TO)} ('none' "
                              "keeps the metrics in the run folder only).")
        if self.hub_checkpoints and not re.fullmatch(r"([\w.-]+/)?[\w.-]+", self.hub_checkpoints):
            raise ConfigError(f"hub_checkpoints={self.hub_checkpoints!r} is not a Hub repo id: write owner/name "
                              "(e.g. 'alice/my-run-checkpoints'), or leave it empty.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError("max_samples must be None (all rows) or at least 1.")
        return self

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def global_batch(self, processes: int = 1) -> int:
        """Rows per optimizer step across all data-parallel processes (GPUs)."""
        return self.effective_batch * processes

    def resolved_optimizer(self, on_cuda: bool, sharded: bool = False) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        # 8-bit Adam states are a GPU saving; on CPU the plain torch optimizer is the robust choice. Sharded runs
        # use torch's AdamW too: bitsandbytes' 8-bit kernels take plain tensors, not FSDP's sharded DTensors, and
        # sharding already divides the (small) LoRA optimizer states by the number of GPUs.
        return "adamw_8bit" if on_cuda and not sharded else "adamw_torch"

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hints = [f"{key!r} → {close[0]!r}" for key in unknown
                     if (close := difflib.get_close_matches(str(key), known, n=1, cutoff=0.6))]
            guess = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ConfigError(f"Unknown RunConfig field(s) {unknown}{guess}; known fields: {sorted(known)}.")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(read_mapping(path))


# Where a run's folder outlives the notebook session: Google Drive once mounted in Colab, Kaggle's saved output
SURVIVING_ROOTS = (("/content/drive/MyDrive", "nbkit-outputs"), ("/kaggle/working", "outputs"))


def default_output_root(candidates=SURVIVING_ROOTS) -> str:
    """`outputs` in the working folder, or a folder that survives the session where the notebook has one."""
    for mount, sub in candidates:
        if Path(mount).is_dir():
            return str(Path(mount) / sub)
    return "outputs"


def auto_output_dir(model: str, root: str | None = None) -> str:
    """A fresh folder name for a run: <root>/<model>-<date>-<time>[-n], never one that exists already."""
    import re
    import time

    root = root or default_output_root()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model).rstrip("/")).name or "run").strip("-") or "run"
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists() or str(candidate) in _AUTO_DIRS:
        n += 1
        candidate = Path(f"{base}-{n}")
    _AUTO_DIRS.add(str(candidate))
    return str(candidate)


_AUTO_DIRS: set[str] = set()  # folders auto_output_dir named in this process: the user never chose them


def is_auto_output_dir(folder: str) -> bool:
    """Whether nbkit picked this folder name (output_dir left unset) rather than the user."""
    return str(folder) in _AUTO_DIRS


def _positive_int(cfg: RunConfig, name: str, hint: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} is invalid. {hint}")

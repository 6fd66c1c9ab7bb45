"""RunConfig: every choice a user makes for one fine-tuning run, validated and serialisable."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

QUANTIZATIONS = ("4bit", "8bit", "16bit", "fp8")
BACKENDS = ("auto", "unsloth", "transformers")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TINY_MODEL = "nbkit/tiny-llama"
DEFAULT_DATASET = "nbkit/instruct-mini"
# Optimizer names are the HF Trainer's; "auto" resolves per device in resolved_optimizer().
OPTIMIZERS = ("auto", "adamw_8bit", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "sgd", "adafactor")


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
    output_dir: str = "outputs"
    save_steps: int = 50
    save_total_limit: int = 2
    backend: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        self.validate()

    def validate(self) -> "RunConfig":
        """Check values that need no hardware; raises ConfigError naming the field and a fix."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be a Hub id (e.g. 'unsloth/Llama-3.2-1B-Instruct') or a local folder.")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"Unknown quantization {self.quantization!r}: choose one of {', '.join(QUANTIZATIONS)} "
                "('4bit' fits the smallest GPUs)."
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}.")
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
        if self.save_steps < 0 or self.warmup_steps < 0:
            raise ConfigError("save_steps and warmup_steps must be >= 0.")
        if not self.target_modules:
            raise ConfigError(f"target_modules is empty: use the default, all linear layers {ALL_LINEAR}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError("max_samples must be None (all rows) or at least 1.")
        return self

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def global_batch(self, processes: int = 1) -> int:
        """Rows per optimizer step across all data-parallel processes (GPUs)."""
        return self.effective_batch * processes

    def resolved_optimizer(self, on_cuda: bool) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        # 8-bit Adam states are a GPU saving; on CPU the plain torch optimizer is the robust choice.
        return "adamw_8bit" if on_cuda else "adamw_torch"

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
            raise ConfigError(f"Unknown RunConfig field(s) {unknown}; known fields: {sorted(known)}.")
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
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"Config file {path} does not exist.")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of RunConfig fields.")
        return cls.from_dict(data)


def _positive_int(cfg: RunConfig, name: str, hint: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} is invalid. {hint}")

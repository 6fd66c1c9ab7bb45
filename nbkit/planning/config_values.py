"""A RunConfig's values as people write them (YAML, JSON, Python), read as the types its fields take.

Apart from RunConfig itself (nbkit.planning.config), which says what the choices are and which combinations are
valid: this module only reads a value's type (a number written as text, a switch written as "yes", a choice in
capitals) and says, for one that cannot be read, what to write instead.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError

_INT_FIELDS = ("max_seq_length", "lora_r", "lora_alpha", "batch_size", "grad_accum", "max_steps", "warmup_steps",
               "seed", "save_steps", "save_total_limit", "max_samples")
_FLOAT_FIELDS = ("lora_dropout", "learning_rate", "num_epochs", "weight_decay", "eval_fraction", "save_minutes")
_STR_FIELDS = ("model", "quantization", "dataset", "dataset_format", "output_dir", "backend", "optimizer",
               "parallelism", "packing", "report_to", "hub_checkpoints")
_NULLABLE = ("max_samples",)
_CHOICE_FIELDS = ("quantization", "backend", "parallelism", "optimizer", "dataset_format", "packing", "report_to")
_ON, _OFF = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_EXAMPLES = {"learning_rate": "2e-4", "max_steps": "60 (or 0 to train num_epochs)", "batch_size": "2",
             "max_seq_length": "2048", "num_epochs": "1"}


def coerce_fields(cfg) -> None:
    """`cfg` (a RunConfig being built: its __post_init__ calls this) with each field as the type it takes, from
    what people write in YAML, JSON or Python: "2e-4" and 1 for numbers, true/"yes"/"on" for switches, "FP8" for
    a choice. A value that cannot be read as its field's type is a ConfigError that says what to write."""
    for name in _INT_FIELDS + _FLOAT_FIELDS:
        value = getattr(cfg, name)
        if value is None:
            if name in _NULLABLE:
                continue
            example = _EXAMPLES.get(name, "a number")
            raise ConfigError(f"{name} is empty (null/None); write a number, e.g. {name}: {example}.")
        setattr(cfg, name, number(name, value, integer=name in _INT_FIELDS))
    if isinstance(cfg.packing, bool):  # packing: true in YAML, packing=True in Python
        cfg.packing = "on" if cfg.packing else "off"
    elif isinstance(cfg.packing, str) and cfg.packing.strip().lower() in _ON + _OFF:
        cfg.packing = "on" if cfg.packing.strip().lower() in _ON else "off"
    for name in _STR_FIELDS:
        value = getattr(cfg, name)
        if value is None and name == "output_dir":
            cfg.output_dir = ""
        elif not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be text (a string), not {type(value).__name__}.")
    for name in _CHOICE_FIELDS:  # "FP8", "Auto": a choice's case cannot be confused with another choice
        value = getattr(cfg, name)
        if isinstance(value, str) and value != value.strip().lower():
            setattr(cfg, name, value.strip().lower())
    gc = cfg.gradient_checkpointing
    if isinstance(gc, str) and gc.strip().lower() in _ON + _OFF:
        cfg.gradient_checkpointing = gc.strip().lower() in _ON
    elif isinstance(gc, int) and gc in (0, 1):
        cfg.gradient_checkpointing = bool(gc)
    else:
        raise ConfigError(f"gradient_checkpointing={gc!r} must be true or false.")
    targets = cfg.target_modules
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"target_modules={targets!r} must be a list of layer names, e.g. "
                          f"[q_proj, v_proj] in YAML or ['q_proj', 'v_proj'] in Python.")
    cfg.target_modules = tuple(targets)
    if not isinstance(cfg.extra, dict):
        raise ConfigError(f"extra={cfg.extra!r} must be a mapping (or left out).")


def number(name: str, value: Any, integer: bool) -> int | float:
    """A number from what people write: 2e-4, "2e-4", 1 for a float, 8.0 or "8" for a whole number."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be {kind}, not true/false.")
    if isinstance(value, str):
        try:
            value = float(value.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not {kind}; write e.g. {name}: {_EXAMPLES.get(name, '1')}.") \
                from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} must be {kind}, not {type(value).__name__}.")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={value!r} must be a finite number.")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{name}={value!r} must be a whole number.")
        return int(value)
    return value  # an int is a fine float; a string was converted above

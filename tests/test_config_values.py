"""A RunConfig's values read as people write them: numbers as text, switches as words, choices in capitals;
anything else is one ConfigError that says what to write."""
from __future__ import annotations

import pytest

from nbkit import RunConfig
from nbkit.errors import ConfigError
from nbkit.planning.config import is_auto_output_dir
from nbkit.planning.config_values import number


def test_numbers_are_read_as_written():
    assert number("learning_rate", "2e-4", integer=False) == 2e-4
    assert number("batch_size", "8", integer=True) == 8 and isinstance(number("batch_size", 8.0, True), int)
    assert number("max_steps", "1_000", integer=True) == 1000
    assert number("learning_rate", 1, integer=False) == 1  # an int is a fine float


@pytest.mark.parametrize("name, value, integer, message", [
    ("batch_size", True, True, "batch_size=True must be a whole number, not true/false"),
    ("batch_size", 2.5, True, "batch_size=2.5 must be a whole number"),
    ("learning_rate", "fast", False, "learning_rate='fast' is not a number; write e.g. learning_rate: 2e-4"),
    ("learning_rate", float("nan"), False, "must be a finite number"),
    ("lora_r", [16], True, "lora_r=[16] must be a whole number, not list"),
])
def test_a_value_that_is_not_a_number_says_what_to_write(name, value, integer, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        number(name, value, integer)


def test_a_config_is_built_from_what_yaml_and_python_write():
    cfg = RunConfig(learning_rate="3e-4", batch_size="4", packing=True, quantization="FP8", backend="Auto",
                    gradient_checkpointing="no", target_modules=["q_proj", "v_proj"], output_dir=None)
    assert (cfg.learning_rate, cfg.batch_size, cfg.packing) == (3e-4, 4, "on")
    assert (cfg.quantization, cfg.backend, cfg.gradient_checkpointing) == ("fp8", "auto", False)
    assert cfg.target_modules == ("q_proj", "v_proj") and is_auto_output_dir(cfg.output_dir)  # None: nbkit's pick
    assert RunConfig(packing="off").packing == "off" and RunConfig(max_samples=None).max_samples is None


@pytest.mark.parametrize("changes, message", [
    ({"max_steps": None}, r"max_steps is empty \(null/None\); write a number, e.g. max_steps: 60"),
    ({"model": 7}, "model=7 must be text"),
    ({"gradient_checkpointing": "maybe"}, "gradient_checkpointing='maybe' must be true or false"),
    ({"target_modules": "q_proj"}, "target_modules='q_proj' must be a list of layer names"),
    ({"extra": ["max_grad_norm"]}, "must be a mapping"),
])
def test_a_field_of_the_wrong_type_is_one_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)

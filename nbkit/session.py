"""Notebook start-up: detect the GPU, rehearse a smaller tier, and switch to smoke mode without a GPU."""
from __future__ import annotations

from dataclasses import dataclass

from .planning.config import TINY_MODEL, RunConfig
from .planning.hardware import TIERS, GpuInfo, check_gpu


@dataclass
class Session:
    gpu: GpuInfo
    smoke: bool
    tier: str

    def summary(self) -> str:
        mode = ("SMOKE MODE: tiny embedded model on CPU, same cells, a few steps. Results show the workflow "
                "works, not model quality." if self.smoke else f"Full run for the {self.tier} tier.")
        return f"{self.gpu.summary()}\n{mode}"


def start(tier: str, smoke: bool | str = "auto", emulate_tier: bool = False,
          emulate: str | None = None) -> Session:
    """`smoke='auto'` runs the smoke mode exactly when there is no CUDA GPU. `emulate` rehearses a real card
    (e.g. "T4", "RTX 4060 8GB": its usable memory, bf16 and FP8) on this GPU; `emulate_tier=True` rehearses the
    tier's reference card (nbkit.planning.cards.TIER_CARDS)."""
    from .loading import backend

    # Unsloth takes 25-40 s to import: it loads on a thread while this check and the form show; the first cell
    # that needs it (loading the model) waits for it, and it still comes before transformers
    backend.start_import()
    if tier not in TIERS:
        raise ValueError(f"Unknown tier {tier!r}; choose one of {list(TIERS)}.")
    from .planning.cards import emulate as rehearse, end_rehearsal

    if not (emulate or emulate_tier):
        ended = end_rehearsal()  # a session without emulation plans for the real card, whatever ran before
        if ended:
            print(f"nbkit: the rehearsal of {ended} ended; planning for the real card.")
    gpu = check_gpu()
    if (emulate or emulate_tier) and gpu.available:
        gpu = rehearse(emulate or tier)
    smoke_on = (not gpu.available) if smoke == "auto" else bool(smoke)
    session = Session(gpu, smoke_on, tier)
    print(session.summary())
    if gpu.available and not backend.import_done():
        print("nbkit: Unsloth is importing in the background (25-40 s); go on with the next cells, loading the "
              "model waits for it.")
    return session


def smoke_config(config: RunConfig) -> RunConfig:
    """The same run shrunk to the tiny model: seconds on a CPU. Keeps the quantization where the CPU can.

    The model asked for is still checked (an unknown id is an error here as on a GPU), the swap is said, and a
    folder nbkit named for the run is named for the model that trains."""
    from pathlib import Path

    from .planning.config import auto_output_dir, is_auto_output_dir
    from .specs import spec_for

    changes = {}
    if config.model != TINY_MODEL:
        spec_for(config.model)  # raises ModelNotFoundError, with close matches, for an id that does not exist
        print(f"nbkit: smoke mode trains the tiny embedded model ({TINY_MODEL}) instead of {config.model}: the "
              "same cells, in seconds, on the CPU.")
        if is_auto_output_dir(config.output_dir):
            changes["output_dir"] = auto_output_dir(TINY_MODEL, root=str(Path(config.output_dir).parent))
    quant = config.quantization if config.quantization in ("4bit", "16bit") else "16bit"
    from .loading.tiny import SUGGESTED

    # 60 steps: enough for the tiny model to take on what the embedded data teaches (tests/test_demo.py)
    return config.replace(model=TINY_MODEL, quantization=quant, max_seq_length=256, batch_size=4, grad_accum=1,
                          max_steps=min(config.max_steps, 60), save_steps=10, max_samples=200,
                          eval_fraction=config.eval_fraction or 0.1,  # held-out rows, so the curve shows them fall
                          **SUGGESTED, **changes)

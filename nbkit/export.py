"""Save what training produced: LoRA adapters (always), merged 16-bit weights, GGUF."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ExportError
from .models import LoadedModel


def save_lora(loaded: LoadedModel, directory: str | Path) -> Path:
    """Adapters + tokenizer + the run's config; checks the adapter file really landed on disk."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        loaded.model.save_pretrained(directory)
        loaded.tokenizer.save_pretrained(directory)
        (directory / "nbkit_run.json").write_text(json.dumps(
            {"base_model": loaded.base_path, "backend": loaded.backend, **loaded.config.to_dict()}, indent=2))
    except OSError as exc:
        raise ExportError(f"Could not write the adapters to {directory}: {exc}. Free disk space or pick another "
                          f"folder, then call nbkit.export.save_lora(loaded, folder) again.") from exc
    if not any(directory.glob("adapter_model.*")):
        raise ExportError(f"Saving adapters to {directory} produced no adapter_model file; check disk space.")
    return directory


def save_merged(loaded: LoadedModel, directory: str | Path, adapter_dir: str | Path | None = None) -> Path:
    """Full 16-bit weights with the adapters merged in, loadable without peft.

    Unsloth merges on the GPU. Elsewhere the base model is reloaded unquantized from its own files and the
    saved adapters are merged into it, so 4-bit runs merge into exact 16-bit weights too.
    """
    directory = Path(directory)
    if loaded.backend == "unsloth":
        loaded.model.save_pretrained_merged(str(directory), loaded.tokenizer, save_method="merged_16bit")
        return _checked(directory)
    if adapter_dir is None:
        raise ExportError("save_merged on the transformers backend needs adapter_dir: call save_lora() first "
                          "and pass its folder.")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .models import compute_dtype

    base = AutoModelForCausalLM.from_pretrained(loaded.base_path, dtype=compute_dtype(False))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return _checked(directory)


def save_gguf(loaded: LoadedModel, directory: str | Path, quantization_method: str = "q4_k_m") -> Path:
    """GGUF for llama.cpp / Ollama, through Unsloth (which drives llama.cpp's converter)."""
    directory = Path(directory)
    if loaded.backend != "unsloth":
        raise ExportError(
            "GGUF export runs through Unsloth on a CUDA GPU. Here: save_merged() and convert the folder "
            "with llama.cpp's convert_hf_to_gguf.py."
        )
    try:
        loaded.model.save_pretrained_gguf(str(directory), loaded.tokenizer, quantization_method=quantization_method)
    except Exception as exc:  # llama.cpp missing/unbuildable offline: explain instead of a deep traceback
        raise ExportError(
            f"GGUF export failed ({exc}). Unsloth needs llama.cpp (it clones and builds it, which needs network "
            "and a compiler). The LoRA adapters and merged weights are unaffected; convert the merged folder "
            "later with llama.cpp's convert_hf_to_gguf.py."
        ) from exc
    if not list(directory.glob("*.gguf")) and not list(Path(".").glob(f"{directory.name}*.gguf")):
        raise ExportError(f"GGUF export wrote no .gguf file into {directory}.")
    return directory


def _checked(directory: Path) -> Path:
    if not any(directory.glob("*.safetensors")):
        raise ExportError(f"Merged export to {directory} wrote no .safetensors weights.")
    return directory

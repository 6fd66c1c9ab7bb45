"""Save what training produced: LoRA adapters (always), merged 16-bit weights, GGUF."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..training import outputs, runs
from ..errors import ExportError
from ..loading.models import LoadedModel
from ..training.adapters import rescue_adapters, write_adapters


_write_lora = write_adapters  # the one writer of adapters, here and in a rescue (tests fill the disk through it)


def _check_finite(loaded: LoadedModel) -> None:
    from ..training.adapters import snapshot

    tensors = loaded.adapter_state if loaded.adapter_state is not None else snapshot(loaded.model)
    bad = [name for name, t in tensors.items() if not t.isfinite().all()]
    if bad:
        raise ExportError(f"{len(bad)} LoRA tensor(s) hold NaN or infinity (e.g. {bad[0]}), so they were not saved: "
                          "the run diverged. Train again with a lower learning_rate.")


def save_lora(loaded: LoadedModel, directory: str | Path, rescue: bool = True,
              allow_unfinished: bool = False) -> Path:
    """Adapters + tokenizer + the run's config, written under a temporary name and renamed when complete.

    If the folder cannot take them (disk full, no permission), they are saved to a rescue folder instead and
    the ExportError says where (`err.saved_to`): a trained result is never lost to a full disk. A model whose
    run stopped or was interrupted is saved only with `allow_unfinished=True` (nbkit.training.runs.require_finished)."""
    directory = Path(directory)
    runs.require_finished(loaded.trained, "save its adapters", allow_unfinished)
    _check_finite(loaded)
    try:
        with outputs.atomic_dir(directory) as tmp:
            _write_lora(loaded, tmp)
            files = _names(tmp)
        _record(directory, "lora", loaded, files)
        return directory
    except OSError as exc:
        reason = f"Could not write the adapters to {directory}: {exc.strerror or exc}."
        if not rescue:
            raise ExportError(f"{reason} {_retry(directory, '')}") from None
    try:
        spare = rescue_lora(loaded)
    except ExportError as exc2:
        raise ExportError(f"{reason} {exc2}") from None
    err = ExportError(f"{reason} The adapters were saved to {spare} instead; copy them where you want them.")
    err.saved_to = spare
    print(f"nbkit: {err}")
    raise err


def rescue_lora(loaded: LoadedModel) -> Path:
    """Save the adapters where a save can still go (the user cache, else the temp folder); raise if none can."""
    return rescue_adapters(loaded, _write_lora)


def save_merged(loaded: LoadedModel, directory: str | Path, adapter_dir: str | Path | None = None,
                allow_unfinished: bool = False) -> Path:
    """Full 16-bit weights with the adapters merged in, loadable without peft.

    Unsloth merges on the GPU. Elsewhere the base model is reloaded unquantized from its own files and the
    saved adapters are merged into it, so 4-bit runs merge into exact 16-bit weights too.
    """
    directory = Path(directory)
    runs.require_finished(loaded.trained, "merge", allow_unfinished)
    if loaded.backend != "unsloth" and adapter_dir is None:
        raise ExportError("save_merged on the transformers backend needs adapter_dir: call save_lora() first "
                          "and pass its folder.")
    _check_finite(loaded)
    with _disk_errors("the merged model", directory, "--merged"), outputs.atomic_dir(directory) as tmp:
        if loaded.backend == "unsloth":
            loaded.model.save_pretrained_merged(str(tmp), loaded.tokenizer, save_method="merged_16bit")
        else:
            merged_model(loaded, adapter_dir).save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
        _checked(tmp)
        files = _names(tmp)
    _record(directory, "merged", loaded, files)
    return directory


@contextmanager
def _disk_errors(what: str, directory: Path, flag: str):
    """A write that fails (a full disk, no permission) as one line with the command that finishes the job."""
    try:
        yield
    except OSError as exc:
        raise ExportError(f"Could not write {what} to {directory}: {exc.strerror or exc}. "
                          f"{_retry(directory, flag)}") from None


def _retry(directory: Path, flag: str) -> str:
    """How to try again: the export command for a run folder's export, else the call."""
    if (outputs.read_marker(directory.parent) or {}).get("config"):
        return f"Free disk space, then finish with: nbkit export {directory.parent}{' ' + flag if flag else ''}"
    return "Free disk space or pick another folder, then call it again."


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def merged_model(loaded: LoadedModel, adapter_dir: str | Path):
    """The base reloaded from its own files, the saved adapters merged in exactly (in float32), then cast to the
    16-bit type the export's name promises (bfloat16: float16 can overflow where bf16 does not).

    A 4-bit run's adapters learned to correct the 4-bit weights they trained beside, so they are merged into those
    weights, dequantized (as Unsloth merges): merged into the unrounded originals, the model would answer otherwise
    than the one that was trained and tested (on the tiny model, visibly: tests/test_demo.py)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(loaded.base_path, dtype=torch.float32)
    trained_against = _dequantized_weights(loaded.model)
    if trained_against:
        params = dict(base.named_parameters())
        for name, weight in trained_against.items():
            params[name].data = weight.to(device=params[name].device, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    for param in merged.parameters():  # weights only: buffers (rotary tables) stay as a fresh load makes them
        param.data = param.data.to(torch.bfloat16)
    merged.config.dtype = torch.bfloat16
    return merged


def _dequantized_weights(model) -> dict:
    """{base parameter name: its 4-bit weight dequantized} for every bitsandbytes 4-bit layer of `model`."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # nothing can be 4-bit without it
        return {}
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            # peft's names: base_model.model.<base name>[.base_layer]
            base_name = name.removeprefix("base_model.model.").removesuffix(".base_layer")
            found[f"{base_name}.weight"] = weight.float().cpu()
    return found


def save_gguf(loaded: LoadedModel, directory: str | Path, quantization_method: str = "q8_0",
              adapter_dir: str | Path | None = None, allow_unfinished: bool = False) -> Path:
    """GGUF for llama.cpp / Ollama, with an Ollama Modelfile beside it.

    Unsloth's own export is used where it works (it needs llama.cpp from GitHub); otherwise, and on the
    transformers backend, the merged 16-bit model goes through llama.cpp's converter from the package index
    (nbkit.exporting.gguf). The folder is written under a temporary name and renamed when complete."""
    from . import gguf

    directory = Path(directory)
    runs.require_finished(loaded.trained, "export GGUF", allow_unfinished)
    _check_finite(loaded)
    if loaded.backend == "unsloth":
        try:
            with outputs.atomic_dir(directory) as tmp:
                loaded.model.save_pretrained_gguf(str(tmp), loaded.tokenizer, quantization_method=quantization_method)
                files = sorted(tmp.glob("*.gguf"))
                if not files:
                    raise ExportError("Unsloth's GGUF export wrote no .gguf file.")
                (tmp / "Modelfile").write_text(gguf.modelfile(files[-1].name, loaded.tokenizer.chat_template))
                names = _names(tmp)
            _record(directory, "gguf", loaded, names)
            return directory
        except Exception as exc:  # llama.cpp not reachable or not buildable here: the converter path below
            print(f"nbkit: Unsloth's GGUF export did not work here ({str(exc)[:200]}); using llama.cpp's "
                  "converter from the package index instead.")
    method = quantization_method.lower()
    with _disk_errors("the GGUF export", directory, "--gguf " + method), \
            tempfile.TemporaryDirectory(prefix="nbkit-merge-") as work, outputs.atomic_dir(directory) as tmp:
        if adapter_dir is None and loaded.backend != "unsloth":  # the transformers merge starts from saved adapters
            adapter_dir = save_lora(loaded, Path(work) / "lora", allow_unfinished=True)
        merged = save_merged(loaded, Path(work) / "merged", adapter_dir, allow_unfinished=True)
        spm = Path(loaded.base_path) / "tokenizer.model"
        if spm.exists() and not (merged / "tokenizer.model").exists():  # SentencePiece vocabularies need it
            shutil.copy(spm, merged / "tokenizer.model")
        stem = Path(loaded.base_path.rstrip("/")).name
        if method in gguf.CONVERTER_TYPES:
            out = gguf.convert(merged, tmp / f"{stem}-{method}.gguf", method)
        else:
            f16 = gguf.convert(merged, Path(work) / f"{stem}-f16.gguf", "f16")
            out = gguf.quantize(f16, tmp / f"{stem}-{method}.gguf", method)
        (tmp / "Modelfile").write_text(gguf.modelfile(out.name, loaded.tokenizer.chat_template))
        names = _names(tmp)
    _record(directory, "gguf", loaded, names)
    return directory


def _record(directory: Path, kind: str, loaded: LoadedModel, files: list[str]) -> None:
    """Inside a run folder, note what was exported there, from which step, and its files: only those may be
    replaced later, and `nbkit export` knows what is already done."""
    state = loaded.trained
    runs.exported(directory.parent, kind, directory, state.step if state is not None else None, files)


def _checked(directory: Path) -> Path:
    if not any(directory.glob("*.safetensors")):
        raise ExportError(f"Merged export to {directory} wrote no .safetensors weights.")
    return directory


def from_run(run_dir: str | Path, merged: bool = False, gguf: str | None = None,
             allow_unfinished: bool = False) -> dict[str, Path]:
    """Export a run from its folder alone, in any later kernel or process: the base model and the saved adapters
    are loaded (never trained) and written as LoRA adapters (if not there yet), merged 16-bit and/or GGUF
    (`gguf="q8_0"`). A run that stopped or was interrupted is exported only with `allow_unfinished=True`.
    Returns {kind: folder}; the run folder's marker records each export. Without `merged` or `gguf`, the exports
    the run was asked for and did not make (its finishing was cut short) are made."""
    folder = Path(run_dir).expanduser()
    marker = outputs.read_marker(folder)
    if marker is None or not marker.get("config"):
        raise ExportError(f"{folder} is not an nbkit run folder (it has no nbkit_run.json with settings): pass "
                          "the folder a run wrote, e.g. outputs/<model>-<date>-<time>.")
    with runs.holding(folder):  # refused while another live process uses the folder; nobody else takes it now
        marker = outputs.read_marker(folder)
        pending = runs.pending_exports(marker)
        if pending and not merged and not gguf:  # what the run was asked for and did not make: finish the job
            merged, gguf = "merged" in pending, "q8_0" if "gguf" in pending else None
            print(f"nbkit: making what the run was asked to export and did not: {', '.join(pending)}")
        return _export_run(folder, marker, merged, gguf, allow_unfinished)


def _export_run(folder: Path, marker: dict, merged: bool, gguf: str | None, allow_unfinished: bool) -> dict:
    from ..loading import models
    from ..planning.config import RunConfig

    source, step = trained_adapters(folder, marker)
    status = marker.get("status", "?")
    # still "training" in the marker, but we hold the folder: its process is gone, what it saved is unfinished
    state = runs.RunState(runs.INTERRUPTED if status in runs.ACTIVE else status, step, marker.get("total"),
                          str(folder))
    if not state.finished and state.status not in runs.UNFINISHED:
        raise ExportError(f"The run in {folder} {runs.describe(marker, folder)}: there is no trained result to "
                          "export. Fix what it says and train again (the same call retries it).")
    runs.require_finished(state, "export", allow_unfinished)  # before anything loads
    config = RunConfig.from_dict(marker["config"])
    print(f"nbkit: exporting {folder} ({runs.describe(marker, folder)}) from {source.name}: loading "
          f"{config.model}, no training")
    loaded = models.load(config.replace(batch_size=1))
    models.load_adapters(loaded, source)
    loaded.trained = state
    adapters = folder / "lora_adapters"
    done = marker.get("exported", {})
    if done.get("lora", {}).get("step") != step or not adapters.is_dir():
        save_lora(loaded, adapters, rescue=False, allow_unfinished=allow_unfinished)
    written = {"lora": adapters}
    if merged:
        written["merged"] = save_merged(loaded, folder / "merged_16bit", adapters, allow_unfinished)
    if gguf:
        written["gguf"] = save_gguf(loaded, folder / "gguf", gguf, adapters, allow_unfinished)
    return written


def trained_adapters(folder: Path, marker: dict) -> tuple[Path, int]:
    """The newest trained adapters in a run folder and their step: its lora_adapters when they hold the run's
    last step, else its newest complete checkpoint."""
    saved = marker.get("exported", {}).get("lora")
    if saved and saved.get("step") == marker.get("step") and (folder / "lora_adapters").is_dir():
        return folder / "lora_adapters", saved["step"]
    newest, _ = outputs.newest_checkpoint(folder)
    if newest is not None:
        return newest, int(newest.name.split("-")[1])
    if (folder / "lora_adapters").is_dir():
        return folder / "lora_adapters", marker.get("step") or 0
    raise ExportError(f"{folder} holds no trained adapters (no lora_adapters, no complete checkpoint): the run "
                      f"{runs.describe(marker, folder)}.")


def push_to_hub(run_dir: str | Path, repo_id: str, what=("lora",), private: bool = True, gguf: str = "q8_0",
                **options):
    """Push a run folder to the Hugging Face Hub: LoRA adapters to `repo_id`, merged weights to `repo_id-merged`,
    GGUF to `repo_id-GGUF`, each with its model card; formats not exported yet are exported first. See
    nbkit.exporting.hub_push (token, endpoint, allow_unfinished, what is uploaded)."""
    from .hub_push import push_to_hub as push

    return push(run_dir, repo_id, what, private, gguf, exporter=from_run, **options)

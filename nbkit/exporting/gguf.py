"""GGUF for llama.cpp and Ollama without reaching GitHub: llama.cpp's own converter, taken from the package index.

Unsloth's GGUF export clones and builds llama.cpp from GitHub, which many notebooks cannot reach. The
`llama-cpp-python` source distribution on the package index vendors the same llama.cpp, including
`convert_hf_to_gguf.py` and its `gguf-py` package. nbkit fetches that once into a cache and runs the converter on
the merged 16-bit model. The converter writes f32, f16, bf16 and q8_0 itself; k-quants (q4_k_m …) need llama.cpp's
quantize tool, used when `llama-quantize` is on PATH.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import ExportError

LLAMA_CPP_PYTHON = "0.3.36"  # its vendored llama.cpp is the converter nbkit was tested with
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
# what of the vendored llama.cpp the converter needs: the script, its model classes, and its own gguf-py
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def tools_dir() -> Path:
    # not NBKIT_CACHE: tests point that at a fresh folder per session, and this download is 77 MB
    root = Path(os.environ.get("NBKIT_TOOLS", Path.home() / ".cache" / "nbkit" / "tools"))
    return root / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def ensure_converter(say: Callable[[str], None] = print) -> Path:
    """The folder holding convert_hf_to_gguf.py and gguf-py, fetched from the package index on first use."""
    target = tools_dir()
    if all((target / part).exists() for part in _CONVERTER_PARTS):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        say(f"nbkit: fetching llama.cpp's GGUF converter (llama-cpp-python {LLAMA_CPP_PYTHON} source, about "
            "77 MB) from the package index, once …")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--disable-pip-version-check", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp],
                              capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode or not archives:
            raise ExportError(f"Could not download llama-cpp-python {LLAMA_CPP_PYTHON}'s source from the package "
                              f"index (needed once for GGUF export): {proc.stderr.strip()[-300:]}")
        staging = Path(tmp) / "llama.cpp"
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                rel = member.name.split("/vendor/llama.cpp/", 1)
                if len(rel) == 2 and rel[1].startswith(_CONVERTER_PARTS) and (member.isfile() or member.isdir()):
                    member.name = rel[1]
                    tar.extract(member, staging, filter="data")
        if not (staging / "convert_hf_to_gguf.py").exists():
            raise ExportError(f"llama-cpp-python {LLAMA_CPP_PYTHON}'s source has no convert_hf_to_gguf.py.")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)  # whole or not at all
    return target


def _declare_added_tokens(model_dir: Path) -> None:
    """transformers 5 keeps added tokens only in tokenizer.json; the converter reads which are special (chat
    markers: CONTROL tokens, which llama.cpp parses as one token) from tokenizer_config.json, as transformers 4
    wrote it. Add that entry when it is missing, and whether a BOS starts a prompt (below)."""
    import json

    config_file, tokenizer_file = model_dir / "tokenizer_config.json", model_dir / "tokenizer.json"
    if not (config_file.exists() and tokenizer_file.exists()):
        return
    config = json.loads(config_file.read_text())
    changed = dict(config)
    if "added_tokens_decoder" not in config:
        added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
        changed["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in ("content", "special") if k in t}
                                           for t in added}
    template_file = model_dir / "chat_template.jinja"
    template = config.get("chat_template") or (template_file.read_text() if template_file.exists() else "")
    if "add_bos_token" not in config and template and "bos_token" not in template:
        # nbkit trains on the chat template's text as it is (data.tokenize_example adds no special token): a
        # template without BOS trains without one. Without this entry llama.cpp would put a BOS before every
        # prompt, and the model would answer a context it never saw (tests/test_demo.py)
        changed["add_bos_token"] = False
    if changed != config:
        config_file.write_text(json.dumps(changed, indent=2))


def convert(model_dir: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a merged Hugging Face model folder."""
    if outtype not in CONVERTER_TYPES:
        raise ExportError(f"The converter writes {CONVERTER_TYPES}; {outtype!r} needs llama-quantize.")
    tools = ensure_converter()
    _declare_added_tokens(Path(model_dir))
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # it uses the gguf-py beside it
    proc = subprocess.run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir), "--outfile",
                           str(out_file), "--outtype", outtype], capture_output=True, text=True, env=env)
    if proc.returncode or not Path(out_file).exists():
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])  # one line
        raise ExportError(f"llama.cpp's converter could not convert {model_dir}: {tail}")
    return Path(out_file)


def quantize(f16_file: Path, out_file: Path, method: str) -> Path:
    """k-quants through llama.cpp's quantize tool, when it is installed."""
    tool = shutil.which("llama-quantize") or shutil.which("quantize")
    if tool is None:
        raise ExportError(f"GGUF {method!r} needs llama.cpp's quantize tool (llama-quantize), which is not "
                          f"installed here. Use one of {CONVERTER_TYPES} (q8_0 is close to lossless), or build "
                          "llama.cpp's llama-quantize and put it on PATH.")
    proc = subprocess.run([tool, str(f16_file), str(out_file), method.upper()], capture_output=True, text=True)
    if proc.returncode or not out_file.exists():
        raise ExportError(f"llama-quantize failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return out_file


# Ollama templates (Go text/template) for the chat formats nbkit's curated models use
_OLLAMA = {
    "<|im_start|>": ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                     '<|im_start|>assistant\n', ["<|im_end|>"]),
    "<|start_header_id|>": ('<|begin_of_text|>{{- range .Messages }}<|start_header_id|>{{ .Role }}'
                            '<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant'
                            '<|end_header_id|>\n\n', ["<|eot_id|>"]),
}


def modelfile(gguf_name: str, chat_template: str | None) -> str:
    """An Ollama Modelfile for the GGUF beside it: `ollama create NAME -f Modelfile`, then `ollama run NAME`."""
    lines = [f"FROM ./{gguf_name}"]
    for marker, (template, stops) in _OLLAMA.items():
        if chat_template and marker in chat_template:
            lines.append(f'TEMPLATE """{template}"""')
            lines += [f'PARAMETER stop "{s}"' for s in stops]
            break
    else:
        lines.append("# The chat template is embedded in the GGUF (tokenizer.chat_template); Ollama reads it there.")
    return "\n".join(lines) + "\n"

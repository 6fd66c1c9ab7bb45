"""How far the CPU path's numbers move with the kernels torch picks, measured: the yardstick for the tests' tolerances.

torch chooses its CPU kernels at run time (ATEN_CPU_CAPABILITY: avx2 on an AVX2 machine, avx512 where present,
which also sets how matmuls block and sum); the suite must pass on every CPU of the machine kind. Each
configuration below runs in its own processes, once under ATEN_CPU_CAPABILITY=avx2 and once at the default, the
two alternating --repeats times (every run is seeded: a repeat shows whether a configuration is deterministic).

  logits        the shipped tiny model's float32 logits on 8 rows of the embedded data (chat template): how far
                torch's forward moves across the two kernel sets (relative norm of the difference), whether the
                greedy token changes anywhere, and the smallest gap between the first and second logit (what a
                comparison of argmaxes, tests/test_gguf.py's, has to spare).
  fsdp-vs-ddp   tests/test_fsdp.py's run: the tiny model in 4-bit, 8 steps, 2 gloo processes under torchrun,
                sharded (FSDP2) and not (DDP). Per step: the relative loss difference of the two paths under one
                capability, and of one path across the two capabilities; and the final adapters' largest
                difference as a fraction of the largest LoRA B value.

CPU only; about 10 minutes on 2 cores. Prints a table and writes bench/results/cpu_spread.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
CAPABILITIES = ("default", "avx2")
# tests/test_fsdp.py's settings (its _config), so that the spread measured is the spread of that test's run
SETTINGS = dict(quantization="4bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=8, learning_rate=3e-3,
                warmup_steps=1, lora_r=4, save_steps=0, max_samples=60)


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
    return {"model": model or platform.processor(), "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


LOGITS_CHILD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from nbkit.resources import DEFAULT_DATA_PATH
from nbkit.loading.tiny import ensure_tiny_model
path = ensure_tiny_model()
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
rows = [json.loads(line) for line in DEFAULT_DATA_PATH.read_text().splitlines()[:8]]
texts = [tok.apply_chat_template([{"role": "user", "content": r["instruction"]},
                                  {"role": "assistant", "content": r["output"]}], tokenize=False) for r in rows]
with torch.no_grad():
    logits = [model(**tok(t, return_tensors="pt", add_special_tokens=False)).logits[0] for t in texts]
torch.save(logits, sys.argv[1])
print(torch.backends.cpu.get_cpu_capability())
"""


def child_env(capability: str) -> dict:
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "default":
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def logits(workdir: Path, capability: str, repeat: int) -> tuple[str, list]:
    import torch

    out = workdir / f"logits-{capability}-{repeat}.pt"
    proc = subprocess.run([sys.executable, "-c", LOGITS_CHILD, str(out)], capture_output=True, text=True,
                          env=child_env(capability), timeout=600)
    if proc.returncode:
        raise SystemExit(f"logits under {capability} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip(), torch.load(out)


def compare_logits(a: list, b: list) -> dict:
    import torch

    rel_norm = max(((x - y).norm() / y.norm()).item() for x, y in zip(a, b))
    flips = sum(int((x.argmax(-1) != y.argmax(-1)).sum()) for x, y in zip(a, b))
    top2 = torch.cat([y.topk(2, dim=-1).values for y in b])
    gaps = (top2[:, 0] - top2[:, 1]) / top2[:, 0].abs().clamp_min(1e-12)
    return {"rel_norm_max": rel_norm, "argmax_changes": flips, "positions": int(top2.shape[0]),
            "smallest_top1_top2_gap_rel": gaps.min().item()}


def train(workdir: Path, name: str, parallelism: str, capability: str) -> dict:
    """One torchrun of `nbkit train` (2 processes); its per-step losses and saved adapters."""
    from safetensors.torch import load_file

    from nbkit import RunConfig
    from nbkit.gpus.distributed import free_port

    cfg = RunConfig(**SETTINGS, parallelism=parallelism, output_dir=str(workdir / name))
    path = cfg.save(workdir / f"{name}.yaml")
    env = child_env(capability)
    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "nbkit",
                           "train", "--config", str(path)], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    report = json.loads((Path(cfg.output_dir) / "nbkit_report.json").read_text())
    adapters = load_file(str(Path(cfg.output_dir) / "lora_adapters" / "adapter_model.safetensors"))
    return {"losses": [loss for _, loss in report["losses"]], "adapters": adapters}


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def adapter_gap(a: dict, b: dict) -> dict:
    """How far two adapter sets are apart: the largest element difference as a fraction of the largest LoRA B
    value, and the norm of the difference of all LoRA B tensors (what the adapters add to the model is B·A, and
    A starts random while B starts at zero: B is what training wrote) relative to their norm."""
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in b)
    scale = max(b[k].float().abs().max().item() for k in b if "lora_B" in k)
    keys = [k for k in b if "lora_B" in k]
    diff = sum(((a[k].float() - b[k].float()) ** 2).sum().item() for k in keys) ** 0.5
    norm = sum((b[k].float() ** 2).sum().item() for k in keys) ** 0.5
    return {"max_element_over_max_b": worst / scale, "b_rel_norm": diff / norm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu_spread.json"))
    args = ap.parse_args()
    runs: dict[str, list] = {}
    forward: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="nbkit-spread-") as tmp:
        for repeat in range(args.repeats):
            for capability in CAPABILITIES:  # alternating
                picked, values = logits(Path(tmp), capability, repeat)
                forward.setdefault(capability, []).append(values)
                print(f"logits under {capability}: torch picked {picked}", flush=True)
                for parallelism in ("fsdp", "ddp"):
                    name = f"{parallelism}-{capability}-{repeat}"
                    print(f"running {name} …", flush=True)
                    runs.setdefault(f"{parallelism}-{capability}", []).append(
                        train(Path(tmp), name, parallelism, capability))
    forward_spread = {"avx2 vs default": compare_logits(forward["avx2"][0], forward["default"][0]),
                      "repeats": {c: max(compare_logits(v, forward[c][0])["rel_norm_max"] for v in forward[c])
                                  for c in CAPABILITIES}}
    print("torch forward, avx2 vs default:", forward_spread)
    first = {key: value[0] for key, value in runs.items()}
    pairs = {  # what is compared: (a, b)
        "fsdp vs ddp, default": ("fsdp-default", "ddp-default"),
        "fsdp vs ddp, avx2": ("fsdp-avx2", "ddp-avx2"),
        "ddp, avx2 vs default": ("ddp-avx2", "ddp-default"),
        "fsdp, avx2 vs default": ("fsdp-avx2", "fsdp-default"),
    }
    comparisons = {}
    for label, (a, b) in pairs.items():
        steps = [rel(x, y) for x, y in zip(first[a]["losses"], first[b]["losses"])]
        comparisons[label] = {"loss_rel_per_step": steps, "loss_rel_max": max(steps),
                              "adapters": adapter_gap(first[a]["adapters"], first[b]["adapters"])}
    repeat_spread = {key: max(max(rel(x, y) for x, y in zip(r["losses"], value[0]["losses"])) for r in value)
                     for key, value in runs.items()}
    print(f"\n{'comparison':<24} {'step-1 loss':>12} {'worst loss':>12} {'B rel norm':>11} {'max elem/max B':>15}")
    for label, c in comparisons.items():
        print(f"{label:<24} {c['loss_rel_per_step'][0]:>12.2e} {c['loss_rel_max']:>12.2e} "
              f"{c['adapters']['b_rel_norm']:>11.2e} {c['adapters']['max_element_over_max_b']:>15.2e}")
    print("repeats of one configuration, worst loss difference:", repeat_spread)
    result = {"cpu": cpu(), "torch_capability_default": _default_capability(), "repeats": args.repeats,
              "settings": SETTINGS, "logits": forward_spread, "fsdp_vs_ddp": comparisons, "repeat_spread": repeat_spread,
              "losses": {key: [r["losses"] for r in value] for key, value in runs.items()}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


def _default_capability() -> str:
    """The kernels torch picks on this CPU when nothing forces them."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                          capture_output=True, text=True, env=env).stdout.strip()


if __name__ == "__main__":
    main()

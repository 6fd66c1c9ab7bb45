"""A big data file with max_samples: checking and preparing must cost what the rows taken cost, not the file.

Writes a JSONL file of about --mb MB (alpaca rows of mixed length), then, one process per measurement and the
variants alternating --repeats times, times and measures the peak memory (the process's max RSS, less its RSS once
nbkit, the tokenizer and datasets are imported) of:
  check-16     data.check with max_samples=16 (what preflight runs before the model loads)
  prepare-16   data.prepare with max_samples=16 (tokenized, labelled), with the tiny model's tokenizer
  check-all    data.check of every row, for contrast
CPU only. Prints a table and writes bench/results/data_big_file.json.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, time
from nbkit import RunConfig
from nbkit.loading import data
variant, path = sys.argv[1], sys.argv[2]
tokenizer = None
if variant.startswith("prepare"):
    from transformers import AutoTokenizer
    from nbkit.loading.tiny import ensure_tiny_model
    import datasets  # imported before the baseline: its import is not the data's cost
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = RunConfig(dataset=path, max_samples=None if variant.endswith("all") else 16, max_seq_length=256)
start = time.perf_counter()
out = data.check(cfg) if variant.startswith("check") else data.prepare(cfg, tokenizer).summary()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"variant": variant, "seconds": seconds, "added_mib": (peak - base) / 1024, "said": out[:120]}))
"""


def write_file(path: Path, mb: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    words = "the a model data train answer question short long text token weight adapter memory".split()
    rows, size = 0, 0
    with open(path, "w") as fh:
        while size < mb * 1024 * 1024:
            length = int(rng.lognormvariate(5, 1)) + 5
            row = {"instruction": " ".join(rng.choices(words, k=12)), "output": " ".join(rng.choices(words, k=length))}
            line = json.dumps(row) + "\n"
            fh.write(line)
            size += len(line)
            rows += 1
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="check-16,prepare-16,check-all")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        rows = write_file(path, args.mb)
        size_mb = path.stat().st_size / 1024**2
        runs = []
        for repeat in range(args.repeats):
            for variant in args.variants.split(","):
                proc = subprocess.run([sys.executable, "-c", CHILD, variant, str(path)], capture_output=True,
                                      text=True, cwd=ROOT, check=True)
                runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "repeat": repeat})
                print(f"[{variant} #{repeat}] {runs[-1]['seconds']:.2f} s, +{runs[-1]['added_mib']:.0f} MiB", flush=True)
    summary = []
    for variant in args.variants.split(","):
        mine = [r for r in runs if r["variant"] == variant]
        summary.append({"variant": variant, "median_s": statistics.median(r["seconds"] for r in mine),
                        "max_s": max(r["seconds"] for r in mine),
                        "median_added_mib": statistics.median(r["added_mib"] for r in mine),
                        "max_added_mib": max(r["added_mib"] for r in mine), "repeats": len(mine)})
    print(f"\n{size_mb:.0f} MB, {rows:,} rows\n{'variant':<12}{'median s':>10}{'max s':>8}{'+MiB (median)':>15}"
          f"{'+MiB (max)':>12}")
    for s in summary:
        print(f"{s['variant']:<12}{s['median_s']:>10.2f}{s['max_s']:>8.2f}{s['median_added_mib']:>15.0f}"
              f"{s['max_added_mib']:>12.0f}")
    out = ROOT / "bench" / "results" / "data_big_file.json"
    out.write_text(json.dumps({"file_mb": size_mb, "rows": rows, "summary": summary, "runs": runs,
                               "machine": "CPU, 2 cores (the development machine)"}, indent=2))


if __name__ == "__main__":
    main()

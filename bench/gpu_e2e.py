"""The end-to-end workflow (nbkit.workflow.run) on a random-weight 1B-class Llama, per quantization.

python bench/gpu_e2e.py --arch 1b --quant 4bit,16bit,fp8 --steps 30
Asserts the loss falls and the adapters changed and were saved; writes bench/results/gpu_e2e.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import free_cuda, random_model, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--quant", default="4bit,16bit,fp8")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cap-gib", type=float, default=None, help="emulate a smaller GPU tier")
    args = ap.parse_args()
    from nbkit.loading import backend
    from nbkit.planning import hardware

    name = backend.ensure()
    from nbkit import workflow
    from nbkit.planning.config import RunConfig
    from nbkit.ui.progress import TrainingProgress

    if args.cap_gib:
        hardware.cap_memory(args.cap_gib)
    print(hardware.check_gpu().summary(), flush=True)
    path = random_model(args.arch)
    results = {}
    for quant in args.quant.split(","):
        free_cuda()
        out = Path(f"/tmp/nbkit-e2e/{args.arch}-{quant}")
        cfg = RunConfig(model=path, quantization=quant, max_seq_length=1024, batch_size=4, grad_accum=2,
                        max_steps=args.steps, learning_rate=5e-4, save_steps=max(1, args.steps // 2),
                        output_dir=str(out), backend=name)
        report = workflow.run(cfg, merged=False, observers=[TrainingProgress()], overwrite=True)
        first = sum(l for _, l in report.train.losses[:3]) / 3
        last = sum(l for _, l in report.train.losses[-3:]) / 3
        saved = sorted(p.name for p in Path(report.adapter_dir).iterdir())
        results[quant] = {**report.to_dict(), "first3_mean_loss": first, "last3_mean_loss": last,
                          "adapter_files": saved, "loss_fell": last < first}
        print(f"[{quant}] {report.summary()}\n  loss {first:.3f} -> {last:.3f}; files {saved}", flush=True)
        assert last < first, f"{quant}: loss did not fall ({first:.3f} -> {last:.3f})"
        assert report.verify.ok, f"{quant}: adapters unchanged"
        assert any(n.startswith("adapter_model") for n in saved), f"{quant}: no adapter file"
        del report
    write_json(f"gpu_e2e_{args.arch}.json", {"backend": name, "gpu": hardware.check_gpu().summary(),
                                              "results": results})
    print(json.dumps({q: {k: r[k] for k in ("first3_mean_loss", "last3_mean_loss", "tokens_per_second",
                                             "peak_vram_gib")} for q, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()

"""Command line: `nbkit check`, `nbkit estimate`, `nbkit train --config run.yaml`, `nbkit notebook NB`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _check(args) -> int:
    from .hardware import check_gpu

    gpu = check_gpu()
    print(gpu.summary())
    if args.model and gpu.available:
        from .memory import recommend
        from .specs import spec_for

        rec = recommend(spec_for(args.model), gpu)
        print(rec.summary())
        print(rec.reason)
    return 0


def _estimate(args) -> int:
    from .config import RunConfig
    from .memory import estimate
    from .specs import spec_for

    cfg = RunConfig(model=args.model, quantization=args.quantization, max_seq_length=args.seq,
                    batch_size=args.batch, lora_r=args.r)
    print(estimate(cfg, spec_for(args.model), args.backend).table())
    return 0


def _train(args) -> int:
    from . import backend
    from .config import RunConfig

    backend.ensure()
    from . import workflow

    from .distributed import is_main, shutdown

    cfg = RunConfig.load(args.config)
    try:
        report = workflow.run(cfg, merged=args.merged, gguf=args.gguf, progress=True, probe=args.probe)
    finally:
        shutdown()
    if is_main():
        print(report.summary())
    return 0 if report.ranks_agree else 1


def _notebook(args) -> int:
    """Run a notebook headless (papermill), with text progress instead of widgets."""
    import papermill

    os.environ["NBKIT_DISPLAY"] = "text"  # inherited by the kernel: no widget front end is attached
    src = Path(args.notebook)
    out = Path(args.output or Path("out") / src.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {k: _literal(v) for k, v in (args.param or [])}
    papermill.execute_notebook(str(src), str(out), parameters=params, log_output=True, progress_bar=False,
                               cwd=args.cwd)
    print(f"nbkit: executed {src} -> {out}")
    return 0


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nbkit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", help="describe the GPU and recommend settings for a model")
    p.add_argument("--model")
    p.set_defaults(fn=_check)
    p = sub.add_parser("estimate", help="predicted peak VRAM of a run")
    p.add_argument("model")
    p.add_argument("--quantization", default="4bit")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--backend", default="unsloth")
    p.set_defaults(fn=_estimate)
    p = sub.add_parser("train", help="run the whole workflow from a RunConfig YAML/JSON "
                                     "(data-parallel under torchrun / accelerate launch)")
    p.add_argument("--config", required=True)
    p.add_argument("--merged", action="store_true")
    p.add_argument("--gguf", action="store_true")
    p.add_argument("--probe", action="store_true",
                   help="first train 2 full-length steps at the batch; if they run out of memory, use the largest "
                        "batch that fits with more accumulation")
    p.set_defaults(fn=_train)
    p = sub.add_parser("notebook", help="execute a notebook headless")
    p.add_argument("notebook")
    p.add_argument("-o", "--output")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p.add_argument("--cwd")
    p.set_defaults(fn=_notebook)
    args = ap.parse_args(argv)
    from .errors import NbkitError

    try:
        return args.fn(args)
    except NbkitError as exc:
        print(f"nbkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

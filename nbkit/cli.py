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
    if args.model:
        from .recommend import recommend
        from .specs import spec_for

        spec = spec_for(args.model)  # an unknown or unreachable id is an error (exit 2), GPU or not
        if not gpu.available:
            print(f"{args.model}: {spec.total_params / 1e9:.1f}B parameters. Settings are recommended for a GPU; "
                  f"see `nbkit estimate {args.model}` for the memory a run would need.")
            return 0
        rec = recommend(spec, gpu, processes=args.processes)
        print(rec.summary())
        print(rec.reason)
    return 0


def _estimate(args) -> int:
    from .config import RunConfig
    from .memory import estimate
    from .specs import spec_for

    cfg = RunConfig(model=args.model, quantization=args.quantization, max_seq_length=args.seq,
                    batch_size=args.batch, lora_r=args.r, parallelism=args.parallelism)
    backend = "transformers" if args.parallelism == "fsdp" else args.backend  # sharding runs on transformers
    if args.processes > 1:
        mode = "sharded across" if args.parallelism == "fsdp" else "a whole copy on each of"
        print(f"per GPU, {mode} {args.processes} GPUs:")
    print(estimate(cfg, spec_for(args.model), backend, processes=args.processes).table())
    return 0


def _train(args) -> int:
    from . import backend
    from .config import RunConfig

    from .fsdp import sharded
    from .models import launch_parallelism

    cfg = RunConfig.load(args.config)  # a bad file fails here, before anything heavy is imported
    cfg = launch_parallelism(cfg)  # a sharded run trains on transformers: Unsloth is not imported for it
    engine = "transformers" if sharded(cfg) else cfg.backend
    backend.ensure(engine)
    from . import workflow
    from .distributed import is_main, shutdown
    from .errors import ExportError
    from .ui.progress import TrainingProgress

    try:
        report = workflow.run(cfg, merged=args.merged, gguf=args.gguf, observers=[TrainingProgress()],
                              probe=args.probe, resume=args.resume, overwrite=args.overwrite)
    except ExportError as exc:
        saved = getattr(exc, "saved_to", None)
        if saved:  # from a shell, `err.loaded` is out of reach: say where the rescue copy is
            raise ExportError(f"Training finished but the adapters could not be saved in {cfg.output_dir}; "
                              f"they were saved to {saved} instead.") from exc
        raise
    finally:
        shutdown()
    if is_main():
        print(report.summary())
    return 0 if report.ok else 1


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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an nbkit error")
    ap = argparse.ArgumentParser(prog="nbkit", parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", parents=[common], help="describe the GPU and recommend settings for a model")
    p.add_argument("--model")
    p.add_argument("--processes", type=int, default=1,
                   help="GPUs like this one the run will use: DDP if the model fits one, else sharded (FSDP)")
    p.set_defaults(fn=_check)
    p = sub.add_parser("estimate", parents=[common], help="predicted peak VRAM of a run")
    p.add_argument("model")
    p.add_argument("--quantization", default="4bit")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--backend", default="unsloth")
    p.add_argument("--processes", type=int, default=1, help="GPUs in the run (memory is shown per GPU)")
    p.add_argument("--parallelism", default="ddp", choices=["ddp", "fsdp"],
                   help="with several GPUs: a whole copy on each (ddp) or the model sharded across them (fsdp)")
    p.set_defaults(fn=_estimate)
    p = sub.add_parser("train", parents=[common], help="run the whole workflow from a RunConfig YAML/JSON "
                                     "(several GPUs under torchrun / accelerate launch: data-parallel, or sharded "
                                     "when the model fits only that way; see docs/sharding.md)")
    p.add_argument("--config", required=True)
    p.add_argument("--merged", action="store_true")
    p.add_argument("--gguf", action="store_true")
    p.add_argument("--probe", action="store_true",
                   help="first train 2 full-length steps at the batch; if they run out of memory, use the largest "
                        "batch that fits with more accumulation")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir from its newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the nbkit run already in output_dir")
    p.set_defaults(fn=_train)
    p = sub.add_parser("notebook", parents=[common], help="execute a notebook headless")
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
        if getattr(args, "debug", False):
            raise
        # the user's to fix: one message with the fix, no traceback (--debug shows it)
        print(f"nbkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

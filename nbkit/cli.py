"""Command line: `nbkit check`, `nbkit estimate`, `nbkit train --config run.yaml`, `nbkit notebook NB`."""
from __future__ import annotations

import argparse
import sys

from .cli_notebook import run_notebook


def _check(args) -> int:
    from .planning.hardware import check_gpu

    gpu = check_gpu()
    print(gpu.summary())
    if args.model:
        from .planning.recommend import recommend
        from .specs import spec_for

        spec = spec_for(args.model)  # an unknown or unreachable id is an error (exit 2), GPU or not
        if not gpu.available:
            active = f", {spec.active_params / 1e9:.1f}B active (mixture of experts)" if spec.is_moe else ""
            print(f"{args.model}: {spec.total_params / 1e9:.1f}B parameters{active}. Settings are recommended for a "
                  f"GPU; see `nbkit estimate {args.model}` for the memory a run would need.")
            return 0
        rec = recommend(spec, gpu, processes=args.processes)
        print(rec.summary())
        print(rec.reason)
    return 0


def _estimate(args) -> int:
    from .planning.config import RunConfig
    from .planning.memory import estimate
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
    from .gpus.fsdp import sharded
    from .loading import backend
    from .loading.models import launch_parallelism
    from .loading.tiny import with_suggested
    from .planning.config import RunConfig
    from .planning.config_files import read_mapping

    written = read_mapping(args.config)  # a bad file fails here, before anything heavy is imported
    cfg = with_suggested(RunConfig.from_dict(written), given=written)
    if args.packing is not None:
        cfg = cfg.replace(packing=args.packing)
    if args.report_to is not None:
        cfg = cfg.replace(report_to=args.report_to)
    cfg = launch_parallelism(cfg)  # a sharded run trains on transformers: Unsloth is not imported for it
    engine = "transformers" if sharded(cfg) else cfg.backend
    backend.ensure(engine)
    from .gpus.distributed import is_main, shutdown
    from .errors import RunFinished, TrainingInterrupted
    from .runner import Runner, training
    from .ui.progress import TrainingProgress

    work = training(cfg, engine=engine, merged=args.merged, gguf=args.gguf, probe=args.probe, resume=args.resume,
                    overwrite=args.overwrite, accept_changed_data=args.accept_changed_data)
    try:  # on this (the main) thread: Ctrl-C and SIGTERM stop the run at a step boundary, with a checkpoint
        report = Runner("nbkit-train").run(work, observers=[TrainingProgress()])
    except RunFinished as exc:  # asked to resume what is done: nothing to train is not a failure
        if getattr(exc, "pending", None) and not (args.merged or args.gguf):  # saved, but not all it was asked
            print(f"nbkit: {exc}", file=sys.stderr)
            return 1
        print(f"nbkit: {exc}")
        if args.merged or args.gguf:  # the exports asked for (a failed one, say) are made alone, from the folder
            from .exporting.export import from_run

            for kind, folder in from_run(cfg.output_dir, merged=args.merged, gguf="q8_0" if args.gguf else None
                                         ).items():
                print(f"nbkit: {kind}: {folder}")
        return 0
    except TrainingInterrupted as exc:  # the shell's convention: 128 + the signal's number
        print(f"nbkit: {exc}", file=sys.stderr)
        return 143 if exc.signal == "SIGTERM" else 130
    finally:
        shutdown()
    if is_main():
        print(report.summary())
        if not report.train.finished:
            print(f"nbkit: the run {report.train.state} at step {report.train.steps}/{report.train.total}; "
                  f"continue it with --resume.")
    return 0 if report.ok else 1


def _export(args) -> int:
    from .loading import backend
    from .training.outputs import read_marker

    marker = read_marker(args.run_dir) or {}
    backend.ensure(marker.get("config", {}).get("backend", "auto"))  # Unsloth before transformers, where it trains
    from .exporting.export import from_run

    written = from_run(args.run_dir, merged=args.merged, gguf=args.gguf, allow_unfinished=args.allow_unfinished)
    for kind, folder in written.items():
        print(f"nbkit: {kind}: {folder}")
    return 0


def _card(args) -> int:
    from .exporting.model_card import write_card

    print(f"nbkit: model card: {write_card(args.run_dir)}")
    return 0


def _push(args) -> int:
    from .exporting import hub_push

    what = ["lora", *(["merged"] if args.merged else []), *(["gguf"] if args.gguf else [])]
    quant = args.gguf or "q8_0"
    if args.dry_run:  # what would be uploaded, repo by repo: no token, no network
        print("\n".join(hub_push.describe(args.run_dir, args.repo_id, what, quant)))
        return 0
    from .loading import backend
    from .training.outputs import read_marker

    if hub_push.missing(args.run_dir, what, quant):  # exporting first loads the model: Unsloth before transformers
        backend.ensure((read_marker(args.run_dir) or {}).get("config", {}).get("backend", "auto"))
    from .exporting.export import push_to_hub

    result = push_to_hub(args.run_dir, args.repo_id, what, private=not args.public, gguf=quant,
                         allow_unfinished=args.allow_unfinished)
    print(result.summary())
    return 0


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
    p.add_argument("--accept-changed-data", action="store_true",
                   help="with --resume: continue even though the data file changed since the run trained on it")
    p.add_argument("--packing", choices=["auto", "on", "off"],
                   help="short rows share a sequence of up to max_seq_length tokens (replaces the config's packing)")
    p.add_argument("--report-to", choices=["none", "tensorboard", "trackio", "wandb"],
                   help="also log the run there (replaces the config's report_to; the run folder keeps its metrics)")
    p.set_defaults(fn=_train)
    p = sub.add_parser("export", parents=[common], help="export a run from its folder (never trains): LoRA "
                                                         "adapters, --merged 16-bit, --gguf q8_0")
    p.add_argument("run_dir", help="the run's folder (it holds nbkit_run.json)")
    p.add_argument("--merged", action="store_true", help="also merged 16-bit weights (merged_16bit/)")
    p.add_argument("--gguf", nargs="?", const="q8_0", default=None, metavar="QUANT",
                   help="also GGUF for llama.cpp/Ollama (default q8_0)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="export a run that stopped or was interrupted before its last step")
    p.set_defaults(fn=_export)
    p = sub.add_parser("card", parents=[common], help="write a run folder's model card (README.md, loss_curve.png)")
    p.add_argument("run_dir", help="the run's folder (it holds nbkit_run.json)")
    p.set_defaults(fn=_card)
    p = sub.add_parser("push", parents=[common], help="push a run to the Hugging Face Hub: LoRA adapters to REPO_ID, "
                                                       "--merged to REPO_ID-merged, --gguf to REPO_ID-GGUF")
    p.add_argument("run_dir", help="the run's folder (it holds nbkit_run.json)")
    p.add_argument("repo_id", help="owner/name on the Hub (a bare name goes under the token's account)")
    p.add_argument("--merged", action="store_true", help="also the merged 16-bit weights (REPO_ID-merged)")
    p.add_argument("--gguf", nargs="?", const="q8_0", default=None, metavar="QUANT",
                   help="also GGUF (REPO_ID-GGUF; default q8_0, e.g. q4_k_m)")
    p.add_argument("--public", action="store_true", help="create new repos public (default: private)")
    p.add_argument("--dry-run", action="store_true", help="list the files each repo would get; upload nothing")
    p.add_argument("--allow-unfinished", action="store_true", help="push a run that stopped before its last step")
    p.set_defaults(fn=_push)
    p = sub.add_parser("notebook", parents=[common], help="execute a notebook headless")
    p.add_argument("notebook")
    p.add_argument("-o", "--output")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p.add_argument("--cwd")
    p.set_defaults(fn=run_notebook)
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

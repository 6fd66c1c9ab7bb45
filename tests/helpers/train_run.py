"""One training run in its own process, for the resume tests: python train_run.py CONFIG OUT [--resume]
[--stall-at N]. With --stall-at, the run writes OUT/stalled after step N and waits there (up to 60 s, or
until OUT/go exists): the moment the test kills or interrupts it. At the end it writes OUT/result.json
(losses, steps, stopped, state) and saves the adapters to OUT/adapters; an interrupted run exits 130 (SIGINT)
or 143 (SIGTERM), as the CLI does."""
import argparse
import json
import sys
import time
from pathlib import Path

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.exporting import export, generate
from nbkit.training import train
from nbkit.errors import TrainingInterrupted
from nbkit.training.events import RunObserver

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("out")
ap.add_argument("--resume", action="store_true")
ap.add_argument("--stall-at", type=int, default=0)
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)


class Stall(RunObserver):
    def step_finished(self, info):
        if info.step == args.stall_at and info.loss is not None:
            (out / "stalled").write_text(str(info.step))
            deadline = time.time() + 60
            while time.time() < deadline and not (out / "go").exists():
                time.sleep(0.05)


cfg = RunConfig.load(args.config)
loaded = models.load(cfg)
prepared = data.prepare(cfg, loaded.tokenizer)
generate.generate(loaded, "Say hi.", max_new_tokens=3)  # as the workflow samples before training
code = 0
try:
    result = train.run(loaded, prepared, [Stall()], resume=args.resume)
except TrainingInterrupted as exc:  # a checkpoint was saved at the step boundary; the adapters are as trained
    print(exc)
    result, code = exc.result, 143 if exc.signal == "SIGTERM" else 130
export.save_lora(loaded, out / "adapters", allow_unfinished=True)
(out / "result.json").write_text(json.dumps({"losses": result.losses, "steps": result.steps,
                                              "stopped": result.stopped, "stop_reason": result.stop_reason,
                                              "state": result.state, "checkpoints": result.checkpoints,
                                              "resumed_from": result.resumed_from, "notes": result.notes}))
sys.exit(code)

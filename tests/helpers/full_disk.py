"""Run the nbkit CLI on a machine whose disk is full for rank 0's saves (ENOSPC), for the tests.

Usage: python full_disk.py ARGS... (as `python -m nbkit ARGS...`). By default the final save of the adapters
fails; set NBKIT_FULL_DISK_RESCUE=ok to let the rescue copy succeed (otherwise it fails too). With
NBKIT_FULL_DISK_AT=N the disk fills at the checkpoint of step N instead (the rescue copy can be written).
"""
import errno
import os
import sys

from nbkit.exporting import export
from nbkit.training import outputs
from nbkit.cli import main

rescue_ok = os.environ.get("NBKIT_FULL_DISK_RESCUE") == "ok"
at_step = int(os.environ.get("NBKIT_FULL_DISK_AT", "0"))
write = export._write_lora


def full(loaded, directory):
    if os.environ.get("RANK", "0") == "0" and not (rescue_ok and "rescued" in str(directory)):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return write(loaded, directory)


if at_step:
    from transformers import Trainer

    real = Trainer._save_optimizer_and_scheduler

    def full_at_step(self, output_dir):
        if self.state.global_step == at_step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output_dir)
        return real(self, output_dir)

    Trainer._save_optimizer_and_scheduler = full_at_step
else:
    export._write_lora = full
assert outputs  # the rescue folder comes from nbkit.training.outputs.rescue_dir, unchanged
sys.exit(main(sys.argv[1:]))

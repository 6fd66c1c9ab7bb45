"""Run the nbkit CLI on a machine whose disk is full for rank 0's saves (ENOSPC), for the tests.

Usage: python full_disk.py ARGS... (as `python -m nbkit ARGS...`). Set NBKIT_FULL_DISK_RESCUE=ok to let the
rescue copy succeed; otherwise it fails too.
"""
import errno
import os
import sys

from nbkit import export, outputs
from nbkit.cli import main

rescue_ok = os.environ.get("NBKIT_FULL_DISK_RESCUE") == "ok"
write = export._write_lora


def full(loaded, directory):
    if os.environ.get("RANK", "0") == "0" and not (rescue_ok and "rescued" in str(directory)):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return write(loaded, directory)


export._write_lora = full
assert outputs  # the rescue folder comes from nbkit.outputs.rescue_dir, unchanged
sys.exit(main(sys.argv[1:]))

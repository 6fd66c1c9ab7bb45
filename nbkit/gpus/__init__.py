"""nbkit, gpus: several GPUs: data parallel, sharded (FSDP), launched from a terminal or a notebook."""

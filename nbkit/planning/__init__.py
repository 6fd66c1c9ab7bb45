"""nbkit, planning: what the GPU holds and what a run will need, before anything loads."""

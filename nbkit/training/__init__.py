"""nbkit, training: a run under observation: its folder and states, checkpoints, events, failures."""

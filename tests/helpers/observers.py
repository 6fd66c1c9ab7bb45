"""Observers the tests attach to a run."""
from nbkit.training.events import RunObserver, StopControl


class StopAt(RunObserver):
    """Asks `stop` to end the run once step `step` has finished, as the launcher's Stop button does."""

    def __init__(self, step: int, stop: StopControl):
        self.step, self.stop = step, stop

    def step_finished(self, info):
        if info.step == self.step:
            self.stop.request("Stop button")

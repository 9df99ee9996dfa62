"""A callback for the resume tests: SIGKILLs its own process (no clean-up, as a crash or a pre-empted node)."""
import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """Kills the process when the batch that would make optimizer step ``step + 1`` starts."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

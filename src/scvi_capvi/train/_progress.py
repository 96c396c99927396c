"""An epoch progress bar that says which training stage is running."""

from __future__ import annotations

from lightning.pytorch.callbacks import ProgressBar
from scvi.utils import track


class StageProgressBar(ProgressBar):
    """One bar per stage, updated once per epoch, described as ``stage 2/3: frozen classifier``.

    A drop-in for scvi-tools' own epoch bar (``simple_progress_bar=True``), built on the same
    :func:`scvi.utils.track`, with the stage name in front of the epoch counter.

    Parameters
    ----------
    stage
        Text shown before the epoch counter, e.g. ``"stage 2/3: frozen classifier"``.
    """

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage
        self._enabled = True
        self.main_progress_bar = None

    def __getstate__(self):
        # tqdm objects cannot be pickled
        return {**self.__dict__, "main_progress_bar": None}

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self.main_progress_bar = track(
            None,
            total=trainer.max_epochs,
            description=self.stage,
            style="tqdm",
            disable=self.is_disabled,
        )

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        if self.is_enabled:
            epoch = trainer.current_epoch + 1
            self.main_progress_bar.set_description(
                f"{self.stage}, epoch {epoch}/{trainer.max_epochs}"
            )

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        if self.is_enabled:
            self.main_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.main_progress_bar.update()

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        if self.is_enabled and self.main_progress_bar is not None:
            self.main_progress_bar.close()

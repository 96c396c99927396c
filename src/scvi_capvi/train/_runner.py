"""A :class:`scvi.train.TrainRunner` that leaves the model usable when training stops early."""

from __future__ import annotations

import signal
import warnings

import torch
from lightning.pytorch.callbacks import Callback
from scvi import settings
from scvi.train import TrainRunner


class LastGoodState(Callback):
    """CPU copy of the module's parameters at the start and after each finished epoch.

    A copy is kept only when every floating-point tensor is finite, so it is the state to
    fall back to after a ``KeyboardInterrupt`` or a non-finite loss.
    """

    def __init__(self):
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch: int | None = None  # last finished epoch of this run (None: the start)
        self.n_epochs_done = 0

    def _snapshot(self, module: torch.nn.Module) -> bool:
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        if all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            self.state = state
            return True
        return False

    def on_train_start(self, trainer, pl_module):
        self._snapshot(pl_module.module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.n_epochs_done += 1
        if self._snapshot(pl_module.module):
            self.epoch = trainer.current_epoch


def _is_interrupt(exc: BaseException) -> bool:
    # Lightning 2.6 turns a KeyboardInterrupt into `sys.exit(1)` after its own clean-up
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt)
    )


class SafeTrainRunner(TrainRunner):
    """Train; if training stops on an exception, restore the last good parameters first.

    * ``KeyboardInterrupt`` (Ctrl+C, or raised by a callback): the module gets the parameters
      of the training plan's best epoch so far (CapVI's ``restore_best``) or else of the last
      finished epoch, is put in eval mode, ``history`` keeps the finished epochs, the model
      counts as trained if an epoch finished, Ctrl+C works again (Lightning ignores it after
      an interrupt) and ``KeyboardInterrupt`` is raised again (Lightning would exit the
      interpreter).
    * any other exception (e.g. the ``FloatingPointError`` of a non-finite loss): the same
      restoration, then the exception propagates unchanged.
    """

    def _run_training_core(self):
        keeper = LastGoodState()
        self.trainer.callbacks.append(keeper)
        try:
            sigint = signal.getsignal(signal.SIGINT)
        except ValueError:  # not the main thread
            sigint = None
        try:
            return super()._run_training_core()
        except BaseException as exc:
            if sigint is not None:
                try:
                    signal.signal(signal.SIGINT, sigint)
                except ValueError:
                    pass
            what = self._recover(keeper)
            if not _is_interrupt(exc):
                raise
            message = f"Training interrupted by KeyboardInterrupt: the model keeps {what}."
            warnings.warn(message, UserWarning, stacklevel=settings.warnings_stacklevel)
            raise KeyboardInterrupt(message) from None
        finally:
            if keeper in self.trainer.callbacks:
                self.trainer.callbacks.remove(keeper)

    def _recover(self, keeper: LastGoodState) -> str:
        """Put the last good parameters back; returns what they are, for the message."""
        module = self.model.module
        restore = getattr(self.training_plan, "state_after_failure", None)
        best = restore() if restore is not None else None
        if best is not None:
            state, what = best, "the parameters of the best epoch so far"
        elif keeper.state is not None:
            state = keeper.state
            what = (
                "the parameters from before this training run"
                if keeper.epoch is None
                else f"the parameters of epoch {keeper.epoch}, the last finished one"
            )
        else:
            state, what = None, "its current parameters (none finite to go back to)"
        if state is not None:
            module.load_state_dict(state)
        module.eval()
        if keeper.n_epochs_done:
            self.model.is_trained_ = True
        return what

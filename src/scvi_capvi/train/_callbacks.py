"""Lightning callbacks that every model of the package trains with.

* :class:`FiniteLossGuard` stops training at the first epoch with a non-finite loss;
* :class:`RestoreBestEpoch` puts back the parameters of the epoch with the best validation
  value of a metric when training ends;
* :class:`KeepUsableOnFailure` leaves the model usable when training stops on an exception
  (a non-finite loss, Ctrl+C, a failing callback).

None of them synchronises the host with the device at every step: the loss flags stay on
the device and are read once per epoch, and parameter copies stay on the module's device.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

VALIDATION_HINT = (
    "The training loss was finite, so the model overflows on some held-out cells: with a "
    "latent library size, cells with very large libraries can overflow exp(l); try "
    "`use_observed_lib_size=True`, or fewer genes."
)
TRAINING_HINT = "Check the input for non-count values, or lower the learning rate."


def _failure_prefix(pl_module) -> str:
    return getattr(pl_module, "failure_prefix", f"{type(pl_module.module).__name__} training")


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state on its own device (no transfer to the host)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    flags = [torch.isfinite(v).all() for v in state.values() if v.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True  # one host sync


class FiniteLossGuard(Callback):
    """Raise :class:`FloatingPointError` at the end of the first epoch whose training or
    validation loss is not finite, naming the epoch and the non-finite loss terms.

    The training loss of every step is folded into one flag on the device; the flag is read
    once per epoch (before validation, so a diverged training step is not reported as a
    validation failure). A step whose loss is not finite gets zero gradients, so no NaN
    reaches the parameters in the meantime. Validation losses are read from the epoch's
    aggregated metrics before early stopping sees them (which would otherwise end training
    silently).
    """

    def __init__(self):
        self._bad: torch.Tensor | None = None  # any step of this epoch non-finite
        self._step_ok: torch.Tensor | None = None  # this step's loss finite

    def on_train_epoch_start(self, trainer, pl_module):
        self._bad = None

    def on_before_backward(self, trainer, pl_module, loss):
        self._step_ok = torch.isfinite(loss.detach()).all()
        self._bad = ~self._step_ok if self._bad is None else self._bad | ~self._step_ok

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # a step with a non-finite loss changes no parameter through its gradient (selected on
        # the device, without reading the flag), so the parameters stay finite until the
        # end-of-epoch check raises
        if self._step_ok is None:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = torch.where(self._step_ok, p.grad, torch.zeros_like(p.grad))
        self._step_ok = None

    def _check_training(self, trainer, pl_module):
        bad = self._bad is not None and bool(self._bad)
        # under DDP every process stops together (a lone raise would leave the others waiting)
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        self._bad = None
        # the epoch's accumulated training metrics say which terms went non-finite
        terms = [
            name
            for name, metric in getattr(pl_module, "train_metrics", {}).items()
            if not torch.isfinite(getattr(metric, "elbo_component", torch.zeros(()))).all()
        ]
        self._raise(trainer, pl_module, "training", terms, TRAINING_HINT)

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._check_training(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._check_training(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        terms = [
            name
            for name, value in trainer.callback_metrics.items()
            if "validation" in name and not torch.isfinite(value).all()
        ]
        if terms:
            self._raise(trainer, pl_module, "validation", terms, VALIDATION_HINT)

    @staticmethod
    def _raise(trainer, pl_module, name, terms, hint):
        raise FloatingPointError(
            f"{_failure_prefix(pl_module)}: the {name} loss became non-finite at epoch "
            f"{trainer.current_epoch} (non-finite terms: {', '.join(terms) or 'loss'}). {hint}"
        )


class RestoreBestEpoch(Callback):
    """Keep the parameters of the epoch with the lowest validation ``monitor`` (a copy on the
    module's device, made only when it improves) and load them when training ends."""

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module):
        # runs after the epoch's metrics are aggregated, like Lightning's EarlyStopping
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value == value and (self.best_value is None or value < self.best_value):
            self.best_value, self.best_epoch = value, trainer.current_epoch
            self.best_state = _copy_state(pl_module.module)

    def on_train_end(self, trainer, pl_module):
        if self.best_state is not None:
            pl_module.module.load_state_dict(self.best_state)


class KeepUsableOnFailure(Callback):
    """When training stops on an exception: put back the best epoch's parameters (from a
    :class:`RestoreBestEpoch` among the trainer's callbacks), else those of the last finished
    epoch with finite parameters, else those from before training; call the training plan's
    ``on_failure`` (CapVI's unfreezes ``q(c|x)``); put the module in eval mode; keep the
    finished epochs' history in ``model.history_``; count the model as trained if an epoch
    finished. ``message`` then says which parameters the model kept.
    """

    def __init__(self, model):
        self.model = model
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch: int | None = None  # last finished epoch (None: the start of training)
        self.n_epochs_done = 0
        self.message: str | None = None

    def on_train_start(self, trainer, pl_module):
        self.state = _copy_state(pl_module.module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.n_epochs_done += 1
        state = _copy_state(pl_module.module)
        if _all_finite(state):
            self.state, self.epoch = state, trainer.current_epoch

    def on_exception(self, trainer, pl_module, exception):
        on_failure = getattr(pl_module, "on_failure", None)
        if on_failure is not None:
            on_failure()
        best = next(
            (
                cb
                for cb in trainer.callbacks
                if isinstance(cb, RestoreBestEpoch) and cb.best_state is not None
            ),
            None,
        )
        module = pl_module.module
        if best is not None:
            module.load_state_dict(best.best_state)
            self.message = "the parameters of the best epoch so far"
        elif self.state is not None:
            module.load_state_dict(self.state)
            self.message = (
                "the parameters from before this training run"
                if self.epoch is None
                else f"the parameters of epoch {self.epoch}, the last finished one"
            )
        else:
            self.message = "its current parameters"
        module.eval()
        history = getattr(trainer.logger, "history", None)
        if isinstance(history, dict) and history:
            self.model.history_ = dict(history)
        if self.n_epochs_done:
            self.model.is_trained_ = True

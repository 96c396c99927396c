"""scvi-tools' ``train`` with the package's callbacks: what every model trains through."""

from __future__ import annotations

import signal
import warnings

from scvi import settings
from scvi.model.base import UnsupervisedTrainingMixin

from ..train import FiniteLossGuard, KeepUsableOnFailure, RestoreBestEpoch


def default_log_every_n_steps(n_train_cells: int, batch_size: int) -> int:
    """Lightning's logging interval, at most one epoch's steps (it warns when an epoch has
    fewer steps than the interval, scvi-tools' default 10)."""
    return min(10, max(1, int(n_train_cells) // batch_size))


def has_tiny_last_batch(n_train_cells: int, batch_size: int) -> bool:
    """Whether the last training minibatch holds 1-2 cells: batch norm fails on a single
    cell ("Expected more than 1 value per channel"), so such a batch is dropped
    (``drop_last``), as scvi-tools advises; at most 2 cells are left out of each epoch."""
    return 0 < int(n_train_cells) % batch_size < 3


def _is_interrupt(exc: BaseException) -> bool:
    # Lightning turns a KeyboardInterrupt into `sys.exit(1)` after its own clean-up
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt)
    )


def _has_validation(train_size, validation_size, datasplitter_kwargs) -> bool:
    indexing = (datasplitter_kwargs or {}).get("external_indexing")
    if indexing is not None:
        return len(indexing) > 1 and len(indexing[1]) > 0
    if validation_size is not None:
        return validation_size > 0
    return train_size is None or train_size < 1


class RobustTrainingMixin(UnsupervisedTrainingMixin):
    """:meth:`scvi.model.base.UnsupervisedTrainingMixin.train`, plus:

    * the registered counts are checked again (they may have been normalised in place after
      ``setup_anndata``);
    * three callbacks (``scvi_capvi.train``): training stops at the first epoch with a
      non-finite loss (:class:`~scvi_capvi.train.FiniteLossGuard`); with validation cells the
      model ends on its best validation epoch (:class:`~scvi_capvi.train.RestoreBestEpoch`,
      on ``early_stopping_monitor``, validating every epoch); after a failure or Ctrl+C it
      keeps usable parameters and the finished epochs' history
      (:class:`~scvi_capvi.train.KeepUsableOnFailure`);
    * Ctrl+C raises :class:`KeyboardInterrupt` with a warning saying which parameters the
      model kept (Lightning would exit the interpreter), and Ctrl+C works again afterwards.
    """

    def train(
        self,
        max_epochs: int | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        datasplitter_kwargs: dict | None = None,
        **kwargs,
    ):
        self._check_training_data()
        return self._train_with_callbacks(
            max_epochs=max_epochs,
            train_size=train_size,
            validation_size=validation_size,
            datasplitter_kwargs=datasplitter_kwargs,
            **kwargs,
        )

    def _train_with_callbacks(
        self,
        max_epochs: int | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        datasplitter_kwargs: dict | None = None,
        **kwargs,
    ):
        """``train`` without the check of the counts (CapVI checks them once for all its
        stages)."""
        keeper = KeepUsableOnFailure(self)
        callbacks = [FiniteLossGuard(), keeper]
        if _has_validation(train_size, validation_size, datasplitter_kwargs):
            monitor = kwargs.get("early_stopping_monitor", "elbo_validation")
            callbacks.append(RestoreBestEpoch(monitor))
            # validate every epoch even without early stopping: the curves go into
            # `history` and the best epoch is chosen on them (scvi-tools would skip it)
            kwargs.setdefault("check_val_every_n_epoch", 1)
        # after the user's callbacks (they may change what is logged) and before the early
        # stopping that scvi-tools' Trainer appends (it must not see a non-finite loss)
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + callbacks
        try:
            sigint = signal.getsignal(signal.SIGINT)
        except ValueError:  # not the main thread
            sigint = None
        try:
            return UnsupervisedTrainingMixin.train(
                self,
                max_epochs=max_epochs,
                train_size=train_size,
                validation_size=validation_size,
                datasplitter_kwargs=datasplitter_kwargs,
                **kwargs,
            )
        except BaseException as exc:
            if sigint is not None:
                try:  # Lightning ignores Ctrl+C after an interrupt
                    signal.signal(signal.SIGINT, sigint)
                except ValueError:
                    pass
            if not _is_interrupt(exc):
                raise
            message = (
                "Training interrupted by KeyboardInterrupt: the model keeps "
                f"{keeper.message or 'its current parameters'}."
            )
            warnings.warn(message, UserWarning, stacklevel=settings.warnings_stacklevel)
            raise KeyboardInterrupt(message) from None

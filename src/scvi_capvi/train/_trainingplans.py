"""Training plan for CapVI's three stages (:cite:t:`Clivio22`, §3, "Training procedure")."""

from __future__ import annotations

from typing import Literal

import torch
from scvi.module.base import BaseModuleClass
from scvi.train import TrainingPlan

STAGES = ("warmup", "classifier", "frozen", "joint")
# Validation criterion each stage early-stops on (Clivio et al. 2022 §4.2).
STAGE_MONITORS = {
    "warmup": "reconstruction_loss_validation",
    "classifier": "classifier_cross_entropy_validation",
    "frozen": "reconstruction_loss_validation",
    "joint": "reconstruction_loss_validation",
}
# the GMVAE's warm-up runs before its stage 1 (history keys ``stage0_*``)
STAGE_NUMBERS = {"warmup": 0, "classifier": 1, "frozen": 2, "joint": 3}
STAGE_TITLES = {
    "warmup": "VAE warm-up",
    "classifier": "classifier",
    "frozen": "frozen classifier",
    "joint": "end to end",
}


class CapVITrainingPlan(TrainingPlan):
    """One stage of CapVI training, on top of :class:`scvi.train.TrainingPlan`.

    * ``stage="classifier"`` (stage 1): class-weighted cross-entropy of ``q(c|x)`` on annotated
      cells; only the classifier is optimised; early stopping on held-out standard
      cross-entropy (``classifier_cross_entropy_validation``).
    * ``stage="frozen"`` (stage 2): negative ELBO + mixing penalty with ``q(c|x)`` frozen
      (no gradient, eval mode so dropout is off): every classifier parameter stays bit-identical.
    * ``stage="joint"`` (stage 3): everything trainable is optimised end to end.
    * ``stage="warmup"`` (a GMVAE's first stage, before stage 1): as ``"frozen"``, and the
      mixture prior is frozen too (the model puts every centroid at 0 first, so the prior is
      ``N(0, sigma^2 I)`` and this stage trains a plain VAE).

    In stage 1 only ``q(c|x)`` is in train mode (the encoders that a GMVAE's stage-1 target
    reads stay in eval mode).

    Adam with ``eps=0.01`` as in the paper. The model trains every stage with the package's
    callbacks (``scvi_capvi.train``): a non-finite loss stops the stage, and the stage
    ends on the parameters of its best validation epoch.

    Parameters
    ----------
    module
        A :class:`~scvi_capvi.module.CapVIModule`.
    stage
        ``"classifier"``, ``"frozen"`` or ``"joint"``.
    lr, eps
        Adam learning rate and epsilon (paper: 1e-3, 0.01).
    n_epochs_kl_warmup
        KL warm-up epochs (default ``None``: no warm-up, as in the paper).
    classifier_lr
        Learning rate of stage 1 (default: ``lr``; the paper's grid has 0.004, 0.001, 0.00025).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        stage: Literal["warmup", "classifier", "frozen", "joint"] = "joint",
        lr: float = 1e-3,
        eps: float = 0.01,
        n_epochs_kl_warmup: int | None = None,
        classifier_lr: float | None = None,
        **kwargs,
    ):
        if stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}.")
        super().__init__(module, lr=lr, eps=eps, n_epochs_kl_warmup=n_epochs_kl_warmup, **kwargs)
        self.stage = stage
        if stage == "classifier" and classifier_lr is not None:
            self.lr = classifier_lr
        self._frozen_requires_grad: dict[str, bool] = {}
        self._epoch_sums: dict[str, tuple] = {}

    @property
    def stage_name(self) -> str:
        return f"stage {STAGE_NUMBERS[self.stage]} ({self.stage})"

    @property
    def failure_prefix(self) -> str:
        return f"CapVI {self.stage_name}"

    # -------------------------------------------------------------- freezing
    def _frozen_parameters(self) -> dict:
        if self.stage not in ("frozen", "warmup"):
            return {}
        frozen = {f"classifier.{n}": p for n, p in self.module.classifier.named_parameters()}
        if self.stage == "warmup":
            frozen.update({f"prior.{i}": p for i, p in enumerate(self.module.prior_parameters())})
        return frozen

    def on_fit_start(self):
        # with every centroid equal, q(c|x) changes no term of the warm-up's loss: skip it
        self.module.classifier_in_use = self.stage != "warmup"
        for name, p in self._frozen_parameters().items():
            self._frozen_requires_grad[name] = p.requires_grad
            p.requires_grad_(False)

    def on_train_epoch_start(self):
        # Lightning puts the whole module in train mode each epoch; a frozen q(c|x) stays in
        # eval mode so its dropout does not make the frozen stage stochastic in c.
        if self.stage in ("frozen", "warmup"):
            self.module.classifier.eval()
        elif self.stage == "classifier":
            for name, child in self.module.named_children():
                if name != "classifier":
                    child.eval()

    def _unfreeze(self):
        self.module.classifier_in_use = True
        for name, p in self._frozen_parameters().items():
            p.requires_grad_(self._frozen_requires_grad.get(name, True))

    def on_train_end(self):
        self._unfreeze()

    def on_failure(self):
        """Called by :class:`~scvi_capvi.train.KeepUsableOnFailure` when the stage stops on an
        exception: unfreezes ``q(c|x)``."""
        self._unfreeze()

    def configure_optimizers(self):
        if self.stage == "classifier":
            params = [p for p in self.module.classifier_parameters() if p.requires_grad]
            optimizer = self.get_optimizer_creator()(params)
            return {"optimizer": optimizer}
        return super().configure_optimizers()

    # -------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        if self.stage != "classifier":
            return super().training_step(batch, batch_idx)
        out = self.module.classification_loss(batch)
        self._accumulate_classifier_metrics("train", out)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        if self.stage != "classifier":
            return super().validation_step(batch, batch_idx)
        self._accumulate_classifier_metrics("validation", self.module.classification_loss(batch))

    def _accumulate_classifier_metrics(self, split: str, out: dict) -> None:
        """Stage 1: the loss, cross-entropy and accuracy, weighted by the minibatch's annotated
        cells (a minibatch without any then adds nothing)."""
        names = [
            f"{split}_loss",
            f"classifier_cross_entropy_{split}",
            f"classifier_accuracy_{split}",
        ]
        values = [out["loss"].detach(), out["cross_entropy"], out["accuracy"]]
        self._accumulate(split, names, values, out["n"].to(out["loss"].dtype))

    def _accumulate(self, split: str, names: list, values: list, weight) -> None:
        """Add ``weight * value`` for each metric, and ``weight``, to the epoch's sums of
        ``split``, kept on the device: no step waits for the host, and no step pays for
        Lightning's ``log`` (about a millisecond of host time per call, which on a GPU is a
        large part of a small model's step)."""
        if isinstance(weight, torch.Tensor):
            weight = weight.reshape(1)
        else:  # a number: filled on the device (a copy from the host would wait for it)
            weight = values[0].new_full((1,), float(weight))
        row = torch.cat([torch.stack(values) * weight, weight])
        previous = self._epoch_sums.get(split)
        self._epoch_sums[split] = (names, row if previous is None else previous[1] + row)

    def _log_epoch_means(self, split: str) -> None:
        """Log the epoch's weighted means of what :meth:`_accumulate` summed (one host sync
        per epoch); under DDP, the mean over every process."""
        names, sums = self._epoch_sums.pop(split, (None, None))
        if sums is None or float(sums[-1]) == 0:
            return
        for name, mean in zip(names, sums[:-1] / sums[-1], strict=True):
            self.log(name, mean, prog_bar=name == "train_loss", sync_dist=self.use_sync_dist)

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """:meth:`scvi.train.TrainingPlan.compute_and_log_metrics`, with the module's extra
        metrics (mixing penalty, classifier loss and accuracy) summed over the epoch here and
        logged at its end, as Lightning's epoch means (weighted by the minibatch's cells), and
        outside its ``torch.inference_mode``: metrics logged in inference mode cannot be
        reduced across processes under DDP (in-place update of an inference tensor)."""
        extra = dict(loss_output.extra_metrics or {})
        loss_output.extra_metrics = {}
        try:
            super().compute_and_log_metrics(loss_output, metrics, mode)
        finally:
            loss_output.extra_metrics = extra
        if extra:
            values = [value.detach().reshape(()) for value in extra.values()]
            names = [f"{key}_{mode}" for key in extra]
            self._accumulate(mode, names, values, loss_output.n_obs_minibatch)

    def on_train_epoch_end(self):
        self._log_epoch_means("train")
        super().on_train_epoch_end()

    def on_validation_epoch_end(self):
        self._log_epoch_means("validation")
        super().on_validation_epoch_end()

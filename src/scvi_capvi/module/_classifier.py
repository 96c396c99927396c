"""CapVI's cell-type classifier q(c|x) and its stage-1 objectives (:cite:t:`Clivio22`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import auto_move_data

from ._utils import normalize_log1p


class CellTypeClassifierMixin:
    """q(c|x) of a module with a ``classifier`` (logits from log1p-normalised counts), a
    ``prior`` (:class:`~scvi_capvi.module.GaussianMixturePrior`), ``n_labels``,
    ``use_labels`` and ``class_weights``."""

    def classifier_parameters(self):
        """Parameters of q(c|x) (stage 1 trains only these; stage 2 freezes them)."""
        return self.classifier.parameters()

    @auto_move_data
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(c|x) from raw counts (log1p of counts scaled to 10,000 per cell)."""
        return self.classifier(normalize_log1p(x))

    def labels_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean ``(n_cells,)``: the cell carries an annotation among the C known types."""
        labels = labels.view(-1)
        if not self.use_labels:
            return torch.zeros_like(labels, dtype=torch.bool)
        return labels < self.n_labels

    def classification_loss(self, tensors) -> dict[str, torch.Tensor]:
        """Stage-1 objective: class-weighted cross-entropy of q(c|x) on annotated cells (for a
        GMVAE without labels: cross-entropy to the components' posterior, see
        :meth:`~scvi_capvi.module.GaussianMixturePrior.component_logits`).

        Returns the weighted loss to optimise, and the standard cross-entropy, accuracy and
        number of annotated cells for logging and early stopping.
        """
        if not self.use_labels:
            return self.component_distillation_loss(tensors)
        x = tensors[REGISTRY_KEYS.X_KEY]
        labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
        mask = self.labels_mask(labels)
        n = mask.sum()
        if n == 0:
            zero = torch.zeros((), device=x.device, requires_grad=True)
            return {
                "loss": zero,
                "cross_entropy": zero.detach(),
                "accuracy": zero.detach(),
                "n": n,
            }
        logits = self.classify(x[mask])
        y = labels[mask]
        return {
            "loss": F.cross_entropy(logits, y, weight=self.class_weights),
            "cross_entropy": F.cross_entropy(logits, y).detach(),
            "accuracy": (logits.argmax(-1) == y).float().mean().detach(),
            "n": n,
        }

    def component_distillation_loss(self, tensors) -> dict[str, torch.Tensor]:
        """GMVAE stage 1: cross-entropy of q(c|x) to the components' posterior
        :meth:`~scvi_capvi.module.GaussianMixturePrior.component_logits` under the current
        encoder and prior (held fixed)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        # one pass gives q(c|x) and the encoder's q(z|x); only q(c|x) gets a gradient
        out = self.inference(**self._get_inference_input(tensors))
        logits, qz = out["class_logits"], out["qz"]
        with torch.no_grad():
            target = F.softmax(self.prior.component_logits(qz.loc, qz.scale.pow(2)), -1)
        loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()
        return {
            "loss": loss,
            "cross_entropy": loss.detach(),
            "accuracy": (logits.argmax(-1) == target.argmax(-1)).float().mean().detach(),
            "n": torch.tensor(x.shape[0], device=x.device),
        }

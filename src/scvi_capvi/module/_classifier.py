"""CapVI's cell-type classifier q(c|x) and its stage-1 objectives (:cite:t:`Clivio22`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import auto_move_data

from ._utils import normalize_log1p


def masked_classification_terms(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, class_weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-entropy of q(c|x) over the annotated cells (``mask``) of a minibatch: the
    class-weighted mean (``loss``, as ``F.cross_entropy(..., weight=class_weights)``), the
    plain mean and the accuracy; 0 when no cell is annotated.

    The unannotated cells get weight 0 instead of being indexed out, and nothing branches on
    their number: no host sync per step on a GPU.
    """
    y = torch.where(mask, labels, torch.zeros_like(labels))
    ce = F.cross_entropy(logits, y, reduction="none")
    weights = class_weights[y] * mask
    m = mask.to(ce.dtype)
    n = m.sum().clamp_min(1.0)
    correct = (logits.argmax(-1) == y).to(ce.dtype)
    return {
        "loss": (weights * ce).sum() / weights.sum().clamp_min(1e-12),
        "cross_entropy": (m * ce).sum() / n,
        "accuracy": (m * correct).sum() / n,
    }


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
        terms = masked_classification_terms(self.classify(x), labels, mask, self.class_weights)
        return {
            "loss": terms["loss"],
            "cross_entropy": terms["cross_entropy"].detach(),
            "accuracy": terms["accuracy"].detach(),
            "n": mask.sum(),
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

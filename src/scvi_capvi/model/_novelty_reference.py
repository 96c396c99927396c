"""The cells a CapVI keeps after training for its ``"neighbors"`` and ``"auto"`` novelty
scores (:meth:`~scvi_capvi.model.CapVI.get_novelty_score`): E_q[z] of annotated training and
validation cells, the validation cells' ``"ensemble"`` scores and the training batches."""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS

# the most reference / calibration cells whose E_q[z] the model keeps
MAX_STORED_CELLS = 20_000


def rank_among(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each score's share of calibration scores strictly below it: on ``[0, 1)``, and the
    calibration cells' own values are ``i / n`` (see ``get_novelty_threshold``)."""
    return np.searchsorted(np.sort(calibration), scores, side="left") / len(calibration)


class KeptReferenceMixin:
    """Keeps and uses the reference cells of the ``"neighbors"`` and ``"auto"`` scores."""

    def _auto_method(self, adata, indices) -> str:
        """``"neighbors"`` when every scored cell is of a batch the reference trained on."""
        adata = self._validate_query_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        mapping = np.asarray(
            manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)["categorical_mapping"]
        ).astype(str)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        codes = codes if indices is None else codes[np.asarray(indices)]
        batches = set(mapping[np.unique(codes)])
        return "neighbors" if batches <= set(self.novelty_reference_["batches"]) else "ensemble"

    def _auto_novelty(self, adata, indices, batch_size) -> np.ndarray:
        if getattr(self, "novelty_reference_", None) is None:
            return self.get_novelty_score(adata, indices, "ensemble", batch_size)
        method = self._auto_method(adata, indices)
        score = self.get_novelty_score(adata, indices, method, batch_size)
        if method == "neighbors":
            return score  # already the quantile among the kept validation cells
        return rank_among(self.novelty_reference_["calibration_ensemble"], score)

    def _store_reference(self, means: np.ndarray):
        """Keep, saved with the model: E_q[z] of (up to ``MAX_STORED_CELLS``) annotated
        training cells and of annotated validation cells for the ``"neighbors"`` score, the
        validation cells' ``"ensemble"`` scores for ``"auto"``, and the training batches."""
        try:
            validation = self._known_validation_indices()
        except ValueError:
            self.novelty_reference_ = None  # no calibration cells: no "neighbors" score
            return
        rng = np.random.default_rng(0)

        def subsample(n: int) -> np.ndarray:
            return np.sort(rng.choice(n, min(n, MAX_STORED_CELLS), replace=False))

        outputs = self._classifier_pass(
            None, validation[subsample(len(validation))], None, latent=True, reconstruction=True
        )
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        self.novelty_reference_ = {
            "reference": means[subsample(len(means))].astype(np.float32),
            "calibration": outputs[1].astype(np.float32),
            "calibration_ensemble": self._raw_novelty("ensemble", *outputs),
            "batches": np.asarray(mapping["categorical_mapping"]).astype(str),
        }

    def _stored_reference(self) -> dict[str, np.ndarray]:
        stored = getattr(self, "novelty_reference_", None)
        if stored is None:
            raise ValueError(
                "method='neighbors' needs the reference and validation cells' latent "
                "positions that `train` keeps when it has annotated validation cells "
                "(`train_size` < 1); this model has none (trained without validation cells, "
                "or saved before this score existed). Use another `method`."
            )
        return stored

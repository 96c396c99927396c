"""The cells a CapVI keeps after training for its ``"neighbors"`` and ``"auto"`` novelty
scores (:meth:`~scvi_capvi.model.CapVI.get_novelty_score`): E_q[z] of annotated training and
validation cells, the validation cells' ``"ensemble"`` scores and the training batches."""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS

from scvi_capvi.metrics import query_enrichment

# the most reference / calibration cells whose E_q[z] the model keeps
MAX_STORED_CELLS = 20_000
# the "neighbors" score: neighbours per cell (scArches' kNN label transfer uses 50)
N_NEIGHBORS = 50
# "auto" in a new batch: the fewest query cells its neighbour quantiles are re-ranked among
MIN_TYPICAL_CELLS = 50


def rank_among(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each score's share of calibration scores strictly below it: on ``[0, 1)``, and the
    calibration cells' own values are ``i / n`` (see ``get_novelty_threshold``)."""
    return np.searchsorted(np.sort(calibration), scores, side="left") / len(calibration)


class KeptReferenceMixin:
    """Keeps and uses the reference cells of the ``"neighbors"`` and ``"auto"`` scores."""

    def _of_reference_batches(self, adata, indices) -> bool:
        """Whether every scored cell is of a batch the reference trained on."""
        adata = self._validate_query_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        mapping = np.asarray(
            manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)["categorical_mapping"]
        ).astype(str)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        codes = codes if indices is None else codes[np.asarray(indices)]
        batches = set(mapping[np.unique(codes)])
        return batches <= set(self.novelty_reference_["batches"])

    def _auto_novelty(self, adata, indices, batch_size) -> np.ndarray:
        if getattr(self, "novelty_reference_", None) is None:
            return self.get_novelty_score(adata, indices, "ensemble", batch_size)
        if self._of_reference_batches(adata, indices):
            # already the quantile among the kept validation cells
            return self.get_novelty_score(adata, indices, "neighbors", batch_size)
        # a batch the reference never saw: the mean of the "neighbors" and "ensemble"
        # quantiles, the neighbour one first re-ranked among the query's typical cells
        logits, means, misfit = self._classifier_pass(
            adata, indices, batch_size, True, reconstruction=True
        )
        neighbors, calibration_neighbors = self._neighbor_quantiles(means)
        kept = self.novelty_reference_["calibration_ensemble"]
        ensemble = rank_among(kept, self._raw_novelty("ensemble", logits, means, misfit))
        # what the encoder leaves of the batch effect makes the query's known cells
        # query-enriched too (their neighbour quantiles run high): the query cells "ensemble"
        # finds typical of the known types (below the validation cells' median, or the
        # MIN_TYPICAL_CELLS lowest where fewer are) show how high, so each cell's neighbour
        # quantile is taken among theirs instead
        n_typical = max(int((ensemble < 0.5).sum()), min(MIN_TYPICAL_CELLS, len(ensemble)))
        typical = neighbors[np.argsort(ensemble, kind="stable")[:n_typical]]
        neighbors = rank_among(typical, neighbors)
        # the kept validation cells get the same mean (their own two quantiles), and the
        # query's is ranked among theirs: one threshold for every score "auto" returns
        calibration = (calibration_neighbors + rank_among(kept, kept)) / 2
        return rank_among(calibration, (neighbors + ensemble) / 2)

    def _neighbor_quantiles(self, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``"neighbors"`` score of the cells at ``means`` (scored together as one query)
        and of the kept validation cells scored against the same pool, both as quantiles
        among the latter (share strictly below)."""
        stored = self._stored_reference()
        scores, calibration = query_enrichment(
            stored["reference"], means, stored["calibration"], n_neighbors=N_NEIGHBORS
        )
        return rank_among(calibration, scores), rank_among(calibration, calibration)

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

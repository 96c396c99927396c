"""Unknown cell types and calibrated annotation for CapVI (:cite:t:`Clivio22`, §5, open question).

A cell of a type absent from the annotation is poorly explained by every prior mode
``N(mu_c, sigma_c^2 I)``: the mixture density at its posterior mean is low. The classifier
``q(c|x)`` gives a second, independent signal (its maximum probability and entropy, the only
guard scANVI reports, :cite:t:`Xu21`). Both become per-cell *novelty scores* (higher = more likely
an unknown type); a threshold set on validation cells of known types turns them into an
"unknown" call at a chosen false-unknown rate. The temperature of ``q(c|x)`` is in
``_calibration.py``; the cells kept for the ``"neighbors"`` score in ``_novelty_reference.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch
from scvi import REGISTRY_KEYS

from ._novelty_reference import KeptReferenceMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

NoveltyMethod = Literal[
    "auto",
    "neighbors",
    "ensemble",
    "latent",
    "reconstruction",
    "prior",
    "entropy",
    "max_prob",
    "combined",
]
NOVELTY_METHODS: tuple[str, ...] = get_args(NoveltyMethod)
DEFAULT_NOVELTY_METHOD = "auto"
# the scores without q(c|x), which a CapVI without labels (GMVAE) also has
_UNSUPERVISED_METHODS = ("auto", "neighbors", "ensemble", "latent", "reconstruction", "prior")
# the two independent signals that "combined" averages (as validation quantiles)
_COMBINED = ("latent", "entropy")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of class probabilities."""
    return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)


def conformal_threshold(scores: np.ndarray, false_unknown_rate: float) -> float:
    """Split-conformal threshold of a novelty score (Vovk et al. 2005; Angelopoulos & Bates
    2023).

    The ``ceil((n + 1)(1 - false_unknown_rate))``-th smallest of ``n`` calibration scores of
    known cells. A new cell exchangeable with them scores above it with probability at most
    ``false_unknown_rate`` and at least ``false_unknown_rate - 1 / (n + 1)`` (without ties),
    whatever the score's distribution.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    rank = int(np.ceil((n + 1) * (1 - false_unknown_rate)))
    if rank > n:
        raise ValueError(
            f"`false_unknown_rate`={false_unknown_rate!r} needs at least "
            f"{int(np.ceil((1 - false_unknown_rate) / false_unknown_rate - 1e-9))} calibration "
            "cells of known "
            f"types, got {n}."
        )
    return float(scores[max(rank, 1) - 1])


class NoveltyMixin(KeptReferenceMixin):
    """Novelty scores, unknown-type calls and temperature scaling of ``q(c|x)``."""

    # ------------------------------------------------------------------ model outputs
    @torch.inference_mode()
    def _classifier_pass(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        latent: bool,
        reconstruction: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw logits of ``q(c|x)``; with ``latent`` also the posterior means E_q[z]; with
        ``reconstruction`` also each cell's misfit (:meth:`_misfit`) as a third output."""
        self._check_if_trained(warn=False)
        adata = self._validate_query_anndata(adata)
        latent = latent or reconstruction
        if latent:
            # q(z|x,s) encodes the batch: a clear error for batches the model never saw
            self._check_known_batches(adata)
        if indices is None:
            indices = np.arange(adata.n_obs)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        # outputs written into arrays allocated once: per-minibatch outputs kept in lists
        # fragment the heap between the minibatches' temporaries (+0.46 GiB resident after a
        # pass over 135,000 cells, measured; nothing with these arrays)
        n = len(indices)
        logits = np.zeros((n, self.module.n_labels), np.float32)
        means = np.empty((n, self.module.n_latent), np.float32) if latent else None
        misfit = np.empty(n) if reconstruction else None
        start = 0
        for tensors in loader:
            x = tensors[REGISTRY_KEYS.X_KEY]
            stop = start + len(x)
            if not latent:
                logits[start:stop] = self.module.classify(x).cpu().numpy()
            else:
                out = self.module.inference(**self.module._get_inference_input(tensors))
                if out["class_logits"] is not None:
                    logits[start:stop] = out["class_logits"].cpu().numpy()
                means[start:stop] = out["qz"].loc.cpu().numpy()
                if reconstruction:
                    misfit[start:stop] = self._misfit(tensors, out).cpu().numpy()
            start = stop
        if reconstruction:
            return logits, means, misfit
        return logits, means

    def _misfit(self, tensors: dict, inference_outputs: dict) -> torch.Tensor:
        """Mean squared Pearson residual of a cell's counts, ``(x - mu)^2 / (mu + mu^2 / theta)``
        over genes, under the decoder's negative binomial at ``z = E_q[z]``: about 1 for cells
        the decoder explains, large for expression it never learnt to produce."""
        inference_outputs = {**inference_outputs, "z": inference_outputs["qz"].loc}
        px = self.module.generative(
            **self.module._get_generative_input(tensors, inference_outputs)
        )["px"]
        x = tensors[REGISTRY_KEYS.X_KEY].to(px.mu.device)
        x = x.to_dense() if x.layout != torch.strided else x
        variance = px.mu + px.mu**2 / px.theta
        return ((x - px.mu) ** 2 / variance).mean(-1)

    def _raw_novelty(self, method: str, logits, means, misfit=None) -> np.ndarray:
        if method == "neighbors":
            # the quantile among the calibration cells (share strictly below): the threshold
            # for a false-unknown rate is then the same for every query
            return self._neighbor_quantiles(means)[0]
        if method == "ensemble":
            parts = (self._raw_novelty("latent", logits, means), misfit)
            location = self.module.novelty_location.double().cpu().numpy()
            scale = self.module.novelty_scale.double().cpu().numpy()
            return sum((p - loc) / sc for p, loc, sc in zip(parts, location, scale))
        if method == "reconstruction":
            return misfit
        if method == "prior":
            with torch.inference_mode():
                z = torch.as_tensor(means, device=self.module.prior.means.device)
                return -self.module.prior.log_prob(z).cpu().numpy().astype(np.float64)
        if method == "latent":
            means = torch.as_tensor(means, dtype=torch.float64)
            centroids = self.module.latent_class_means.double().cpu()
            precision = self.module.latent_precision.double().cpu()
            # (z - m)' P (z - m) = z'Pz - 2 z'Pm + m'Pm: O(n (C + D)) memory, not the
            # (n, C, D) differences (GiBs for a million cells)
            projected = means @ precision
            mahalanobis = (
                (projected * means).sum(1, keepdim=True)
                - 2 * projected @ centroids.T
                + ((centroids @ precision) * centroids).sum(1)[None]
            )
            return mahalanobis.clamp_min(0).min(1).values.numpy()
        probs = self._probabilities(logits)
        if method == "max_prob":
            return 1.0 - probs.max(1)
        return entropy(probs)

    def _known_validation_indices(self) -> np.ndarray:
        """The annotated validation cells of the training AnnData (types known by design)."""
        val = getattr(self, "validation_indices", None)
        if val is None or len(val) == 0:
            raise ValueError(
                "This model has no validation cells (train with `train_size` < 1) to set a "
                "novelty reference from; pass `adata`/`indices` of cells of known types."
            )
        val = np.asarray(val)
        val = val[self._is_labelled(val)] if self.use_labels else val
        if len(val) == 0:
            raise ValueError("No annotated cell among the validation cells.")
        return val

    def _check_method(self, method: str):
        if method not in NOVELTY_METHODS:
            raise ValueError(f"`method` must be one of {NOVELTY_METHODS}, got {method!r}.")
        if method not in _UNSUPERVISED_METHODS and not self.use_labels:
            raise ValueError(
                f"method={method!r} needs the cell-type classifier and annotated validation "
                f"cells; a CapVI without labels (GMVAE) supports {_UNSUPERVISED_METHODS} only."
            )

    def get_novelty_score(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        method: NoveltyMethod = DEFAULT_NOVELTY_METHOD,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Per-cell novelty score: higher means more likely a cell type the model never saw.

        Methods
        -------
        ``"auto"`` (default)
            ``"neighbors"`` for cells of the batches the reference was trained on. For a
            batch it never saw (a query mapped with :meth:`load_query_data`), the mean of two
            quantiles: the ``"ensemble"`` score's among the annotated validation cells the
            model kept, and the ``"neighbors"`` score's among the query cells that
            ``"ensemble"`` finds typical of the known types (below the validation cells'
            median, or the 50 lowest where fewer are), ranked among the validation cells'
            own means. Either way the score is a quantile among the kept validation cells
            (in ``[0, 1]``), so :meth:`get_novelty_threshold` gives one threshold for both.
            Why, in a new batch: what the encoder leaves of the batch effect makes the
            query's known cells look query-enriched too (with ``"neighbors"`` alone, 17 % of
            them called unknown at a 5 % target on a Kang query, 32–62 % on a lung query
            from another protocol: ``docs/benchmarks/novelty.md``), and the query's
            typical cells show by how much; ``"ensemble"`` compares each cell with the
            reference's types alone. The threshold's guarantee assumes cells drawn like
            the validation cells, which a new batch is only approximately. A model saved
            before these cells were kept uses ``"ensemble"`` as it is.
        ``"neighbors"``
            How much of the cell's neighbourhood in the latent space is query rather than
            reference (:func:`~scvi_capvi.metrics.query_enrichment`): the cells scored
            together (``adata``/``indices``, the query) and the annotated training cells
            (up to 20,000, kept in the model at the end of :meth:`train`) form one pool, and
            each cell counts the query cells among its 50 nearest pool cells. A type the
            reference never had is surrounded by query cells only, even where it sits next to
            a known type; known types by both, in the pool's proportions. The count is
            returned as its quantile among the annotated validation cells (scored the same
            way, also kept in the model), so the score is in ``[0, 1]``. It is *transductive*:
            a cell's score depends on the other cells scored with it. Score a query as a
            whole (hundreds of cells or more); a type that makes up more of the query than
            of the reference (a composition shift) also scores higher.
        ``"ensemble"``
            ``"latent"`` plus ``"reconstruction"``, each centred on its median over the
            training cells and divided by its median absolute deviation there. Where a cell
            sits and how well the decoder explains its counts are two signals that fail on
            different types (a type near a known one; a type the encoder maps onto a known
            one), so their sum ranks unknown types best on average
            (``docs/benchmarks/novelty.md``).
        ``"reconstruction"``
            Mean squared Pearson residual of the cell's counts under the decoder's negative
            binomial at ``z = E_q[z]``, ``(x - mu)^2 / (mu + mu^2 / theta)`` averaged over
            genes: genes the model never learnt to express in such a cell score high.
        ``"prior"``
            ``-log p(E_q[z])`` with ``p(z) = sum_c phi_c N(z; mu_c, sigma_c^2 I)``, the
            cell-type mixture prior: a cell far from every centroid scores high.
        ``"latent"``
            Squared Mahalanobis distance of ``E_q[z]`` to the nearest cell type, with type
            means and a shared covariance estimated from the annotated training cells after
            training (Lee et al. 2018): the prior with ``mu_c, sigma`` replaced by where the
            encoder actually puts each type.
        ``"entropy"``
            Entropy of the (temperature-scaled) classifier ``q(c|x)``, in nats.
        ``"max_prob"``
            ``1 - max_c q(c|x)``: scANVI's maximum posterior probability (:cite:t:`Xu21`), turned
            into a novelty score.
        ``"combined"``
            Mean of the ``"latent"`` and ``"entropy"`` scores, each first mapped to its
            quantile among the annotated validation cells of the training data (so both are
            on [0, 1] and weigh the same). Use it when neither signal is known to dominate;
            the benchmark's leave-one-type-out evaluation reports each score's AUROC.

        Parameters
        ----------
        adata
            AnnData with the model's genes (a query may have unseen batches for the
            classifier-only methods); defaults to the training data.
        indices
            Cells to score; all if ``None``.
        method
            Which score (see above).
        batch_size
            Minibatch size.

        Returns
        -------
        ``(n_cells,)`` float array.
        """
        self._check_method(method)
        if method == "auto":
            return self._auto_novelty(adata, indices, batch_size)
        parts = _COMBINED if method == "combined" else (method,)
        if method in ("ensemble", "reconstruction"):
            outputs = self._classifier_pass(adata, indices, batch_size, True, reconstruction=True)
            return self._raw_novelty(method, *outputs)
        latent = bool({"prior", "latent", "neighbors"} & set(parts))
        logits, means = self._classifier_pass(adata, indices, batch_size, latent)
        if method != "combined":
            return self._raw_novelty(method, logits, means)
        ref_logits, ref_means = self._classifier_pass(
            None, self._known_validation_indices(), batch_size, latent=True
        )
        quantiles = []
        for part in parts:
            reference = np.sort(self._raw_novelty(part, ref_logits, ref_means))
            score = self._raw_novelty(part, logits, means)
            quantiles.append(np.searchsorted(reference, score, side="right") / len(reference))
        return np.mean(quantiles, axis=0)

    def get_novelty_threshold(
        self,
        false_unknown_rate: float = 0.05,
        method: NoveltyMethod = DEFAULT_NOVELTY_METHOD,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
    ) -> float:
        """Novelty threshold that calls at most ``false_unknown_rate`` of known cells unknown.

        A split-conformal threshold over calibration cells of
        known types: by default the annotated validation cells of the training data, held out
        of the gradient steps (and of the reference of the ``"latent"`` scores). For a new
        cell of a known type, drawn like them, ``P(score > threshold) <= false_unknown_rate``.
        Pass it to :meth:`predict` as ``unknown_threshold``.

        The ``"neighbors"`` and ``"auto"`` (default) scores are already quantiles among the
        calibration cells the model kept, so their threshold depends on nothing else
        (``adata``/``indices`` must be ``None``; pass ``method="ensemble"`` or another score
        to calibrate on cells of your own).
        """
        if not 0 < false_unknown_rate < 1:
            raise ValueError(
                f"`false_unknown_rate` must be in (0, 1), got {false_unknown_rate!r}."
            )
        if method == "auto" and getattr(self, "novelty_reference_", None) is None:
            method = "ensemble"
        if method in ("auto", "neighbors"):
            if adata is not None or indices is not None:
                raise ValueError(
                    f"method={method!r} is calibrated on the validation cells the model kept; "
                    "`adata` and `indices` must be None."
                )
            # each calibration cell's own score is its rank among them, i / n
            n = len(self._stored_reference()["calibration"])
            return conformal_threshold(np.arange(n) / n, false_unknown_rate)
        if adata is None and indices is None:
            indices = self._known_validation_indices()
        scores = self.get_novelty_score(adata, indices, method=method)
        return conformal_threshold(scores, false_unknown_rate)

    @torch.inference_mode()
    def _fit_latent_reference(self, indices: np.ndarray | None = None):
        """Class means and shared precision of ``E_q[z]`` for the ``"latent"`` score, then the
        median and median absolute deviation of the ``"latent"`` and ``"reconstruction"``
        scores that ``"ensemble"`` adds up.

        Uses the annotated training cells (every training cell, assigned to its most likely
        component, for a CapVI without labels): the validation cells stay out, so a threshold
        set on them (:meth:`get_novelty_threshold`) keeps its conformal guarantee.
        """
        keep_stored = self.is_query_ and self.novelty_reference_ is not None
        if indices is None:
            indices = np.asarray(self.train_indices)
        logits, means, misfit = self._classifier_pass(
            None, indices, None, latent=True, reconstruction=True
        )
        n_types = self.module.n_labels
        codes = self._label_codes(indices) if self.use_labels else logits.argmax(1)
        keep = codes < n_types
        means, codes = means[keep].astype(np.float64), codes[keep].astype(int)
        misfit = misfit[keep]
        if len(means) <= n_types:
            return
        counts = np.bincount(codes, minlength=n_types)
        centroids = np.zeros((n_types, means.shape[1]))
        np.add.at(centroids, codes, means)
        present = counts > 0
        centroids[present] /= counts[present, None]
        # a type absent from the training cells keeps its prior centroid
        centroids[~present] = self.module.prior.means.detach().cpu().numpy()[~present]
        residual = means - centroids[codes]
        cov = residual.T @ residual / (len(means) - present.sum())
        # a small ridge keeps the precision finite for dimensions the encoder left unused
        cov += 1e-4 * np.trace(cov) / len(cov) * np.eye(len(cov)) + 1e-8 * np.eye(len(cov))
        self.module.latent_class_means.copy_(torch.as_tensor(centroids))
        self.module.latent_precision.copy_(torch.as_tensor(np.linalg.inv(cov)))
        parts = np.stack([self._raw_novelty("latent", None, means), misfit], 1)
        location = np.median(parts, 0)
        spread = np.median(np.abs(parts - location), 0)
        self.module.novelty_location.copy_(torch.as_tensor(location))
        self.module.novelty_scale.copy_(torch.as_tensor(np.maximum(spread, 1e-8)))
        if not keep_stored:
            # a query model keeps the reference's cells: its own are what "neighbors" scores
            self._store_reference(means)

"""Seeded train / validation / test splits: of cells (:func:`cell_split`, the one seeded cell
split of the package and its scripts) and of batches (:func:`make_split`).

Held-out batches (datasets with >= 4 batches) are batches the models never saw. Models with a
batch covariate (CapVI, VampVI, SCVI, SCANVI, LinearSCVI) encode and decode such cells with the
first training batch as their covariate (``MODEL_BATCH_KEY``, :func:`add_model_batch`); the
test likelihood is then that of a model that has to explain an unseen batch with a seen one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from ._datasets import BATCH_KEY

MODEL_BATCH_KEY = "_benchmark_batch"
"""``obs`` column the models see as batch: the real batch, unseen batches mapped to a seen one."""


def cell_split(
    n_obs: int, fractions: tuple[float, float, float] = (0.5, 0.25, 0.25), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / validation / test split of cells (sorted index arrays).

    The cells are permuted with ``numpy.random.default_rng(seed)``; the first
    ``round(fractions[0] * n_obs)`` are the training cells, the next
    ``round(fractions[1] * n_obs)`` the validation cells, the rest the test cells.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1):
        raise ValueError(
            f"`fractions` must be 3 non-negative numbers summing to 1, got {fractions}"
        )
    perm = np.random.default_rng(seed).permutation(n_obs)
    n_train = int(round(fractions[0] * n_obs))
    n_val = int(round(fractions[1] * n_obs))
    parts = np.split(perm, [n_train, n_train + n_val])
    return tuple(np.sort(p) for p in parts)


@dataclass
class Split:
    """Seeded train / validation / test cells, by held-out batches or by cells."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    by: str
    batches: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def by_cells(
        cls, n_obs: int, fractions: tuple[float, float, float] = (0.5, 0.25, 0.25), seed: int = 0
    ) -> Split:
        """The cells of :func:`cell_split` (the same seed gives the same cells)."""
        return cls(*cell_split(n_obs, fractions, seed), by="cells")

    @property
    def fit(self) -> np.ndarray:
        """The training and validation cells: what a model is given (sorted)."""
        return np.sort(np.concatenate([self.train, self.validation]))

    @property
    def train_size(self) -> float:
        """Fraction of the fitted cells used for training (the rest: validation)."""
        return len(self.train) / len(self.fit)

    def describe(self) -> str:
        sizes = f"{len(self.train)}/{len(self.validation)}/{len(self.test)} cells"
        if self.by == "batches":
            parts = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.batches.items())
            return f"held-out batches ({parts}); {sizes}"
        return f"random cells 50/25/25; {sizes}"


def make_split(
    adata: AnnData,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    min_batches: int = 4,
) -> Split:
    """The split of :cite:p:`Clivio22` (§4): ``fractions`` of the *batches* when there are
    ``>= min_batches`` of them, else of the cells (:meth:`Split.by_cells`). Seeded; index
    arrays are sorted."""
    batch = adata.obs[BATCH_KEY].astype(str).to_numpy()
    names = np.unique(batch)
    if len(names) < min_batches:
        return Split.by_cells(adata.n_obs, fractions, seed)
    order = np.random.default_rng(seed).permutation(names)
    n_train = max(1, int(round(fractions[0] * len(names))))
    n_val = max(1, int(round(fractions[1] * len(names))))
    n_train = min(n_train, len(names) - 2)
    groups = {
        "train": sorted(order[:n_train]),
        "validation": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    idx = {k: np.flatnonzero(np.isin(batch, v)) for k, v in groups.items()}
    return Split(
        idx["train"],
        idx["validation"],
        idx["test"],
        "batches",
        {k: list(map(str, v)) for k, v in groups.items()},
    )


def add_model_batch(adata: AnnData, split: Split) -> None:
    """``obs[MODEL_BATCH_KEY]``: the batch, with batches absent from training mapped to the
    first training batch (see the module docstring)."""
    batch = adata.obs[BATCH_KEY].astype(str).to_numpy().copy()
    seen = np.unique(batch[split.fit])
    unseen = ~np.isin(batch, seen)
    batch[unseen] = seen[0]
    adata.obs[MODEL_BATCH_KEY] = pd.Categorical(batch, categories=seen)

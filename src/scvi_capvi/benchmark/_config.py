"""The benchmark's settings: how much every method trains and how much evaluation costs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from scvi_capvi._catalog import QUICK_SETTINGS
from scvi_capvi.metrics import PROBE_KS


@dataclass(frozen=True)
class BenchmarkConfig:
    """How much to train and evaluate.

    ``max_epochs=None`` uses each method's default cap with early stopping (the full run);
    an integer caps every stage of every model (early stopping stays on).
    """

    seed: int = 0
    max_epochs: int | None = None
    n_mc_samples: int = 1000
    probe_epochs: int = 100
    probe_ks: tuple[int, ...] = PROBE_KS
    scib_fast: bool = False
    n_pseudo_inputs: int = 500
    max_cells: int | None = None
    progress_bar: bool = True
    capvi_kwargs: dict = field(default_factory=dict)
    select: bool = False
    tune_backend: str = "auto"
    capvi_grid: dict | None = None
    classifier_grid: dict | None = None

    @classmethod
    def quick(cls, **overrides) -> BenchmarkConfig:
        """The ``--quick`` settings: tens of epochs, 100 importance samples, fast scIB metrics,
        at most 2,000 cells per dataset, a 2 x 2 CapVI grid."""
        return replace(cls(**QUICK_SETTINGS), **overrides)

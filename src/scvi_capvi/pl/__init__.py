"""Plots of the benchmark: UMAP grids, LISI distributions, confusion matrices, training curves."""

from ._plots import confusion_heatmap, lisi_distributions, training_curves, umap_grid

__all__ = ["confusion_heatmap", "lisi_distributions", "training_curves", "umap_grid"]

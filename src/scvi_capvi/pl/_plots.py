"""Figures of :cite:t:`Clivio22` (Fig. 1 confusion matrix, Fig. 2 LISI, UMAPs) and training curves.

Every function returns a :class:`matplotlib.figure.Figure` and shows nothing; save it with
``fig.savefig``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.figure import Figure

_STAGE_NAMES = {
    "stage1": "stage 1 (classifier)",
    "stage2": "stage 2 (frozen)",
    "stage3": "stage 3 (end to end)",
    "scvi": "SCVI pre-training",
}


def umap_grid(
    adata: AnnData,
    reps: Sequence[str] | Mapping[str, str],
    color: Sequence[str] = ("cell_type", "batch"),
    n_neighbors: int = 15,
    seed: int = 0,
    panel_size: float = 3.2,
) -> Figure:
    """One row per embedding, one column per ``obs`` key: UMAPs of each method's latent.

    The UMAP of ``adata.obsm[rep]`` (scanpy's ``neighbors`` + ``umap``, seeded) is stored in
    ``adata.obsm[f"X_umap_{rep}"]`` and reused when present.

    Parameters
    ----------
    adata
        Cells with the embeddings in ``obsm`` and the ``color`` keys in ``obs``.
    reps
        ``obsm`` keys, or title → ``obsm`` key.
    color
        ``obs`` columns, one panel each (e.g. cell type and batch).
    n_neighbors, seed
        UMAP neighbourhood size and seed.
    panel_size
        Inches per panel.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    reps = dict(reps) if isinstance(reps, Mapping) else {r: r for r in reps}
    color = [c for c in color if c in adata.obs]
    if not reps or not color:
        raise ValueError("umap_grid needs at least one embedding and one obs column to colour.")
    fig, axes = plt.subplots(
        len(reps),
        len(color),
        figsize=(panel_size * len(color) + 2.5, panel_size * len(reps)),
        squeeze=False,
    )
    for i, (title, rep) in enumerate(reps.items()):
        key = f"X_umap_{rep}"
        if key not in adata.obsm:
            view = AnnData(np.zeros((adata.n_obs, 1), dtype=np.float32), obs=adata.obs[[]])
            view.obsm["rep"] = np.asarray(adata.obsm[rep])
            sc.pp.neighbors(
                view,
                use_rep="rep",
                n_neighbors=min(n_neighbors, adata.n_obs - 1),
                random_state=seed,
            )
            sc.tl.umap(view, random_state=seed)
            adata.obsm[key] = view.obsm["X_umap"]
        for j, col in enumerate(color):
            ax = axes[i, j]
            sc.pl.embedding(
                adata,
                basis=key,
                color=col,
                ax=ax,
                show=False,
                frameon=False,
                legend_loc="right margin" if i == 0 else None,
                title=f"{title}: {col}",
                size=8,
            )
    fig.tight_layout()
    return fig


def lisi_distributions(
    values: Mapping[str, Mapping[str, np.ndarray]],
    kind: str = "box",
    metrics: Sequence[str] = ("cLISI", "iLISI"),
) -> Figure:
    """Per-cell LISI distributions by method, as :cite:t:`Clivio22`, Fig. 2 (one panel per metric).

    Parameters
    ----------
    values
        Method → metric name → ``(n_cells,)`` per-cell values (e.g. ``{"CapVI": {"cLISI":
        clisi(...), "iLISI": pairwise_ilisi(...)}}``).
    kind
        ``"box"`` or ``"violin"``.
    metrics
        Metric names, one panel each; methods lacking a metric are left out of its panel.
    """
    import matplotlib.pyplot as plt

    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}.")
    metrics = [m for m in metrics if any(m in v for v in values.values())]
    if not metrics:
        raise ValueError("No method has any of the requested LISI values.")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        names = [name for name, v in values.items() if metric in v]
        data = [np.asarray(values[name][metric], dtype=float) for name in names]
        if kind == "box":
            ax.boxplot(data, showfliers=False)
        else:
            ax.violinplot(data, showmedians=True)
        ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=45, ha="right")
        ax.set_ylabel(metric)
        better = "lower" if metric.lower().startswith("c") else "higher"
        ax.set_title(f"{metric} per cell ({better} is better)")
    fig.tight_layout()
    return fig


def confusion_heatmap(
    table: pd.DataFrame, title: str = "classifier confusion (rows: true type)", annotate=True
) -> Figure:
    """Heatmap of a confusion table (:func:`scvi_capvi.metrics.confusion_matrix`), as Fig. 1."""
    import matplotlib.pyplot as plt

    values = table.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n_cols, 0.8 + 0.5 * n_rows))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(1.0, values.max()), aspect="auto")
    ax.set_xticks(np.arange(n_cols), [str(c) for c in table.columns], rotation=60, ha="right")
    ax.set_yticks(np.arange(n_rows), [str(r) for r in table.index])
    ax.set_xlabel(table.columns.name or "predicted")
    ax.set_ylabel(table.index.name or "true")
    ax.set_title(title)
    if annotate:
        for (r, c), v in np.ndenumerate(values):
            text = f"{v:.2f}" if v < 1 or not float(v).is_integer() else f"{int(v)}"
            ax.text(
                c,
                r,
                text,
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v > 0.6 * values.max() else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _stage_of(key: str) -> tuple[str, str]:
    match = re.match(r"(stage\d+|scvi)_(.*)", key)
    return (match.group(1), match.group(2)) if match else ("training", key)


def training_curves(
    history: Mapping[str, pd.DataFrame],
    title: str | None = None,
) -> Figure:
    """Training and validation loss per epoch, one panel per training stage.

    Parameters
    ----------
    history
        ``model.history`` of an scvi-tools model; CapVI's keys are prefixed ``stage1_``,
        ``stage2_``, ``stage3_`` (one panel each; its copy of the last stage under unprefixed
        names is not drawn twice), other models get one panel.
    title
        Figure title.
    """
    import matplotlib.pyplot as plt

    stages: dict[str, dict[str, pd.DataFrame]] = {}
    staged = any(key.startswith("stage") for key in history)
    for key, frame in history.items():
        if staged and not key.startswith("stage"):
            continue  # CapVI's last stage, repeated under scvi-tools' names
        stage, name = _stage_of(key)
        stages.setdefault(stage, {})[name] = frame
    curves = {}
    for stage, keys in stages.items():
        chosen = {}
        for label, candidates in (
            ("train", ("train_loss_epoch", "train_loss")),
            ("validation", ("validation_loss",)),
        ):
            for name in candidates:
                if name in keys and len(keys[name]):
                    chosen[label] = keys[name]
                    break
        if chosen:
            curves[stage] = chosen
    if not curves:
        raise ValueError("history has no train_loss / validation_loss curve.")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (stage, chosen) in zip(axes[0], curves.items()):
        for label, frame in chosen.items():
            y = np.asarray(frame.iloc[:, 0], dtype=float)
            ax.plot(np.arange(1, len(y) + 1), y, label=label, marker="." if len(y) < 30 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(_STAGE_NAMES.get(stage, stage))
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

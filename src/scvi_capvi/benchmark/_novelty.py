"""Leave-one-type-out evaluation of unknown-type detection and calibration
(:cite:p:`Clivio22`, §5).

For each annotated cell type in turn, the type is hidden from training and the trained model
scores cells it has not seen: can it tell the hidden type's cells from the known ones, does it
still label the known ones right, and are its probabilities calibrated? scANVI's maximum
posterior probability and entropy :cite:p:`Xu21` on the same split are the baselines.

Three protocols (``mode``):

* ``"unlabelled"``: the hidden type's cells stay in the training data, unannotated;
* ``"removed"``: they are removed from the training data (a reference that never had them);
* ``"query"``: the reference is every batch but ``query_batches``, without the hidden type;
  the query batches (all types) are mapped onto it with ``load_query_data`` (scArches,
  :cite:p:`Lotfollahi21`) and scored, as a new patient or lab would be.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData
from tqdm.auto import tqdm

from scvi_capvi.metrics import expected_calibration_error, query_enrichment
from scvi_capvi.model import CapVI
from scvi_capvi.model._novelty import (
    DEFAULT_NOVELTY_METHOD,
    NOVELTY_METHODS,
    conformal_threshold,
    entropy,
)
from scvi_capvi.model._novelty_reference import N_NEIGHBORS

from ._datasets import UNLABELED
from ._novelty_scoring import _auroc, _capvi_row, _unknown_call_metrics
from ._recipes import (
    ARCHES_NETWORK,
    SCARCHES_QUERY_TRAIN,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi_as_users_run_it,
)
from ._splits import Split

Mode = Literal["unlabelled", "removed", "query"]
MODES = ("unlabelled", "removed", "query")
_QUIET = {"enable_progress_bar": False}


@dataclass
class _Task:
    """What one protocol gives the models: reference cells, query cells and their types."""

    reference: AnnData
    query: AnnData
    y_query: np.ndarray
    train_size: float


def _tasks(adata, labels_key, batch_key, mode, query_batches, fractions, seed) -> _Task:
    labels = adata.obs[labels_key].astype(str).to_numpy()
    if mode == "query":
        batches = adata.obs[batch_key].astype(str).to_numpy()
        is_query = np.isin(batches, [str(b) for b in query_batches])
        reference, query, y_query = (
            adata[~is_query].copy(),
            adata[is_query].copy(),
            labels[is_query],
        )
        train_size = fractions[0] / (fractions[0] + fractions[1])
    else:
        split = Split.by_cells(adata.n_obs, fractions, seed)
        reference, query, y_query = (
            adata[split.fit].copy(),
            adata[split.test].copy(),
            labels[split.test],
        )
        train_size = split.train_size
    # nothing about the query cells' types is given away
    query.obs[labels_key] = pd.Categorical([UNLABELED] * query.n_obs)
    return _Task(reference, query, y_query, train_size)


def _training_cells(ref: AnnData, labels_key: str, hidden: str, mode: Mode) -> AnnData:
    labels = ref.obs[labels_key].astype(str).to_numpy()
    if mode == "unlabelled":
        ref = ref.copy()
        ref.obs[labels_key] = pd.Categorical(np.where(labels == hidden, UNLABELED, labels))
    else:
        ref = ref[labels != hidden].copy()
        ref.obs[labels_key] = pd.Categorical(labels[labels != hidden])
    return ref


def _fit_capvi(ref, task, mode, labels_key, batch_key, capvi_kwargs, train_kwargs, query_kwargs):
    """CapVI on the reference; in the query protocol also the query model (else ``None``)."""
    fit = fit_capvi(
        ref,
        task.train_size,
        labels_key=labels_key,
        batch_key=batch_key,
        model_kwargs=capvi_kwargs,
        train_kwargs=train_kwargs,
    )
    if mode != "query":
        return fit, None
    query_model = CapVI.load_query_data(task.query.copy(), fit.model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No annotated cell")
        query_model.train(**{**_QUIET, "max_epochs": 100, **(query_kwargs or {})})
    return fit, query_model


def _scanvi_row(
    ref, task, mode, labels_key, batch_key, scvi_max_epochs, scanvi_kwargs, y, is_hidden, rate
) -> dict:
    """SCANVI as scvi-tools' tutorials run it, scored by max-probability and entropy."""
    network = ARCHES_NETWORK if mode == "query" else {}
    data = ref.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scvi_fit = fit_scvi_as_users_run_it(
            data,
            task.train_size,
            batch_key=batch_key,
            max_epochs=scvi_max_epochs,
            model_kwargs=network,
            train_kwargs=_QUIET,
        )
        fit = fit_scanvi_from_scvi(
            scvi_fit,
            labels_key=labels_key,
            unlabeled_category=UNLABELED,
            train_size=task.train_size,
            train_kwargs={**_QUIET, **(scanvi_kwargs or {})},
        )
    model = fit.model
    if mode == "query":
        query = task.query.copy()
        scvi.model.SCANVI.prepare_query_anndata(query, model)
        query_model = scvi.model.SCANVI.load_query_data(query, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            query_model.train(**SCARCHES_QUERY_TRAIN, **_QUIET)
        probs = query_model.predict(soft=True)
        query_latent = query_model.get_latent_representation()
    else:
        probs = model.predict(task.query, soft=True)
        query_latent = model.get_latent_representation(task.query)
    annotated = data.obs[labels_key].astype(str).to_numpy() != UNLABELED
    known_val = np.asarray(model.validation_indices)
    known_val = known_val[annotated[known_val]]
    known_train = np.asarray(model.train_indices)
    known_train = known_train[annotated[known_train]]
    val_probs = model.predict(data, indices=known_val, soft=True).to_numpy()
    # CapVI's "neighbors" score on SCANVI's latent space: is the gain the score or the space?
    enrichment, calibration = query_enrichment(
        model.get_latent_representation(data, indices=known_train),
        query_latent,
        model.get_latent_representation(data, indices=known_val),
        n_neighbors=N_NEIGHBORS,
    )
    p = probs.to_numpy()
    pred = probs.columns.to_numpy().astype(str)[p.argmax(1)]
    row = {
        "auroc_scanvi_max_prob": _auroc(is_hidden, 1 - p.max(1)),
        "auroc_scanvi_entropy": _auroc(is_hidden, entropy(p)),
        "auroc_scanvi_neighbors": _auroc(is_hidden, enrichment),
        "scanvi_ece": expected_calibration_error(p[~is_hidden], y[~is_hidden], probs.columns),
        "scanvi_seconds": fit.seconds,
    }
    threshold = conformal_threshold(1 - val_probs.max(1), rate)
    row.update(_unknown_call_metrics("scanvi_", y, pred, 1 - p.max(1) > threshold, is_hidden))
    return row


def leave_one_type_out(
    adata: AnnData,
    *,
    labels_key: str = "cell_type",
    batch_key: str | None = "batch",
    hidden_types: list[str] | None = None,
    mode: Mode = "removed",
    query_batches: list[str] | None = None,
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    false_unknown_rate: float = 0.05,
    unknown_method: str = DEFAULT_NOVELTY_METHOD,
    capvi_kwargs: dict | None = None,
    capvi_train_kwargs: dict | None = None,
    query_train_kwargs: dict | None = None,
    scanvi: bool = True,
    scvi_max_epochs: int | None = None,
    scanvi_train_kwargs: dict | None = None,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Hide each cell type from training in turn and score unknown-type detection.

    Parameters
    ----------
    adata
        Raw counts with ``obs[labels_key]`` (and ``obs[batch_key]``).
    labels_key, batch_key
        Cell-type and batch columns.
    hidden_types
        Types to hide, one run each; default every type.
    mode
        ``"removed"`` (default), ``"unlabelled"`` or ``"query"`` (see the module docstring).
    query_batches
        The query's batches (``mode="query"`` only).
    fractions, seed
        ``"removed"``/``"unlabelled"``: seeded train / validation / test fractions of the
        cells (test cells are scored). ``"query"``: the reference's cells are split into
        training and validation cells in the ratio of the first two fractions.
    false_unknown_rate
        Target fraction of known cells called unknown: the split-conformal threshold over the
        reference's validation cells (for CapVI and for SCANVI's max-probability).
    unknown_method
        The CapVI novelty score used for the unknown call.
    capvi_kwargs, capvi_train_kwargs
        Passed to :class:`~scvi_capvi.model.CapVI` and its ``train``.
    query_train_kwargs
        ``train`` arguments of CapVI's query model (default ``max_epochs=100``).
    scanvi
        Also run scvi-tools' SCANVI as its tutorials do (SCVI at its defaults, then
        ``SCANVI.from_scvi_model``; in the query protocol the scArches tutorial's network,
        ``load_query_data`` and its query training).
    scvi_max_epochs, scanvi_train_kwargs
        Epochs of the SCVI pre-training (default scvi-tools' heuristic) and
        ``SCANVI.train`` arguments (default the tutorial's).
    progress_bar
        Show progress over the hidden types.

    Returns
    -------
    One row per hidden type: AUROC of every CapVI novelty score (``auroc_<method>``) and of
    SCANVI's ``1 - max posterior`` and entropy for hidden-vs-known query cells. For CapVI
    (no prefix) and SCANVI (``scanvi_``) with the unknown option: accuracy on the known query
    cells without (``known_accuracy``) and with it (``known_accuracy_with_unknown``; an
    unknown call counts as an error), the fraction of known cells called unknown
    (``false_unknown_rate``, to compare with the target) and of hidden-type cells
    (``hidden_called_unknown``). ECE of the soft predictions on known query cells before and
    after temperature scaling.

    ``frame.attrs["scores"]`` holds, per hidden type, CapVI's per-cell scores of the query
    cells (every method, as ``get_novelty_score`` returns them), ``is_hidden``, the
    ``"latent"``, ``"reconstruction"`` and ``"max_prob"`` scores of the annotated validation
    cells (``calibration_<method>``, what :meth:`get_novelty_threshold` uses; also
    ``calibration_neighbors`` where every validation cell was kept), whether the classifier
    is right on them and on the query cells (``calibration_correct``,
    ``predicted_correct``) and the ensemble's
    ``novelty_location`` / ``novelty_scale``: enough to score another combination without
    training again.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    if labels_key not in adata.obs:
        raise KeyError(f"`labels_key` {labels_key!r} is not a column of adata.obs.")
    if unknown_method not in NOVELTY_METHODS:
        raise ValueError(f"`unknown_method` must be one of {NOVELTY_METHODS}.")
    if mode == "query":
        if batch_key is None or batch_key not in adata.obs:
            raise ValueError("mode='query' needs a `batch_key` column of adata.obs.")
        batches = set(adata.obs[batch_key].astype(str))
        if not query_batches or not set(map(str, query_batches)) < batches:
            raise ValueError(
                "mode='query' needs `query_batches`: some but not all of the batches "
                f"{sorted(batches)}; got {query_batches!r}."
            )
    elif query_batches is not None:
        raise ValueError("`query_batches` is only used with mode='query'.")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    types = np.unique(labels)
    hidden_types = list(types) if hidden_types is None else list(hidden_types)
    missing = sorted(set(hidden_types) - set(types))
    if missing:
        raise ValueError(f"`hidden_types` not among the labels of {labels_key!r}: {missing}")
    if len(types) < 3:
        raise ValueError("Leave-one-type-out needs at least 3 cell types (2 stay known).")

    task = _tasks(adata, labels_key, batch_key, mode, query_batches, fractions, seed)
    y = task.y_query
    capvi_train_kwargs = {**_QUIET, **(capvi_train_kwargs or {})}
    rows, per_cell = [], {}
    for hidden in tqdm(
        hidden_types, desc=f"leave one type out ({mode})", disable=not progress_bar
    ):
        start = time.perf_counter()
        ref = _training_cells(task.reference, labels_key, hidden, mode)
        fit, query_model = _fit_capvi(
            ref,
            task,
            mode,
            labels_key,
            batch_key,
            capvi_kwargs,
            capvi_train_kwargs,
            query_train_kwargs,
        )
        is_hidden = y == hidden
        row: dict[str, object] = {
            "hidden_type": hidden,
            "mode": mode,
            "n_query_hidden": int(is_hidden.sum()),
            "n_query_known": int((~is_hidden).sum()),
        }
        scorer, target = (query_model, None) if mode == "query" else (fit.model, task.query)
        capvi_row, per_cell[hidden] = _capvi_row(
            fit.model, scorer, target, y, is_hidden, false_unknown_rate, unknown_method
        )
        row.update(capvi_row)
        row["capvi_seconds"] = fit.seconds
        if scanvi:
            row.update(
                _scanvi_row(
                    ref,
                    task,
                    mode,
                    labels_key,
                    batch_key,
                    scvi_max_epochs,
                    scanvi_train_kwargs,
                    y,
                    is_hidden,
                    false_unknown_rate,
                )
            )
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("hidden_type")
    frame.attrs.update(
        {
            "seed": seed,
            "fractions": fractions,
            "mode": mode,
            "query_batches": query_batches,
            "false_unknown_rate": false_unknown_rate,
            "scores": per_cell,
        }
    )
    return frame

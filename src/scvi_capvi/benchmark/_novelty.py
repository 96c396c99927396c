"""Leave-one-type-out evaluation of unknown-type detection and calibration
(:cite:p:`Clivio22`, §5).

For each annotated cell type in turn, the type is hidden from training and the trained model
scores the held-out test cells: can it tell the hidden type's cells from the known ones, does
it still label the known ones right, and are its probabilities calibrated? scANVI's maximum
posterior probability :cite:p:`Xu21` on the same split is the baseline.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from scvi_capvi.metrics import accuracy, expected_calibration_error
from scvi_capvi.model._novelty import NOVELTY_METHODS

from ._datasets import UNLABELED
from ._recipes import fit_capvi, fit_scvi
from ._splits import Split


def _training_cells(
    ref: AnnData, labels_key: str, hidden: str, mode: Literal["unlabelled", "removed"]
) -> AnnData:
    labels = ref.obs[labels_key].astype(str).to_numpy()
    if mode == "removed":
        ref = ref[labels != hidden].copy()
        ref.obs[labels_key] = pd.Categorical(labels[labels != hidden])
    else:
        ref = ref.copy()
        ref.obs[labels_key] = pd.Categorical(np.where(labels == hidden, UNLABELED, labels))
    return ref


def _auroc(is_hidden: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(is_hidden, score)) if 0 < is_hidden.sum() < len(score) else np.nan


def _scanvi_scores(scvi_model, ref, query, labels_key, train_kwargs) -> dict[str, np.ndarray]:
    model = scvi.model.SCANVI.from_scvi_model(
        scvi_model, unlabeled_category=UNLABELED, labels_key=labels_key, adata=ref
    )
    model.train(**train_kwargs)
    probs = model.predict(query, soft=True)
    return {"probs": probs, "pred": probs.columns.to_numpy()[probs.to_numpy().argmax(1)]}


def leave_one_type_out(
    adata: AnnData,
    *,
    labels_key: str = "cell_type",
    batch_key: str | None = "batch",
    hidden_types: list[str] | None = None,
    mode: Literal["unlabelled", "removed"] = "unlabelled",
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    false_unknown_rate: float = 0.05,
    unknown_method: str = "combined",
    capvi_kwargs: dict | None = None,
    capvi_train_kwargs: dict | None = None,
    scanvi: bool = True,
    scvi_max_epochs: int | None = None,
    scanvi_train_kwargs: dict | None = None,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Hide each cell type from training in turn and score unknown-type detection.

    Cells are split once (seeded ``fractions`` of train / validation / test). For each hidden
    type, CapVI is trained on the training and validation cells with that type's labels
    hidden (``mode="unlabelled"``: its cells stay in the data, unannotated) or its cells
    removed (``mode="removed"``); the test cells (all types) are then scored.

    Parameters
    ----------
    adata
        Raw counts with ``obs[labels_key]`` (and ``obs[batch_key]``).
    labels_key, batch_key
        Cell-type and batch columns.
    hidden_types
        Types to hide, one run each; default every type.
    mode
        ``"unlabelled"`` or ``"removed"`` (see above).
    fractions, seed
        The cell split.
    false_unknown_rate
        Target fraction of known validation cells called unknown; sets the threshold of
        ``predict(unknown_threshold=...)``.
    unknown_method
        The novelty score used for the unknown call.
    capvi_kwargs, capvi_train_kwargs
        Passed to :class:`~scvi_capvi.model.CapVI` and its ``train``.
    scanvi
        Also train scvi-tools' SCANVI (from an SCVI with the same architecture) as baseline.
    scvi_max_epochs, scanvi_train_kwargs
        Epochs of the SCVI pre-training and ``SCANVI.train`` arguments.
    progress_bar
        Show progress over the hidden types.

    Returns
    -------
    One row per hidden type: AUROC of every CapVI novelty score (``auroc_<method>``) and of
    SCANVI's ``1 - max posterior`` for hidden-vs-known test cells; accuracy on the known
    test cells without (``known_accuracy``) and with the unknown option
    (``known_accuracy_with_unknown``; an unknown call counts as an error), the fraction of
    hidden-type test cells called unknown (``hidden_called_unknown``); ECE of the soft
    predictions on known test cells before and after temperature scaling.
    """
    if mode not in ("unlabelled", "removed"):
        raise ValueError(f"`mode` must be 'unlabelled' or 'removed', got {mode!r}.")
    if labels_key not in adata.obs:
        raise KeyError(f"`labels_key` {labels_key!r} is not a column of adata.obs.")
    if unknown_method not in NOVELTY_METHODS:
        raise ValueError(f"`unknown_method` must be one of {NOVELTY_METHODS}.")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    types = np.unique(labels)
    hidden_types = list(types) if hidden_types is None else list(hidden_types)
    missing = sorted(set(hidden_types) - set(types))
    if missing:
        raise ValueError(f"`hidden_types` not among the labels of {labels_key!r}: {missing}")
    if len(types) < 3:
        raise ValueError("Leave-one-type-out needs at least 3 cell types (2 stay known).")

    split = Split.by_cells(adata.n_obs, fractions, seed)
    train_size = split.train_size
    reference = adata[split.fit].copy()
    query = adata[split.test].copy()
    query.obs[labels_key] = UNLABELED  # nothing about the test cells' types is given away
    y_test = labels[split.test]
    split_kwargs = {"train_size": train_size, "validation_size": 1 - train_size}
    capvi_train_kwargs = {"enable_progress_bar": False, **(capvi_train_kwargs or {})}
    # drop_last: a last minibatch of one cell breaks SCANVI's BatchNorm
    scanvi_train_kwargs = {
        "enable_progress_bar": False,
        **split_kwargs,
        "datasplitter_kwargs": {"drop_last": True},
        **(scanvi_train_kwargs or {}),
    }

    shared_scvi = None
    rows = []
    for hidden in tqdm(
        hidden_types, desc=f"leave one type out ({mode})", disable=not progress_bar
    ):
        start = time.perf_counter()
        ref = _training_cells(reference, labels_key, hidden, mode)
        fit = fit_capvi(
            ref,
            train_size,
            labels_key=labels_key,
            batch_key=batch_key,
            model_kwargs=capvi_kwargs,
            train_kwargs=capvi_train_kwargs,
        )
        model = fit.model
        is_hidden = y_test == hidden
        known = ~is_hidden
        row: dict[str, object] = {
            "hidden_type": hidden,
            "mode": mode,
            "n_test_hidden": int(is_hidden.sum()),
            "n_test_known": int(known.sum()),
        }
        for method in NOVELTY_METHODS:
            score = model.get_novelty_score(query, method=method)
            row[f"auroc_{method}"] = _auroc(is_hidden, score)
        logits, _ = model._classifier_pass(query, None, None, latent=False)
        pred = model.cell_types[logits.argmax(1)]
        threshold = model.get_novelty_threshold(false_unknown_rate, method=unknown_method)
        pred_unknown = model.predict(
            query, unknown_threshold=threshold, novelty_method=unknown_method
        )
        row["known_accuracy"] = accuracy(y_test[known], pred[known])
        row["known_accuracy_with_unknown"] = accuracy(y_test[known], pred_unknown[known])
        row["hidden_called_unknown"] = float(np.mean(pred_unknown[is_hidden] == "unknown"))
        row["temperature"] = model.classifier_temperature
        for name, calibrated in (("ece_before", False), ("ece_after", True)):
            probs = model._probabilities(logits[known], calibrated=calibrated)
            row[name] = expected_calibration_error(probs, y_test[known], model.cell_types)
        row["capvi_seconds"] = fit.seconds

        if scanvi:
            start_scanvi = time.perf_counter()
            if mode == "removed" or shared_scvi is None:
                # SCVI ignores labels: with the hidden type only unannotated, one SCVI serves
                # every hidden type
                scvi_ref = ref.copy()
                scvi_fit = fit_scvi(
                    scvi_ref,
                    train_size,
                    batch_key=batch_key,
                    max_epochs=scvi_max_epochs,
                    train_kwargs={"enable_progress_bar": False},
                )
                if mode == "unlabelled":
                    shared_scvi = scvi_fit.model
                scvi_model = scvi_fit.model
            else:
                scvi_model = shared_scvi
            out = _scanvi_scores(scvi_model, ref, query, labels_key, scanvi_train_kwargs)
            probs = out["probs"]
            row["auroc_scanvi_max_prob"] = _auroc(is_hidden, 1 - probs.to_numpy().max(1))
            row["scanvi_known_accuracy"] = accuracy(y_test[known], out["pred"][known])
            row["scanvi_ece"] = expected_calibration_error(
                probs.to_numpy()[known], y_test[known], probs.columns
            )
            row["scanvi_seconds"] = time.perf_counter() - start_scanvi
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("hidden_type")
    frame.attrs.update(
        {
            "seed": seed,
            "fractions": fractions,
            "mode": mode,
            "false_unknown_rate": false_unknown_rate,
        }
    )
    return frame

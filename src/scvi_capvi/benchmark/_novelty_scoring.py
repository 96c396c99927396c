"""Scoring one leave-one-type-out run: AUROCs and the unknown call (shared by CapVI's and
SCANVI's rows), and CapVI's row with its per-cell scores (see
:func:`~scvi_capvi.benchmark.leave_one_type_out`)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from scvi_capvi.metrics import accuracy, expected_calibration_error
from scvi_capvi.model._novelty import NOVELTY_METHODS


def _auroc(is_hidden: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(is_hidden, score)) if 0 < is_hidden.sum() < len(score) else np.nan


def _unknown_call_metrics(prefix, y, pred, unknown, is_hidden) -> dict[str, float]:
    known = ~is_hidden
    return {
        f"{prefix}known_accuracy": accuracy(y[known], pred[known]),
        f"{prefix}known_accuracy_with_unknown": float(
            np.mean((pred[known] == y[known]) & ~unknown[known])
        ),
        f"{prefix}false_unknown_rate": float(np.mean(unknown[known])),
        f"{prefix}hidden_called_unknown": float(np.mean(unknown[is_hidden])),
    }


def _capvi_row(model, scorer, target, y, is_hidden, rate, unknown_method) -> dict:
    """AUROC of every novelty score, the unknown call and calibration, for CapVI."""
    row, scores = {}, {}
    for method in NOVELTY_METHODS:
        if method == "combined" and scorer is not model:
            # its quantiles need the annotated validation cells, which a query model lacks
            row[f"auroc_{method}"] = np.nan
            continue
        scores[method] = scorer.get_novelty_score(target, method=method)
        row[f"auroc_{method}"] = _auroc(is_hidden, scores[method])
    threshold = model.get_novelty_threshold(rate, method=unknown_method)
    # the raw signals on the calibration cells too (one encoder + decoder pass for both), so
    # other combinations can be scored later
    validation = model._known_validation_indices()
    outputs = model._classifier_pass(None, validation, None, latent=True, reconstruction=True)
    for method in ("latent", "reconstruction", "max_prob"):
        scores[f"calibration_{method}"] = model._raw_novelty(method, *outputs)
    # and which cells the classifier gets right, to see where the unknown calls fall
    scores["calibration_correct"] = outputs[0].argmax(1) == model._label_codes(validation)
    logits, means = scorer._classifier_pass(target, None, None, latent=True)
    kept = getattr(scorer, "novelty_reference_", None)
    if kept is not None and len(kept["calibration"]) == len(validation):
        # every validation cell kept (in this order): their own "neighbors" quantiles, scored
        # against the pool that holds this query (as its "neighbors" score)
        scores["calibration_neighbors"] = scorer._neighbor_quantiles(means)[1]
    pred = np.asarray(scorer.cell_types)[logits.argmax(1)]
    scores["predicted_correct"] = pred == y
    unknown = scores[unknown_method] > threshold
    row.update(_unknown_call_metrics("", y, pred, unknown, is_hidden))
    row["temperature"] = scorer.classifier_temperature
    known = ~is_hidden
    for name, calibrated in (("ece_before", False), ("ece_after", True)):
        probs = scorer._probabilities(logits[known], calibrated=calibrated)
        row[name] = expected_calibration_error(probs, y[known], scorer.cell_types)
    scores["is_hidden"] = is_hidden
    scores["novelty_location"] = model.module.novelty_location.detach().cpu().numpy()
    scores["novelty_scale"] = model.module.novelty_scale.detach().cpu().numpy()
    return row, scores

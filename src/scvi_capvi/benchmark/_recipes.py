"""Training recipes shared by the quick start, the benchmark and the scripts in ``benchmarks/``.

* :func:`fit_capvi`: CapVI with its defaults (``model_kwargs={"recipe": "paper"}`` for the
  paper's recipe) on the network of :cite:p:`Clivio22`: 3 hidden layers of 256 units, dropout
  0.25, D = 20.
* :func:`fit_scvi_as_users_run_it`: *the* SCVI recipe, scvi-tools' SCVI the way its
  documentation runs it: the baseline a user compares against. :func:`fit_scanvi_from_scvi`
  continues it to SCANVI as scvi-tools' tutorials do.
* :func:`fit_scvi`: the same recipe with the settings of :cite:p:`Clivio22` (its network,
  :data:`SCVI_PAPER_MODEL`: latent library size with the batch-wise log-normal prior,
  gene-batch dispersion, ZINB; :data:`SCVI_PAPER_TRAIN`: early stopping on the validation
  reconstruction error, no KL warm-up).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import scvi
from anndata import AnnData

from scvi_capvi.model import CapVI
from scvi_capvi.model._training import has_tiny_last_batch

PAPER_ARCHITECTURE = {"n_latent": 20, "n_hidden": 256, "n_layers": 3, "dropout_rate": 0.25}
"""The network of :cite:p:`Clivio22`, for CapVI and the SCVI it is compared with."""

SCVI_PAPER_MODEL = {
    **PAPER_ARCHITECTURE,
    "dispersion": "gene-batch",
    "gene_likelihood": "zinb",
    "use_observed_lib_size": False,
}
"""``SCVI`` arguments of :cite:p:`Clivio22`'s scVI: its network, gene-batch dispersion, ZINB,
latent library size (the scripts that time SCVI build it from these too)."""

SCVI_PAPER_TRAIN = {
    "early_stopping": True,
    "early_stopping_monitor": "reconstruction_loss_validation",
}
"""``SCVI.train`` arguments of :cite:p:`Clivio22`'s scVI (with no KL warm-up, as for CapVI:
early stopping on the reconstruction error would otherwise stop while the KL weight is
still small)."""


@dataclass
class FitResult:
    """A trained model with its training cost."""

    model: object
    seconds: float
    epochs: dict[str, int] = field(default_factory=dict)

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, sum(self.epochs.values()))


def _epochs_from_history(history: dict, key_suffix: str = "train_loss") -> dict[str, int]:
    out = {}
    staged = any(key.startswith("stage") for key in history)
    for key, frame in history.items():
        if staged and not key.startswith(("stage", "scvi_")):
            continue  # CapVI's last stage, repeated under scvi-tools' names
        if key.endswith(key_suffix) or key.endswith(f"{key_suffix}_epoch"):
            stage = key.split("_")[0] if key.startswith(("stage", "scvi_")) else "train"
            out[stage] = max(out.get(stage, 0), len(frame))
    return out


def _drop_tiny_last_batch(train_kwargs: dict, n_cells: int, train_size: float) -> dict:
    """``train_kwargs`` for an scvi-tools model, dropping a last training minibatch of 1-2
    cells (``has_tiny_last_batch``); scvi-tools only warns when ``train_size`` is given.
    CapVI's train does the same; the split is unchanged."""
    n_train = math.ceil(train_size * n_cells)  # as scvi-tools' validate_data_split
    if has_tiny_last_batch(n_train, train_kwargs.get("batch_size", 128)):
        splitter = dict(train_kwargs.pop("datasplitter_kwargs", None) or {})
        train_kwargs["datasplitter_kwargs"] = {"drop_last": True, **splitter}
    return train_kwargs


def _train(model, train_size: float, **train_kwargs) -> FitResult:
    """Train ``model`` on a ``train_size`` / ``1 - train_size`` split of its cells, timed."""
    start = time.perf_counter()
    model.train(train_size=train_size, validation_size=1 - train_size, **train_kwargs)
    return FitResult(model, time.perf_counter() - start, _epochs_from_history(model.history))


def fit_capvi(
    adata: AnnData,
    train_size: float,
    *,
    labels_key: str = "cell_type",
    batch_key: str | None = "batch",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> FitResult:
    """Register ``adata`` (training + validation cells) and train CapVI's three stages (its
    defaults on :data:`PAPER_ARCHITECTURE`, updated by ``model_kwargs``)."""
    CapVI.setup_anndata(adata, labels_key=labels_key, batch_key=batch_key)
    model = CapVI(adata, **{**PAPER_ARCHITECTURE, **(model_kwargs or {})})
    return _train(model, train_size, **(train_kwargs or {}))


def fit_scvi_as_users_run_it(
    adata: AnnData,
    train_size: float,
    *,
    batch_key: str | None = "batch",
    max_epochs: int | None = None,
    network: str = "scvi-tools",
    kl_warmup: bool = True,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> FitResult:
    """scvi-tools' SCVI as its users run it: every default of ``SCVI`` and ``SCVI.train``
    (observed library size, gene dispersion, ZINB, 400-epoch KL warm-up, no early stopping).

    ``network="capvi"`` swaps in CapVI's network (:data:`PAPER_ARCHITECTURE`) and
    ``kl_warmup=False`` drops the KL warm-up; nothing else changes.
    """
    if network not in ("scvi-tools", "capvi"):
        raise ValueError(f"`network` must be 'scvi-tools' or 'capvi', got {network!r}.")
    scvi.model.SCVI.setup_anndata(adata, batch_key=batch_key)
    arch = PAPER_ARCHITECTURE if network == "capvi" else {}
    model = scvi.model.SCVI(adata, **{**arch, **(model_kwargs or {})})
    train_kwargs = _drop_tiny_last_batch(dict(train_kwargs or {}), adata.n_obs, train_size)
    if not kl_warmup:
        plan = dict(train_kwargs.pop("plan_kwargs", None) or {})
        train_kwargs["plan_kwargs"] = {**plan, "n_epochs_kl_warmup": None}
    return _train(model, train_size, max_epochs=max_epochs, **train_kwargs)


def fit_scvi(
    adata: AnnData,
    train_size: float,
    *,
    batch_key: str | None = "batch",
    max_epochs: int | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> FitResult:
    """scvi-tools' own SCVI with the recipe of :cite:p:`Clivio22` (the same as
    :func:`fit_capvi`'s): :func:`fit_scvi_as_users_run_it` with CapVI's network, no KL
    warm-up, :data:`SCVI_PAPER_MODEL` and :data:`SCVI_PAPER_TRAIN`."""
    return fit_scvi_as_users_run_it(
        adata,
        train_size,
        batch_key=batch_key,
        max_epochs=max_epochs,
        network="capvi",
        kl_warmup=False,
        model_kwargs={**SCVI_PAPER_MODEL, **(model_kwargs or {})},
        train_kwargs={**SCVI_PAPER_TRAIN, **(train_kwargs or {})},
    )


SCANVI_TUTORIAL_TRAIN = {"max_epochs": 20, "n_samples_per_label": 100}

ARCHES_NETWORK = {
    "use_layer_norm": "both",
    "use_batch_norm": "none",
    "encode_covariates": True,
    "dropout_rate": 0.2,
    "n_layers": 2,
}
"""The reference SCVI's network in scvi-tools' scArches tutorial (query mapping)."""

SCARCHES_QUERY_TRAIN = {
    "max_epochs": 100,
    "plan_kwargs": {"weight_decay": 0.0},
    "check_val_every_n_epoch": 10,
}
"""Query training after ``load_query_data`` in scvi-tools' scArches tutorial."""
"""``SCANVI.train`` arguments of scvi-tools' tutorials after ``SCANVI.from_scvi_model``."""


def fit_scanvi_from_scvi(
    scvi_fit: FitResult,
    *,
    labels_key: str = "cell_type",
    unlabeled_category: str = "Unknown",
    train_size: float | None = None,
    train_kwargs: dict | None = None,
) -> FitResult:
    """SCANVI as scvi-tools' tutorials run it: ``SCANVI.from_scvi_model`` on a trained SCVI,
    then ``train(max_epochs=20, n_samples_per_label=100)``. The cost includes the SCVI's."""
    model = scvi.model.SCANVI.from_scvi_model(
        scvi_fit.model, unlabeled_category=unlabeled_category, labels_key=labels_key
    )
    kwargs = {**SCANVI_TUTORIAL_TRAIN, **(train_kwargs or {})}
    if train_size is not None:
        kwargs.update(train_size=train_size, validation_size=1 - train_size)
        kwargs = _drop_tiny_last_batch(kwargs, model.adata.n_obs, train_size)
    start = time.perf_counter()
    model.train(**kwargs)
    seconds = time.perf_counter() - start
    epochs = {"scvi": sum(scvi_fit.epochs.values()), "scanvi": kwargs["max_epochs"]}
    return FitResult(model, scvi_fit.seconds + seconds, epochs)

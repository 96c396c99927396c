"""The benchmark's methods: one registry, :data:`METHODS`, of fit functions.

Every method is fitted on the training + validation cells of a :class:`~._splits.Split` and
returns one :class:`MethodOutput`: a latent space of *all* cells of the dataset
(row-aligned), and, where the method has them, the test cells' marginal log-likelihood,
reconstruction error, predicted cell types and training history. Models with a batch
covariate see the batch as ``MODEL_BATCH_KEY`` (held-out batches mapped to a seen one).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from scvi_capvi._catalog import METHOD_INFO

from ._config import BenchmarkConfig
from ._datasets import BATCH_KEY, LABELS_KEY, UNLABELED
from ._evaluation import reconstruction_error, scvi_marginal_ll
from ._recipes import (
    PAPER_ARCHITECTURE,
    SCVI_PAPER_TRAIN,
    _epochs_from_history,
    fit_capvi,
    fit_scanvi_from_scvi,
    fit_scvi,
    fit_scvi_as_users_run_it,
)
from ._splits import MODEL_BATCH_KEY, Split


@dataclass
class MethodOutput:
    """What a method gives the benchmark (arrays row-aligned with the dataset's cells)."""

    latent: np.ndarray
    seconds: float
    epochs: int = 0
    test_marginal_ll: float = float("nan")
    test_reconstruction: float = float("nan")
    test_predictions: np.ndarray | None = None
    history: dict | None = None
    probabilistic: bool = True
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registered method: its name, a one-line description and its ``fit`` function
    ``fit(adata, split, config) -> MethodOutput``."""

    name: str
    description: str
    fit: Callable[[AnnData, Split, BenchmarkConfig], MethodOutput]
    needs_batches: bool = False
    default: bool = True


class MethodSkipped(RuntimeError):
    """A method that cannot run on this dataset or in this environment (reported, not fatal)."""


def _vae_epochs(config: BenchmarkConfig) -> int | None:
    """Epoch cap of the single-stage models: CapVI's stages 2 + 3 together (as the quick
    start gives scVI), so every VAE gets as many epochs of its generative model."""
    return None if config.max_epochs is None else 2 * config.max_epochs


def _trainer_kwargs(config: BenchmarkConfig) -> dict:
    # one epoch bar per training run (CapVI: per stage), so a long fit shows its progress
    return {"enable_progress_bar": config.progress_bar}


def _eval_copy(adata: AnnData, unlabel: bool = False) -> AnnData:
    """All cells, for latent / likelihood queries; labels hidden for models that register them
    (a held-out batch may bring a cell type the model never saw)."""
    out = adata.copy()
    if unlabel:
        out.obs[LABELS_KEY] = pd.Categorical([UNLABELED] * out.n_obs)
    return out


def _capvi_fit(variant: str) -> Callable:
    def fit(adata: AnnData, split: Split, config: BenchmarkConfig) -> MethodOutput:
        model_kwargs = dict(config.capvi_kwargs) if variant == "capvi" else {}
        train_kwargs: dict = {**_trainer_kwargs(config)}
        if "classifier_lr" in model_kwargs:  # chosen by model selection; a plan parameter
            train_kwargs["plan_kwargs"] = {"classifier_lr": model_kwargs.pop("classifier_lr")}
        if config.max_epochs is not None:
            train_kwargs.update(
                dict.fromkeys(
                    ("classifier_epochs", "frozen_epochs", "max_epochs"), config.max_epochs
                )
            )
        labels_key: str | None = LABELS_KEY
        if variant == "e2e":
            train_kwargs["pretrain_classifier"] = False
        if variant == "gmvae":
            labels_key = None
            model_kwargs = {"n_components": int(adata.obs[LABELS_KEY].nunique())}
        fit_data = adata[split.fit].copy()
        scvi.settings.seed = config.seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = fit_capvi(
                fit_data,
                split.train_size,
                labels_key=labels_key,
                batch_key=MODEL_BATCH_KEY,
                model_kwargs=model_kwargs,
                train_kwargs=train_kwargs,
            )
        model = res.model
        full = _eval_copy(adata)
        model._validate_query_anndata(full)
        latent = model.get_latent_representation(full)
        test = full[split.test].copy()
        model._validate_query_anndata(test)
        out = MethodOutput(
            latent=latent,
            seconds=res.seconds,
            epochs=sum(res.epochs.values()),
            history=dict(model.history),
            info={"stage_epochs": res.epochs, **model_kwargs},
        )
        if len(split.test):
            out.test_marginal_ll = float(
                model.get_marginal_ll(test, n_mc_samples=config.n_mc_samples, progress_bar=False)
            )
            out.test_reconstruction = reconstruction_error(model, test)
            if variant == "capvi":
                out.test_predictions = np.asarray(model.predict(test))
        return out

    return fit


def _fit_scvi_kind(kind: str, fit_data: AnnData, split: Split, config: BenchmarkConfig):
    """The model of an scvi-tools method and its training history (SCANVI's includes its SCVI
    pre-training, under ``scvi_`` keys)."""
    epochs = _vae_epochs(config)
    trainer = _trainer_kwargs(config)
    if kind == "linear":
        # LDVAE at its defaults with D = 20, trained with the paper recipe's early stopping
        scvi.model.LinearSCVI.setup_anndata(fit_data, batch_key=MODEL_BATCH_KEY)
        model = scvi.model.LinearSCVI(fit_data, n_latent=PAPER_ARCHITECTURE["n_latent"])
        model.train(
            max_epochs=epochs,
            train_size=split.train_size,
            validation_size=1 - split.train_size,
            **trainer,
            **SCVI_PAPER_TRAIN,
            plan_kwargs={"n_epochs_kl_warmup": None},
        )
        return model, {}
    scvi_kwargs = {"batch_key": MODEL_BATCH_KEY, "max_epochs": epochs, "train_kwargs": trainer}
    if kind == "scvi-paper":
        return fit_scvi(fit_data, split.train_size, **scvi_kwargs).model, {}
    # as scvi-tools' users run it: its defaults (KL warm-up, no early stopping), with CapVI's
    # network
    fitted = fit_scvi_as_users_run_it(fit_data, split.train_size, network="capvi", **scvi_kwargs)
    if kind != "scanvi":
        return fitted.model, {}
    history = {f"scvi_{k}": v for k, v in fitted.model.history.items()}
    n = 20 if epochs is None else max(1, min(config.max_epochs, 20))
    fitted = fit_scanvi_from_scvi(
        fitted,
        labels_key=LABELS_KEY,
        unlabeled_category=UNLABELED,
        train_size=split.train_size,
        train_kwargs={"max_epochs": n, **trainer},
    )
    return fitted.model, history


def _scvi_family_fit(kind: str) -> Callable:
    def fit(adata: AnnData, split: Split, config: BenchmarkConfig) -> MethodOutput:
        fit_data = adata[split.fit].copy()
        scvi.settings.seed = config.seed
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model, history = _fit_scvi_kind(kind, fit_data, split, config)
        seconds = time.perf_counter() - start
        history = {**history, **model.history}
        full = _eval_copy(adata, unlabel=kind == "scanvi")
        latent = model.get_latent_representation(full)
        out = MethodOutput(
            latent=latent,
            seconds=seconds,
            epochs=sum(_epochs_from_history(history).values()),
            history=history,
        )
        if len(split.test):
            test = full[split.test].copy()
            try:
                out.test_marginal_ll = scvi_marginal_ll(model, test, config.n_mc_samples)
            except Exception as err:
                out.info["marginal_ll_error"] = f"{type(err).__name__}: {err}"[:200]
            out.test_reconstruction = reconstruction_error(model, test)
            if kind == "scanvi":
                out.test_predictions = np.asarray(model.predict(test))
        return out

    return fit


def _vampvi_fit(spec: dict | None) -> Callable:
    def fit(adata: AnnData, split: Split, config: BenchmarkConfig) -> MethodOutput:
        from scvi_capvi.model import NBAutoencoder, VampVI

        fit_data = adata[split.fit].copy()
        scvi.settings.seed = config.seed
        kwargs = {"n_latent": PAPER_ARCHITECTURE["n_latent"], "n_hidden": 128, "n_layers": 1}
        if spec is None:
            NBAutoencoder.setup_anndata(fit_data, batch_key=MODEL_BATCH_KEY)
            model = NBAutoencoder(fit_data, **kwargs)
            monitor = "validation_loss"
        else:
            VampVI.setup_anndata(fit_data, batch_key=MODEL_BATCH_KEY)
            model = VampVI(fit_data, n_pseudo_inputs=config.n_pseudo_inputs, **spec, **kwargs)
            monitor = "reconstruction_loss_validation"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.train(
                max_epochs=_vae_epochs(config) or 400,
                train_size=split.train_size,
                validation_size=1 - split.train_size,
                early_stopping=True,
                early_stopping_monitor=monitor,
                check_val_every_n_epoch=1,
                **_trainer_kwargs(config),
            )
        seconds = time.perf_counter() - start
        full = _eval_copy(adata)
        out = MethodOutput(
            latent=model.get_latent_representation(full),
            seconds=seconds,
            epochs=sum(_epochs_from_history(dict(model.history)).values()),
            history=dict(model.history),
            probabilistic=spec is not None,
        )
        if len(split.test):
            test = full[split.test].copy()
            if spec is not None:
                out.test_marginal_ll = float(
                    model.get_marginal_ll(
                        test, n_mc_samples=config.n_mc_samples, progress_bar=False
                    )
                )
            out.test_reconstruction = reconstruction_error(model, test)
        return out

    return fit


def _log_normalised(adata: AnnData) -> AnnData:
    import scanpy as sc

    norm = AnnData(adata.X.astype(np.float32), obs=adata.obs[[LABELS_KEY, BATCH_KEY]].copy())
    norm.var_names = adata.var_names
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    return norm


def _pca_fit(adata: AnnData, split: Split, config: BenchmarkConfig) -> MethodOutput:
    import scanpy as sc

    start = time.perf_counter()
    norm = _log_normalised(adata)
    n = int(min(PAPER_ARCHITECTURE["n_latent"], norm.n_obs - 1, norm.n_vars - 1))
    sc.pp.pca(norm, n_comps=n, random_state=config.seed)
    return MethodOutput(
        latent=norm.obsm["X_pca"], seconds=time.perf_counter() - start, probabilistic=False
    )


def _scanorama_fit(adata: AnnData, split: Split, config: BenchmarkConfig) -> MethodOutput:
    try:
        import scanorama
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MethodSkipped(
            "scanorama is not installed (pip install 'scvi-capvi[benchmark]')"
        ) from err
    start = time.perf_counter()
    norm = _log_normalised(adata)
    batch = norm.obs[BATCH_KEY].astype(str).to_numpy()
    names = list(dict.fromkeys(batch))
    parts = [np.flatnonzero(batch == b) for b in names]
    datasets = [norm.X[idx] for idx in parts]
    genes = [list(norm.var_names)] * len(parts)
    dim = int(min(PAPER_ARCHITECTURE["n_latent"], min(len(p) for p in parts) - 1))
    integrated, _ = scanorama.integrate(datasets, genes, dimred=dim, verbose=0, seed=config.seed)
    latent = np.zeros((adata.n_obs, dim), dtype=np.float32)
    for idx, emb in zip(parts, integrated):
        latent[idx] = emb
    return MethodOutput(
        latent=latent,
        seconds=time.perf_counter() - start,
        probabilistic=False,
        info={"note": "transductive: integrates all cells, no split"},
    )


def _method(name: str, fit: Callable, needs_batches: bool = False) -> Method:
    """A method with the description and default of the command line's catalog."""
    info = METHOD_INFO[name]
    return Method(name, info.description, fit, needs_batches=needs_batches, default=info.default)


# Descriptions and which methods run by default: scvi_capvi._catalog.METHOD_INFO (read by the
# command line without importing this module).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _method("CapVI", _capvi_fit("capvi")),  # three stages, its defaults
        _method("CapVI-e2e", _capvi_fit("e2e")),  # pretrain_classifier=False
        # GMVAE, K = number of cell types (warm-up, k-means start, then end to end): it runs
        # when named only; benchmarks/gmvae_clustering.py scores its clusters
        _method("CapVI-GMVAE", _capvi_fit("gmvae")),
        _method("VampVI-VAE", _vampvi_fit({"prior": "normal"})),  # Dony et al. (2020)'s VAE
        _method("VampVI-VAMP", _vampvi_fit({"prior": "vamp"})),  # Dony et al. (2020)
        _method("VampVI-VAMP+IAF", _vampvi_fit({"prior": "vamp", "posterior": "iaf"})),
        _method("VampVI-linear", _vampvi_fit({"prior": "vamp", "decoder": "linear"})),
        _method("NBAutoencoder", _vampvi_fit(None)),  # Dony et al. (2020)'s AE
        _method("SCVI", _scvi_family_fit("scvi")),  # its defaults, CapVI's network
        _method("SCVI-paper", _scvi_family_fit("scvi-paper")),  # Clivio et al. (2022)'s recipe
        _method("SCANVI", _scvi_family_fit("scanvi")),  # from the SCVI fit, as its tutorials
        _method("LinearSCVI", _scvi_family_fit("linear")),  # LDVAE, Svensson et al. (2020)
        _method("Scanorama", _scanorama_fit, needs_batches=True),
        _method("PCA", _pca_fit),
    )
}


def resolve_methods(names: list[str] | None) -> list[Method]:
    """Registered methods by name (all of them for ``None``), with a clear error."""
    if not names:
        return [m for m in METHODS.values() if m.default]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; registered: {', '.join(METHODS)}.")
    return [METHODS[n] for n in names]

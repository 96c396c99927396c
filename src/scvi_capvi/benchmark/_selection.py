"""Model selection of :cite:p:`Clivio22` (§4.2), through ``scvi.autotune`` (Ray Tune) or a
local grid.

1. The classifier ``q(c|x)``: a grid over layers, hidden units, learning rate and dropout,
   scored by the validation cross-entropy of stage 1 (lower is better).
2. CapVI's prior scale σ and mixing penalty λ, with the chosen classifier: scored by the
   validation marginal log-likelihood (importance sampling, higher is better).

``backend="ray"`` runs each grid with :func:`scvi.autotune.run_autotune` (a local Ray
instance by default, or the cluster of ``ray.init(address=...)`` if one is connected), so the
same search space scales out; ``backend="local"`` trains the same grid one model after the
other in this process (no Ray needed); ``"auto"`` picks Ray when ``ray[tune]`` is installed.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from scvi_capvi.model import CapVI

from ._config import BenchmarkConfig
from ._datasets import LABELS_KEY
from ._recipes import PAPER_ARCHITECTURE
from ._splits import MODEL_BATCH_KEY, Split

logger = logging.getLogger(__name__)

CLASSIFIER_GRID = {
    "classifier_n_layers": [1, 3, 5],
    "classifier_n_hidden": [128, 256],
    "classifier_lr": [0.004, 0.001, 0.00025],
    "classifier_dropout_rate": [0.25, 0.4, 0.55],
}
"""The classifier grid of :cite:p:`Clivio22` (§4.2; 54 configurations)."""
CAPVI_GRID = {"prior_scale": [1.0, 1 / 8, 1 / 32], "mixing_penalty": [0.0, 0.01, 0.1]}
"""The (σ, λ) grid of :cite:p:`Clivio22` (§4.2)."""
QUICK_CLASSIFIER_GRID = {"classifier_n_hidden": [128, 256]}
QUICK_CAPVI_GRID = {"prior_scale": [1.0, 1 / 8], "mixing_penalty": [0.0, 0.01]}

CLASSIFIER_METRIC = "classifier_cross_entropy_validation"
CAPVI_METRIC = "marginal_ll_validation"
PLAN_PARAMS = ("classifier_lr",)
"""Grid entries that belong to the training plan, not to the model constructor."""


class TunableCapVI(CapVI):
    """CapVI that reports one validation score when its training ends.

    CapVI trains in three stages, each with its own Lightning trainer, so the per-epoch Ray
    Tune callback that ``scvi.autotune`` attaches would see different metrics per stage.
    Here the callback is dropped and :meth:`train` reports ``tune_metric`` once, after the
    last stage: the stage-1 validation cross-entropy (its best epoch) or the validation
    marginal log-likelihood.
    """

    def train(
        self,
        *args,
        tune_metric: str | None = None,
        tune_mc_samples: int = 100,
        **kwargs,
    ):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        in_ray = any("TuneReport" in type(cb).__name__ for cb in callbacks)
        kwargs.pop("logger", None)
        super().train(*args, **kwargs)
        if tune_metric is None:
            return
        self.tune_score_ = selection_score(self, tune_metric, tune_mc_samples)
        if in_ray:
            from ray import tune

            tune.report({tune_metric: self.tune_score_})


def selection_score(model: CapVI, metric: str, n_mc_samples: int = 100) -> float:
    """A trained CapVI's validation score for ``metric`` (see :class:`TunableCapVI`)."""
    if metric == CLASSIFIER_METRIC:
        frame = model.history.get(f"stage1_{CLASSIFIER_METRIC}")
        if frame is None or not len(frame):
            raise ValueError("No stage-1 validation cross-entropy: is there a validation set?")
        return float(np.nanmin(frame.to_numpy()))
    if metric == CAPVI_METRIC:
        return float(
            model.get_marginal_ll(
                indices=model.validation_indices,
                n_mc_samples=n_mc_samples,
                progress_bar=False,
            )
        )
    raise ValueError(f"Unknown selection metric {metric!r}.")


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


def _split_params(params: dict) -> tuple[dict, dict]:
    model = {k: v for k, v in params.items() if k not in PLAN_PARAMS}
    plan = {k: v for k, v in params.items() if k in PLAN_PARAMS}
    return model, plan


def tune_capvi(
    adata: AnnData,
    grid: dict[str, list],
    metric: str,
    train_params: dict,
    fixed: dict | None = None,
    backend: str = "auto",
    seed: int = 0,
    n_mc_samples: int = 100,
    log=print,
) -> pd.DataFrame:
    """Score every point of ``grid`` (CapVI constructor / plan parameters) on ``metric``.

    ``adata`` must be registered with :meth:`TunableCapVI.setup_anndata`. Returns one row per
    configuration with its parameters and score.
    """
    fixed = dict(fixed or {})
    backend = ("ray" if _ray_available() else "local") if backend == "auto" else backend
    keys = list(grid)
    if backend == "ray":
        from ray import tune
        from scvi.autotune import run_autotune

        fixed_model, fixed_plan = _split_params(fixed)
        grid_model, grid_plan = _split_params({k: tune.grid_search(v) for k, v in grid.items()})
        space = {
            "model_params": {**PAPER_ARCHITECTURE, **fixed_model, **grid_model},
            "train_params": {
                **train_params,
                "plan_kwargs": {**fixed_plan, **grid_plan},
                "tune_metric": metric,
                "tune_mc_samples": n_mc_samples,
            },
        }
        # Ray Tune prints a status table per trial event: keep it out of the console
        n_configs = int(np.prod([len(v) for v in grid.values()]))
        log(f"  {n_configs} configurations on Ray Tune (no output until all have finished)...")
        start = time.perf_counter()
        captured = io.StringIO()
        with (
            tempfile.TemporaryDirectory(prefix="capvi_tune_") as tmp,
            contextlib.redirect_stdout(captured),
        ):
            experiment = run_autotune(
                TunableCapVI,
                adata,
                metrics=metric,
                mode="min" if metric == CLASSIFIER_METRIC else "max",
                search_space=space,
                num_samples=1,
                scheduler="fifo",
                searcher="random",
                seed=seed,
                resources={"cpu": 1},
                logging_dir=tmp,
                ignore_reinit_error=True,
            )
            frame = experiment.result_grid.get_dataframe()
        rename = {}
        for col in frame.columns:
            for key in keys:
                if col.endswith(f"/{key}"):
                    rename[col] = key
        frame = frame.rename(columns=rename)
        log(f"  {n_configs} configurations scored in {time.perf_counter() - start:.0f} s")
        return frame[[*keys, metric]].reset_index(drop=True).assign(backend="ray")

    rows = []
    n_configs = int(np.prod([len(v) for v in grid.values()]))
    for values in itertools.product(*grid.values()):
        params = dict(zip(keys, values))
        model_kwargs, plan_kwargs = _split_params({**fixed, **params})
        scvi.settings.seed = seed
        start = time.perf_counter()
        model = TunableCapVI(adata, **{**PAPER_ARCHITECTURE, **model_kwargs})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.train(
                **train_params,
                plan_kwargs=plan_kwargs,
                tune_metric=metric,
                tune_mc_samples=n_mc_samples,
            )
        rows.append({**params, metric: model.tune_score_})
        log(
            f"  {len(rows)}/{n_configs} {params}: {metric} = {model.tune_score_:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return pd.DataFrame(rows).assign(backend="local")


def select_capvi(
    adata: AnnData,
    split: Split,
    config: BenchmarkConfig,
    backend: str = "auto",
    log=print,
) -> tuple[dict, pd.DataFrame]:
    """The model selection of :cite:p:`Clivio22` (§4.2) on the split's training + validation
    cells: classifier grid by validation cross-entropy, then the (σ, λ) grid by validation
    marginal log-likelihood.

    Returns the chosen CapVI keyword arguments (``classifier_lr`` included, which the
    benchmark passes to the training plan) and the table of every configuration's score.
    """
    quick = config.max_epochs is not None
    classifier_grid = config.classifier_grid or (
        QUICK_CLASSIFIER_GRID if quick else CLASSIFIER_GRID
    )
    capvi_grid = config.capvi_grid or (QUICK_CAPVI_GRID if quick else CAPVI_GRID)
    fit = adata[split.fit].copy()
    TunableCapVI.setup_anndata(fit, labels_key=LABELS_KEY, batch_key=MODEL_BATCH_KEY)
    base = {
        "train_size": split.train_size,
        "validation_size": 1 - split.train_size,
        "enable_progress_bar": False,
    }
    epochs = config.max_epochs
    mc = min(config.n_mc_samples, 100 if quick else 1000)

    backend = ("ray" if _ray_available() else "local") if backend == "auto" else backend
    n1 = int(np.prod([len(v) for v in classifier_grid.values()]))
    log(f"  classifier grid: {n1} configurations by {CLASSIFIER_METRIC} ({backend})")
    stage1 = tune_capvi(
        fit,
        classifier_grid,
        CLASSIFIER_METRIC,
        {**base, "classifier_epochs": epochs, "frozen_epochs": 0, "max_epochs": 0},
        backend=backend,
        seed=config.seed,
        log=log,
    )
    best = stage1.loc[stage1[CLASSIFIER_METRIC].idxmin(), list(classifier_grid)].to_dict()
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}

    n2 = int(np.prod([len(v) for v in capvi_grid.values()]))
    log(f"  CapVI grid: {n2} configurations by {CAPVI_METRIC} ({mc} IS samples, {backend})")
    train = {**base}
    if epochs is not None:
        train.update(dict.fromkeys(("classifier_epochs", "frozen_epochs", "max_epochs"), epochs))
    stage23 = tune_capvi(
        fit,
        capvi_grid,
        CAPVI_METRIC,
        train,
        fixed=best,
        backend=backend,
        seed=config.seed,
        n_mc_samples=mc,
        log=log,
    )
    chosen = stage23.loc[stage23[CAPVI_METRIC].idxmax(), list(capvi_grid)].to_dict()
    chosen = {k: (v.item() if hasattr(v, "item") else v) for k, v in chosen.items()}
    table = pd.concat(
        [stage1.assign(grid="classifier"), stage23.assign(grid="capvi", **best)],
        ignore_index=True,
    )
    log(f"  chose {best} and {chosen}")
    return {**best, **chosen}, table

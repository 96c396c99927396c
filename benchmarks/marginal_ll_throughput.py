"""Importance-sampled marginal LL: our chunked estimator vs scvi-tools' ``get_marginal_ll``.

Both estimators run on the *same* trained scvi-tools ``SCVI`` model with the same number of
importance samples: scvi-tools' own ``SCVI.get_marginal_ll`` (its default of one sample per
forward pass, and with as many samples per pass as ours), and this package's
``ImportanceSampledLLMixin.get_marginal_ll`` (samples decoded in memory-bounded chunks,
combined by a running log-sum-exp), attached to the SCVI model through its
``log_importance_weights``. Each estimator runs ``--repeats`` times with different seeds; the
spread of the per-run mean over cells is the Monte Carlo error, and the two agree when their
means differ by less than 3 combined standard errors. CapVI's and VampVI's own throughput
(cells per second at the same sample count) is reported beside them.

    OMP_NUM_THREADS=1 python benchmarks/marginal_ll_throughput.py --n-mc-samples 1000

Writes ``benchmarks/results/marginal_ll_throughput.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from scvi import REGISTRY_KEYS
from torch.distributions import Normal

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write

from scvi_capvi.benchmark import load_dataset
from scvi_capvi.benchmark._recipes import PAPER_ARCHITECTURE, SCVI_PAPER_MODEL
from scvi_capvi.model import CapVI, ImportanceSampledLLMixin, VampVI
from scvi_capvi.module._utils import ChunkedMarginalLLMixin, default_samples_per_pass


class ISSCVI(ImportanceSampledLLMixin, scvi.model.SCVI):
    """scvi-tools' SCVI with this package's importance-sampling estimator (its
    ``get_marginal_ll`` calls the module's ``marginal_ll``: see ``package_estimator``)."""


def package_estimator(model, **kwargs):
    """``model.get_marginal_ll`` with the package's chunked ``marginal_ll`` on scvi-tools'
    VAE for the call (scvi-tools' own estimators keep VAE's)."""
    module = model.module
    module.marginal_ll = types.MethodType(ChunkedMarginalLLMixin.marginal_ll, module)
    try:
        return model.get_marginal_ll(**kwargs)
    finally:
        del module.marginal_ll


def _scvi_log_importance_weights(self, tensors, n_samples: int) -> torch.Tensor:
    """``log p(x, z, l) - log q(z, l | x)`` of scvi-tools' VAE, as in its ``marginal_ll``."""
    inference_outputs, _, losses = self.forward(
        tensors,
        inference_kwargs={"n_samples": n_samples},
        get_inference_input_kwargs={"full_forward_pass": True},
        compute_loss=True,
    )
    qz, z = inference_outputs["qz"], inference_outputs["z"]
    log_w = -losses.dict_sum(losses.reconstruction_loss)
    log_w = log_w + Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale)).log_prob(z).sum(-1)
    log_w = log_w - qz.log_prob(z).sum(-1)
    if not self.use_observed_lib_size:
        library = inference_outputs["library"]
        batch = tensors[REGISTRY_KEYS.BATCH_KEY].to(library.device)  # forward moved its own copy
        means, variances = self._compute_local_library_params(batch)
        log_w = log_w + Normal(means, variances.sqrt()).log_prob(library).sum(-1)
        log_w = log_w - inference_outputs["ql"].log_prob(library).sum(-1)
    return log_w.reshape(n_samples, -1)


def timed(fn, repeats: int) -> tuple[list[float], float]:
    means, seconds = [], []
    for r in range(repeats):
        torch.manual_seed(100 + r)
        start = time.perf_counter()
        values = np.asarray(fn(), dtype=float)
        seconds.append(time.perf_counter() - start)
        means.append(float(values.mean()))
    return means, float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pbmc68k_reduced")
    parser.add_argument("--n-mc-samples", type=int, default=1000)
    parser.add_argument("--n-cells", type=int, default=300, help="cells evaluated")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    scvi.settings.seed = 0
    adata = load_dataset(args.dataset)
    quiet = {"enable_progress_bar": False}
    n = args.n_mc_samples
    cells = np.arange(min(args.n_cells, adata.n_obs))
    per_pass = default_samples_per_pass(n, 128, adata.n_vars)

    ISSCVI.setup_anndata(adata, batch_key="batch")
    model = ISSCVI(adata, **SCVI_PAPER_MODEL)  # fit_scvi's model
    model.train(max_epochs=args.epochs, **quiet)
    model.module.log_importance_weights = types.MethodType(
        _scvi_log_importance_weights, model.module
    )
    ref = scvi.model.SCVI.get_marginal_ll
    estimators = {
        "scvi-tools get_marginal_ll (1 sample per pass, its default)": lambda: ref(
            model, indices=cells, n_mc_samples=n, return_mean=False
        ),
        f"scvi-tools get_marginal_ll ({per_pass} samples per pass)": lambda: ref(
            model,
            indices=cells,
            n_mc_samples=n,
            n_mc_samples_per_pass=per_pass,
            return_mean=False,
        ),
        "scvi-capvi ImportanceSampledLLMixin": lambda: package_estimator(
            model, indices=cells, n_mc_samples=n, return_mean=False, progress_bar=False
        ),
    }
    rows = []
    for name, fn in estimators.items():
        means, seconds = timed(fn, args.repeats)
        rows.append(
            {
                "estimator": name,
                "model": "SCVI",
                "mean_ll": np.mean(means),
                "mc_se": np.std(means, ddof=1) / np.sqrt(len(means)),
                "seconds": seconds,
                "cells_per_second": len(cells) / seconds,
            }
        )
        print(rows[-1])

    # the package's own models, same sample count (throughput only)
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    capvi = CapVI(adata, **PAPER_ARCHITECTURE)
    capvi.train(classifier_epochs=5, frozen_epochs=5, max_epochs=args.epochs, **quiet)
    VampVI.setup_anndata(adata, batch_key="batch")
    vamp = VampVI(adata, **PAPER_ARCHITECTURE, n_pseudo_inputs=500)
    vamp.train(max_epochs=args.epochs, **quiet)
    for label, m in (("CapVI", capvi), ("VampVI (K=500)", vamp)):
        means, seconds = timed(
            lambda m=m: m.get_marginal_ll(
                indices=cells, n_mc_samples=n, return_mean=False, progress_bar=False
            ),
            1,
        )
        rows.append(
            {
                "estimator": "scvi-capvi ImportanceSampledLLMixin",
                "model": label,
                "mean_ll": means[0],
                "mc_se": np.nan,
                "seconds": seconds,
                "cells_per_second": len(cells) / seconds,
            }
        )

    table = pd.DataFrame(rows)
    ours = table.iloc[2]
    for i in (0, 1):
        ref = table.iloc[i]
        diff = ours["mean_ll"] - ref["mean_ll"]
        se = float(np.hypot(ours["mc_se"], ref["mc_se"]))
        table.loc[i, "diff_ours_minus_this"] = diff
        table.loc[i, "agree_within_3se"] = bool(abs(diff) <= 3 * se + 1e-6)
        table.loc[i, "speedup_ours_vs_this"] = ref["seconds"] / ours["seconds"]
    table["n_mc_samples"] = n
    table["n_cells"] = len(cells)
    table["dataset"] = args.dataset
    for key, value in environment().items():
        table[key] = value
    path = write("marginal_ll_throughput" + (f"_{args.tag}" if args.tag else ""), table)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        shown = [
            "estimator",
            "model",
            "mean_ll",
            "mc_se",
            "seconds",
            "cells_per_second",
            "diff_ours_minus_this",
            "agree_within_3se",
            "speedup_ours_vs_this",
        ]
        print(table[shown])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

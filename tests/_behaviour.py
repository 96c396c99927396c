"""Behaviour fixture: fixed weights in, model outputs out (issue 14's "behaviour unchanged").

A refactor may rename or regroup parameters and change the order in which they are
initialised, so a seeded training run cannot be compared across it. What must not change is
what a model computes from given weights. ``python tests/_behaviour.py`` trains small CapVI
(with labels and without: a GMVAE), VampVI (VampPrior + IAF) and VampVI (linear decoder)
models on a seeded toy for a few epochs, and stores in ``tests/data/behaviour.npz``:

- every model's weights (``<model>/state/<parameter name>``);
- its outputs from those weights: posterior means of z, soft predictions (CapVI) and the
  per-cell importance-sampled marginal log-likelihood (seeded, ``N_MC`` samples).

``tests/test_behaviour.py`` builds each model untrained on the same toy, loads the stored
weights (renamed through ``RENAMED`` when a refactor renames them) and checks the outputs.
Re-record only for an intended change of behaviour, and say so in the commit message.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import scvi
import torch

FIXTURE = Path(__file__).parent / "data" / "behaviour.npz"
N_MC = 500
QUIET = {"enable_progress_bar": False}
# parameter names of the recorded state -> names in the current modules
RENAMED: dict[str, str] = {
    # CapVI's mixture prior became a submodule (GaussianMixturePrior)
    "prior_means": "prior.means",
    "prior_logits": "prior.logits",
    "prior_log_scale": "prior.log_scale",
    # VampVI's VampPrior became a submodule (VampPrior)
    "pseudo_inputs_unconstrained": "prior.pseudo_inputs_unconstrained",
    "pseudo_input_batch": "prior.pseudo_input_batch",
}


def toy() -> ad.AnnData:
    """300 cells x 30 genes: 3 expression programmes, 2 batches, every 5th cell unlabelled."""
    rng = np.random.default_rng(14)
    n_cells, n_genes, n_types = 300, 30, 3
    types = rng.integers(0, n_types, n_cells)
    programmes = rng.gamma(1.0, 1.0, (n_types, n_genes)) + 0.05
    programmes[np.arange(n_types), np.arange(n_types)] += 15
    size = rng.uniform(0.5, 2.0, (n_cells, 1))
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(programmes[types] * size * 3).astype("f4")))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    cell_type = np.array([f"T{k}" for k in range(n_types)], dtype=object)[types]
    cell_type[::5] = "Unknown"
    adata.obs["cell_type"] = cell_type
    adata.obs["batch"] = rng.choice(["b1", "b2"], n_cells)
    return adata


def build(name: str, adata: ad.AnnData):
    """The model ``name`` on ``adata`` (registered here), untrained."""
    from scvi_capvi.model import CapVI, VampVI

    small = {"n_hidden": 16, "n_layers": 1, "n_latent": 4}
    if name == "capvi":
        CapVI.setup_anndata(adata, labels_key="cell_type", unlabeled_category="Unknown",
                            batch_key="batch")  # fmt: skip
        return CapVI(adata, classifier_n_hidden=16, **small)
    if name == "gmvae":
        CapVI.setup_anndata(adata, batch_key="batch")
        return CapVI(adata, n_components=3, classifier_n_hidden=16, **small)
    VampVI.setup_anndata(adata, batch_key="batch")
    if name == "vampvi_iaf":
        return VampVI(adata, n_pseudo_inputs=20, posterior="iaf", n_flows=2, **small)
    if name == "vampvi_linear":
        return VampVI(adata, n_pseudo_inputs=20, decoder="linear", **small)
    raise ValueError(name)


MODELS = ("capvi", "gmvae", "vampvi_iaf", "vampvi_linear")
# the marginal LL is an importance-sampled estimate: a refactor (or another device's random
# numbers) may draw its samples in another order, so it is compared at the estimator's own
# spread (seeds 0 and 1 of the recorded models, 500 samples, differ by <= 1.35 nats per cell
# and <= 0.015 in the mean over cells), not bit for bit
LL_ATOL_CELL, LL_ATOL_MEAN = 2.5, 0.05


def loaded(recorded, name: str):
    """The model ``name`` built untrained on the toy, with the recorded weights loaded."""
    model = build(name, toy())
    prefix = f"{name}/state/"
    state = {
        RENAMED.get(key[len(prefix) :], key[len(prefix) :]): torch.as_tensor(recorded[key])
        for key in recorded.files
        if key.startswith(prefix)
    }
    # every stored tensor has a home and every parameter of the model is stored
    model.module.load_state_dict(state, strict=True)
    model.module.eval()
    model.is_trained_ = True
    return model


def check_outputs(recorded, name: str, got: dict, rtol: float = 1e-4, atol: float = 1e-5):
    """``got`` (from :func:`outputs`) matches the recorded outputs of ``name``."""
    out = f"{name}/out/"
    expected = {k[len(out) :]: recorded[k] for k in recorded.files if k.startswith(out)}
    assert set(got) == set(expected)
    np.testing.assert_allclose(got["latent"], expected["latent"], rtol=rtol, atol=atol)
    if "soft" in expected:
        np.testing.assert_allclose(got["soft"], expected["soft"], rtol=rtol, atol=atol)
    ll, ll_expected = got["marginal_ll"], expected["marginal_ll"]
    assert ll.shape == ll_expected.shape and np.isfinite(ll).all()
    assert np.abs(ll - ll_expected).max() <= LL_ATOL_CELL
    assert abs(ll.mean() - ll_expected.mean()) <= LL_ATOL_MEAN


def train(name: str, model, **trainer_kwargs) -> None:
    """Train ``name`` as the fixture was recorded: CapVI's stages 3 epochs each, VampVI 5."""
    if name in ("capvi", "gmvae"):
        model.train(max_epochs=3, frozen_epochs=3, classifier_epochs=3, **QUIET, **trainer_kwargs)
    else:
        model.train(max_epochs=5, **QUIET, **trainer_kwargs)


def outputs(name: str, model) -> dict[str, np.ndarray]:
    """What the model computes from its weights (the marginal LL with a fixed seed)."""
    out = {"latent": model.get_latent_representation()}
    if name in ("capvi", "gmvae"):
        out["soft"] = model.predict(soft=True).to_numpy()
    torch.manual_seed(0)
    out["marginal_ll"] = np.asarray(
        model.get_marginal_ll(n_mc_samples=N_MC, return_mean=False, progress_bar=False)
    )
    return out


def record(path: Path = FIXTURE) -> None:
    arrays = {}
    for name in MODELS:
        scvi.settings.seed = 0
        model = build(name, toy())
        train(name, model)
        model.module.eval()
        for key, value in model.module.state_dict().items():
            arrays[f"{name}/state/{key}"] = value.detach().cpu().numpy()
        for key, value in outputs(name, model).items():
            arrays[f"{name}/out/{key}"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    record()
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.0f} KiB)")

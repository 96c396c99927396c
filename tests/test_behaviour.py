"""The models compute what they computed when ``tests/data/behaviour.npz`` was recorded.

See ``tests/_behaviour.py``: stored weights go into freshly built models, and the posterior
means, soft predictions and per-cell marginal log-likelihoods must match the stored ones.
"""

import numpy as np
import pytest
import torch
from _behaviour import FIXTURE, MODELS, RENAMED, build, outputs, toy

# the marginal LL is an importance-sampled estimate: a refactor may draw its samples in
# another order, so it is compared at the estimator's own spread (seeds 0 and 1 of the
# recorded models, 500 samples, differ by <= 1.35 nats per cell and <= 0.015 in the mean over
# cells), not bit for bit
LL_ATOL_CELL, LL_ATOL_MEAN = 2.5, 0.05


@pytest.fixture(scope="module")
def recorded():
    return np.load(FIXTURE)


def _loaded(recorded, name):
    """The model ``name`` built untrained, with the recorded weights loaded."""
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


@pytest.mark.parametrize("name", MODELS)
def test_stored_weights_give_the_stored_outputs(recorded, name):
    model = _loaded(recorded, name)
    got = outputs(name, model)
    out = f"{name}/out/"
    expected = {k[len(out) :]: recorded[k] for k in recorded.files if k.startswith(out)}
    assert set(got) == set(expected)
    np.testing.assert_allclose(got["latent"], expected["latent"], rtol=1e-4, atol=1e-5)
    if "soft" in expected:
        np.testing.assert_allclose(got["soft"], expected["soft"], rtol=1e-4, atol=1e-5)
    ll, ll_expected = got["marginal_ll"], expected["marginal_ll"]
    assert ll.shape == ll_expected.shape and np.isfinite(ll).all()
    assert np.abs(ll - ll_expected).max() <= LL_ATOL_CELL
    assert abs(ll.mean() - ll_expected.mean()) <= LL_ATOL_MEAN


def test_a_capvi_state_with_the_old_prior_names_loads(recorded):
    """Models saved before the mixture prior became a submodule (flat ``prior_means``,
    ``prior_logits``, ``prior_log_scale``) load through the module's pre-hook."""
    model = build("capvi", toy())
    prefix = "capvi/state/"
    old = {
        k[len(prefix) :]: torch.as_tensor(recorded[k])
        for k in recorded.files
        if k.startswith(prefix)
    }
    assert {"prior_means", "prior_logits", "prior_log_scale"} <= set(old)
    model.module.load_state_dict(old, strict=True)
    torch.testing.assert_close(model.module.prior.means, old["prior_means"])


@pytest.mark.parametrize("name", ["vampvi_iaf", "vampvi_linear"])
def test_a_vampvi_state_with_the_old_pseudo_input_names_loads(recorded, name):
    """Models saved before the VampPrior became a submodule (flat
    ``pseudo_inputs_unconstrained``, ``pseudo_input_batch``) load through the pre-hook."""
    model = build(name, toy())
    prefix = f"{name}/state/"
    old = {
        k[len(prefix) :]: torch.as_tensor(recorded[k])
        for k in recorded.files
        if k.startswith(prefix)
    }
    assert {"pseudo_inputs_unconstrained", "pseudo_input_batch"} <= set(old)
    model.module.load_state_dict(old, strict=True)
    prior = model.module.prior
    torch.testing.assert_close(
        prior.pseudo_inputs_unconstrained, old["pseudo_inputs_unconstrained"]
    )
    torch.testing.assert_close(prior.pseudo_input_batch, old["pseudo_input_batch"])


@pytest.mark.parametrize("name", ["capvi", "vampvi_iaf"])
def test_scvi_tools_get_marginal_ll_reaches_the_modules_estimator(recorded, name):
    """The modules implement ``marginal_ll``, so scvi-tools' own
    ``VAEMixin.get_marginal_ll`` gives, draw for draw, the model's per-cell estimate."""
    from scvi.model.base import VAEMixin

    model = _loaded(recorded, name)
    torch.manual_seed(0)
    ours = model.get_marginal_ll(n_mc_samples=50, return_mean=False, progress_bar=False)
    torch.manual_seed(0)
    theirs = VAEMixin.get_marginal_ll(model, n_mc_samples=50, return_mean=False)
    assert theirs.shape == ours.shape == (model.adata.n_obs,)
    np.testing.assert_allclose(theirs.cpu().numpy(), ours, rtol=1e-5, atol=1e-4)

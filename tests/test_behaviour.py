"""The models compute what they computed when ``tests/data/behaviour.npz`` was recorded.

See ``tests/_behaviour.py``: stored weights go into freshly built models, and the posterior
means, soft predictions and per-cell marginal log-likelihoods must match the stored ones.
"""

import numpy as np
import pytest
import torch
from _behaviour import FIXTURE, MODELS, build, check_outputs, loaded, outputs, toy


@pytest.fixture(scope="module")
def recorded():
    return np.load(FIXTURE)


@pytest.mark.parametrize("name", MODELS)
def test_stored_weights_give_the_stored_outputs(recorded, name):
    model = loaded(recorded, name)
    check_outputs(recorded, name, outputs(name, model))


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

    model = loaded(recorded, name)
    torch.manual_seed(0)
    ours = model.get_marginal_ll(n_mc_samples=50, return_mean=False, progress_bar=False)
    torch.manual_seed(0)
    theirs = VAEMixin.get_marginal_ll(model, n_mc_samples=50, return_mean=False)
    assert theirs.shape == ours.shape == (model.adata.n_obs,)
    np.testing.assert_allclose(theirs.cpu().numpy(), ours, rtol=1e-5, atol=1e-4)

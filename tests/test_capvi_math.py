"""CapVI's equations (paper 000 §2–3) against brute-force versions."""

import math

import numpy as np
import pytest
import torch
from scvi import REGISTRY_KEYS
from torch.distributions import Normal, kl_divergence

from scvi_capvi.module import CapVIModule
from scvi_capvi.module._priors import batch_mixing_penalty, gaussian_kl_to_centroids

N_CELLS, N_GENES, N_TYPES, N_BATCH, N_LATENT = 12, 15, 4, 3, 5


def _module(**kwargs) -> CapVIModule:
    torch.manual_seed(0)
    defaults = {
        "n_input": N_GENES,
        "n_labels": N_TYPES,
        "n_batch": N_BATCH,
        "n_latent": N_LATENT,
        "n_hidden": 16,
        "n_layers": 1,
        "library_log_means": np.full((1, N_BATCH), 3.0),
        "library_log_vars": np.full((1, N_BATCH), 0.5),
    }
    module = CapVIModule(**{**defaults, **kwargs})
    # move the centroids and weights away from their initial values so the test is generic
    with torch.no_grad():
        module.prior.logits.copy_(torch.randn(N_TYPES))
    return module.eval()


def _tensors(labels=None):
    g = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.rand(N_CELLS, N_GENES, generator=g) * 5)
    if labels is None:
        labels = torch.full((N_CELLS, 1), N_TYPES)  # the unlabelled code
    return {
        REGISTRY_KEYS.X_KEY: x,
        REGISTRY_KEYS.BATCH_KEY: torch.arange(N_CELLS).remainder(N_BATCH).view(-1, 1),
        REGISTRY_KEYS.LABELS_KEY: labels,
    }


@pytest.mark.parametrize("learn_scale", [False, True])
def test_closed_form_kl_matches_monte_carlo(learn_scale):
    torch.manual_seed(0)
    m, v = torch.randn(3, N_LATENT), torch.rand(3, N_LATENT) + 0.2
    mu = torch.randn(N_TYPES, N_LATENT)
    log_scale = torch.log(torch.rand(N_TYPES) + 0.3) if learn_scale else torch.tensor([-0.5])
    closed = gaussian_kl_to_centroids(m, v, mu, log_scale)
    q = Normal(m, v.sqrt())
    z = q.sample((200_000,))  # (S, 3, D)
    scale = log_scale.exp().expand(N_TYPES)
    for c in range(N_TYPES):
        log_p = Normal(mu[c], scale[c]).log_prob(z).sum(-1)
        mc = (q.log_prob(z).sum(-1) - log_p).mean(0)
        torch.testing.assert_close(closed[:, c], mc, rtol=0.02, atol=0.05)
        exact = kl_divergence(q, Normal(mu[c], scale[c].expand(N_LATENT))).sum(-1)
        torch.testing.assert_close(closed[:, c], exact, rtol=1e-4, atol=1e-4)


def _brute_force_bounds(module, tensors, inf, gen):
    """L(x, c) for every c, with torch's own KL, and U(x) = sum_c q L + H(q)."""
    x = tensors[REGISTRY_KEYS.X_KEY]
    rec = -gen["px"].log_prob(x).sum(-1)
    qz, ql = inf["qz"], inf["ql"]
    b = tensors[REGISTRY_KEYS.BATCH_KEY].view(-1)
    prior_l = Normal(
        module.library_log_means[0, b][:, None], module.library_log_vars[0, b][:, None].sqrt()
    )
    kl_l = kl_divergence(ql, prior_l).sum(-1)
    log_phi = torch.log_softmax(module.prior.logits, -1)
    scale = module.prior.log_scale.exp().expand(N_TYPES)
    bounds = torch.stack(
        [
            -rec
            - kl_divergence(qz, Normal(module.prior.means[c], scale[c].expand(N_LATENT))).sum(-1)
            - kl_l
            + log_phi[c]
            for c in range(N_TYPES)
        ],
        dim=1,
    )
    q = torch.softmax(inf["class_logits"], -1)
    unlabelled = (q * bounds).sum(-1) - (q * q.log()).sum(-1)
    return bounds, unlabelled


@pytest.mark.parametrize("learn_scale", [False, True])
def test_unlabelled_bound_equals_brute_force_sum(learn_scale):
    module = _module(mixing_penalty=0.0, learn_prior_scale=learn_scale)
    tensors = _tensors()
    with torch.no_grad():
        inf, gen, out = module(tensors)
        _, unlabelled = _brute_force_bounds(module, tensors, inf, gen)
    neg_elbo = out.reconstruction_loss["reconstruction_loss"] + sum(out.kl_local.values())
    torch.testing.assert_close(-neg_elbo, unlabelled, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out.loss, -unlabelled.mean(), rtol=1e-5, atol=1e-3)


def test_labelled_bound_with_semi_supervised():
    labels = torch.tensor([0, 1, 2, 3, N_TYPES, 1, 0, N_TYPES, 2, 3, 3, 0]).view(-1, 1)
    module = _module(mixing_penalty=0.0, semi_supervised=True)
    tensors = _tensors(labels)
    with torch.no_grad():
        inf, gen, out = module(tensors)
        bounds, unlabelled = _brute_force_bounds(module, tensors, inf, gen)
    lab = labels.view(-1) < N_TYPES
    expected = torch.where(
        lab, bounds.gather(1, labels.clamp_max(N_TYPES - 1)).view(-1), unlabelled
    )
    neg_elbo = out.reconstruction_loss["reconstruction_loss"] + sum(out.kl_local.values())
    torch.testing.assert_close(-neg_elbo, expected, rtol=1e-5, atol=1e-3)
    # by default (paper) the annotations are ignored in the bound
    module.semi_supervised = False
    with torch.no_grad():
        out_default = module.loss(tensors, inf, gen)
    neg_default = out_default.reconstruction_loss["reconstruction_loss"] + sum(
        out_default.kl_local.values()
    )
    torch.testing.assert_close(-neg_default, unlabelled, rtol=1e-5, atol=1e-3)


def test_mixing_penalty_equals_naive_double_loop():
    torch.manual_seed(3)
    n, d, n_types, n_batch, lam = 30, 4, 3, 5, 0.37
    z = torch.randn(n, d)
    q = torch.softmax(torch.randn(n, n_types), -1)
    batch = torch.randint(0, n_batch, (n, 1))
    mu = torch.randn(n_types, d)
    naive = 0.0
    for c in range(n_types):
        for s in range(n_batch):
            acc = torch.zeros(d)
            for i in range(n):
                if batch[i, 0] == s:
                    acc += q[i, c] * (z[i] - mu[c])
            naive += float(acc.pow(2).sum())
    naive *= lam / (n_types * n_batch)
    fast = batch_mixing_penalty(z, q, batch, mu, n_batch, lam)
    assert math.isclose(float(fast), naive, rel_tol=1e-5)
    assert float(batch_mixing_penalty(z, q, batch, mu, n_batch, 0.0)) == 0.0


def test_penalty_enters_loss_per_cell():
    module = _module(mixing_penalty=0.5)
    tensors = _tensors()
    with torch.no_grad():
        inf, gen, out = module(tensors)
        no_pen = _module(mixing_penalty=0.0).loss(tensors, inf, gen)
    expected = batch_mixing_penalty(
        inf["qz"].loc, torch.softmax(inf["class_logits"], -1), tensors[REGISTRY_KEYS.BATCH_KEY],
        module.prior.means, N_BATCH, 0.5,
    ) / N_CELLS  # fmt: skip
    torch.testing.assert_close(out.loss - no_pen.loss, expected, rtol=1e-4, atol=1e-5)


def test_log_prior_is_the_mixture_density():
    # sigma = 1 keeps the brute-force density (no log-sum-exp) away from underflow
    module = _module(learn_prior_scale=True, prior_scale=1.0)
    z = module.prior.means[torch.randint(0, N_TYPES, (7, 2))] + torch.randn(7, 2, N_LATENT)
    phi = torch.softmax(module.prior.logits, -1)
    scale = module.prior.log_scale.exp()
    dens = sum(
        phi[c] * Normal(module.prior.means[c], scale[c]).log_prob(z).sum(-1).exp()
        for c in range(N_TYPES)
    )
    torch.testing.assert_close(module.prior.log_prob(z), dens.log(), rtol=1e-4, atol=1e-4)


def test_importance_weights_shape_and_bound():
    module = _module()
    tensors = _tensors()
    torch.manual_seed(0)
    log_w = module.log_importance_weights(tensors, n_samples=400)
    assert log_w.shape == (400, N_CELLS)
    assert torch.isfinite(log_w).all()
    # E_q[log w] is the ELBO of the marginal model; log-mean-exp of w is >= it (Jensen)
    ll = torch.logsumexp(log_w, 0) - math.log(400)
    assert (ll >= log_w.mean(0)).all()


def test_classification_loss_is_class_weighted():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, N_TYPES, N_TYPES]).view(-1, 1)
    weights = torch.tensor([1.0, 4.0, 1.0, 1.0])
    module = _module(class_weights=weights)
    tensors = _tensors(labels)
    out = module.classification_loss(tensors)
    logits = module.classify(tensors[REGISTRY_KEYS.X_KEY][:10])
    y = labels.view(-1)[:10]
    expected = torch.nn.functional.cross_entropy(logits, y, weight=weights)
    torch.testing.assert_close(out["loss"], expected)
    assert int(out["n"]) == 10
    assert not torch.isclose(out["loss"], out["cross_entropy"])


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="prior_scale"):
        _module(prior_scale=0.0)
    with pytest.raises(ValueError, match="mixing_penalty"):
        _module(mixing_penalty=-1.0)
    with pytest.raises(ValueError, match="gene_likelihood"):
        _module(gene_likelihood="poisson")


def test_importance_sampling_passes_grow_with_free_gpu_memory(monkeypatch):
    """On the CPU a pass holds at most 2.5e7 (sample x cell x gene) values; on a GPU the budget
    follows its free memory (checked here with a stand-in for ``torch.cuda.mem_get_info``)."""
    from scvi_capvi.module import _utils

    cells, genes = 128, 2000
    assert _utils.default_samples_per_pass(1000, cells, genes) == int(2.5e7 // (cells * genes))
    assert _utils.default_samples_per_pass(1000, cells, genes, device="cpu") == 97
    # half the free memory, for 12 float32 tensors of (samples x cells x genes); at least 1
    for free, expected in ((80 * 2**30, 1000), (8 * 2**30, 349), (2**20, 1)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free: (f, f))
        got = _utils.default_samples_per_pass(1000, cells, genes, device="cuda")
        assert got == expected

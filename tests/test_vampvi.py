"""VampVI / VampPriorModule / NBAutoencoder (paper 001): known densities, flows, skeleton."""

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from pyro.distributions import TransformedDistribution
from torch.distributions import Independent, Normal, kl_divergence

from scvi_capvi.model import NBAutoencoder, VampVI
from scvi_capvi.module import NBAutoencoderModule, VampPriorModule
from scvi_capvi.module._priors import diagonal_gaussian_mixture_log_prob
from scvi_capvi.module._vamp import QZ_BASE_KEY

N_CELLS, N_GENES = 200, 50
TRAIN = {"max_epochs": 2, "batch_size": 64, "enable_progress_bar": False}


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adata():
    """200 cells × 50 genes of NB counts: 3 cell types, 2 batches with a library shift."""
    rng = np.random.default_rng(0)
    cell_type = rng.integers(0, 3, N_CELLS)
    batch = rng.integers(0, 2, N_CELLS)
    profile = rng.gamma(1.0, 1.0, size=(3, N_GENES))
    mean = profile[cell_type] * (4.0 + 4.0 * batch)[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    adata = ad.AnnData(
        counts,
        obs=pd.DataFrame(
            {
                "cell_type": pd.Categorical([f"type{c}" for c in cell_type]),
                "batch": pd.Categorical([f"b{b}" for b in batch]),
            },
            index=[f"cell{i}" for i in range(N_CELLS)],
        ),
    )
    adata.var_names = [f"gene{i}" for i in range(N_GENES)]
    adata.layers["counts"] = adata.X.copy()
    return adata


def _counts(n, g=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.rand(n, g, generator=gen) * 10)


# ---------------------------------------------------------------- VampPrior densities
def _brute_force_vamp_log_prior(module, z, transforms=()):
    """(1/K) Σ_k q(z | u_k), each component built separately (pyro for the flow)."""
    u = module.prior.pseudo_inputs
    u_norm = torch.log1p(u / u.sum(-1, keepdim=True) * 1e4)
    qu, _ = module.z_encoder(u_norm, module.prior.pseudo_input_batch)
    comps = []
    for k in range(u.shape[0]):
        base = Independent(Normal(qu.loc[k], qu.scale[k]), 1)
        dist = TransformedDistribution(base, list(transforms)) if transforms else base
        comps.append(dist.log_prob(z.clone()))  # clone: no cached inverse, real inversion
    return torch.logsumexp(torch.stack(comps, -1), -1) - math.log(u.shape[0])


@torch.no_grad()
def test_vamp_log_prior_equals_brute_force_mixture():
    torch.manual_seed(0)
    module = VampPriorModule(20, n_latent=4, n_pseudo_inputs=3, pseudo_input_init=_counts(3))
    module.eval()
    z = 2.0 * torch.randn(7, 4)
    log_p = module.log_prior(z, z, torch.zeros(7))
    expected = _brute_force_vamp_log_prior(module, z)
    torch.testing.assert_close(log_p, expected, atol=1e-4, rtol=1e-5)
    # the matrix-product form agrees with a direct (..., K, D) evaluation on 3-D input
    means, variances = torch.randn(5, 4), torch.rand(5, 4) + 0.1
    zz = torch.randn(3, 6, 4)
    direct = Normal(means, variances.sqrt()).log_prob(zz.unsqueeze(-2)).sum(-1)
    torch.testing.assert_close(
        diagonal_gaussian_mixture_log_prob(zz, means, variances),
        torch.logsumexp(direct, -1) - math.log(5),
        atol=1e-4,
        rtol=1e-5,
    )


@torch.no_grad()
def test_vamp_iaf_log_prior_equals_mixture_of_flow_posteriors():
    torch.manual_seed(1)
    module = VampPriorModule(
        20, n_latent=4, n_pseudo_inputs=3, pseudo_input_init=_counts(3), posterior="iaf"
    )
    module.eval()
    z_base = torch.randn(6, 4)
    z, log_det = module.flow_forward(z_base)
    assert not torch.allclose(z, z_base)
    log_p = module.log_prior(z, z_base, log_det)
    expected = _brute_force_vamp_log_prior(module, z, module.flows)
    torch.testing.assert_close(log_p, expected, atol=1e-3, rtol=1e-4)


def test_vamp_with_one_pseudo_input_reduces_to_gaussian_kl():
    torch.manual_seed(2)
    module = VampPriorModule(20, n_latent=3, n_pseudo_inputs=1, pseudo_input_init=_counts(1))
    module.eval()
    x, batch = _counts(4, seed=3), torch.zeros(4, 1, dtype=torch.long)
    with torch.no_grad():
        inf = module.inference(x, batch, n_samples=20000)
        mc_kl = module.kl_z(inf)  # (samples, cells): log q(z|x) - log p(z)
        qu = module.prior.components(module.z_encoder)
        p_single = Normal(qu.loc[0], qu.scale[0])
        # exact: with K = 1 the prior density is that one Gaussian
        torch.testing.assert_close(
            module.log_prior(inf["z"], inf["z_base"], inf["flow_log_det"]),
            p_single.log_prob(inf["z"]).sum(-1),
            atol=1e-3,
            rtol=1e-4,
        )
        closed = kl_divergence(inf[QZ_BASE_KEY], p_single).sum(-1)
    se = mc_kl.std(0) / math.sqrt(mc_kl.shape[0])
    assert torch.all((mc_kl.mean(0) - closed).abs() < 4 * se + 1e-3)
    assert torch.all(closed > 0)


# ---------------------------------------------------------------- IAF
@torch.no_grad()
def test_iaf_log_q_matches_pyro_transformed_distribution():
    torch.manual_seed(4)
    module = VampPriorModule(20, n_latent=5, prior="normal", posterior="iaf", n_flows=5)
    module.eval()
    inf = module.inference(_counts(8, seed=5), torch.zeros(8, 1, dtype=torch.long))
    qz = inf["qz"]
    assert isinstance(qz, TransformedDistribution)
    assert len(qz.transforms) == 5
    torch.testing.assert_close(inf["log_qz"], qz.log_prob(inf["z"].clone()), atol=1e-3, rtol=1e-4)
    # and the flow is not a no-op on the density
    assert not torch.allclose(inf["log_qz"], inf[QZ_BASE_KEY].log_prob(inf["z"]).sum(-1))


def test_iaf_flows_change_with_training(adata):
    VampVI.setup_anndata(adata, layer="counts", batch_key="batch")
    torch.manual_seed(6)
    model = VampVI(adata, n_latent=4, prior="normal", posterior="iaf", n_hidden=32)
    z_base = torch.randn(50, 4)
    with torch.no_grad():
        before = model.module.flow_forward(z_base)[0].clone()
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    model.module.eval()
    with torch.no_grad():
        after, log_det = model.module.flow_forward(z_base)
    assert (after - before).abs().max() > 1e-3
    assert torch.isfinite(log_det).all()


# ---------------------------------------------------------------- linear decoder
def test_linear_decoder_loadings_and_mean(adata):
    VampVI.setup_anndata(adata, layer="counts")  # no batch: decoder sees z only
    model = VampVI(adata, n_latent=4, decoder="linear", n_pseudo_inputs=20, n_hidden=32)
    model.train(**TRAIN)
    loadings = model.get_loadings()
    assert loadings.shape == (N_GENES, 4)
    assert list(loadings.index) == list(adata.var_names)
    assert list(loadings.columns) == [f"Z_{i}" for i in range(4)]
    bn = model.module.decoder.factor_regressor.fc_layers[0][1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))

    module = model.module.eval()
    z = torch.randn(10, 4)
    library = torch.zeros(10, 1)
    batch = torch.zeros(10, 1, dtype=torch.long)
    with torch.no_grad():
        scale = module.generative(z, library, batch)["px"].scale
        # softmax is shift-invariant, so log ρ(0) is the decoder's bias up to a constant
        bias = module.generative(torch.zeros(1, 4), library[:1], batch[:1])["px"].scale.log()
    expected = torch.softmax(z @ torch.as_tensor(loadings.values).T + bias, dim=-1)
    torch.testing.assert_close(scale, expected, atol=1e-5, rtol=1e-4)

    VampVI.setup_anndata(adata, layer="counts")
    nonlinear = VampVI(adata, n_latent=4, prior="normal")
    with pytest.raises(ValueError, match="linear decoder"):
        nonlinear.get_loadings()


# ---------------------------------------------------------------- pseudo-inputs
def test_pseudo_inputs_start_from_seeded_cells(adata):
    VampVI.setup_anndata(adata, layer="counts", batch_key="batch")
    scvi.settings.seed = 3
    a = VampVI(adata, n_pseudo_inputs=30).module.prior.pseudo_inputs.detach().numpy()
    scvi.settings.seed = 3
    b = VampVI(adata, n_pseudo_inputs=30).module.prior.pseudo_inputs.detach().numpy()
    np.testing.assert_array_equal(a, b)
    x = np.maximum(adata.layers["counts"], 1e-3)
    dist = np.abs(a[:, None, :] - x[None]).max(-1)  # (K, cells)
    assert (dist.min(1) < 1e-3).all()  # every pseudo-input is one of the cells
    # more pseudo-inputs than cells: drawn with replacement, still valid
    assert VampVI(adata, n_pseudo_inputs=N_CELLS + 10).module.prior.pseudo_inputs.shape[0] == 210


# ---------------------------------------------------------------- skeleton
VARIANTS = {
    "vae": {"prior": "normal"},
    "vamp": {"prior": "vamp"},
    "iaf": {"prior": "normal", "posterior": "iaf"},
    "vamp_iaf": {"prior": "vamp", "posterior": "iaf"},
    "linear_vamp": {"prior": "vamp", "decoder": "linear"},
    "vamp_latent_library_zinb": {
        "prior": "vamp",
        "use_observed_lib_size": False,
        "gene_likelihood": "zinb",
        "dispersion": "gene-batch",
    },
    "autoencoder": None,
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_skeleton(adata, variant, tmp_path):
    kwargs = VARIANTS[variant]
    cls = NBAutoencoder if kwargs is None else VampVI
    cls.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    scvi.settings.seed = 0
    extra = {} if kwargs is None else {"n_pseudo_inputs": 25, **kwargs}
    model = cls(adata, n_latent=5, n_hidden=32, **extra)
    model.train(**{**TRAIN, "max_epochs": 3})
    loss = model.history["reconstruction_loss_train"].to_numpy().astype(float).ravel()
    assert np.isfinite(loss).all() and loss[-1] < loss[0]

    latent = model.get_latent_representation()
    assert latent.shape == (N_CELLS, 5) and np.isfinite(latent).all()
    np.testing.assert_array_equal(latent, model.get_latent_representation())  # deterministic
    rec = model.get_reconstruction_error()["reconstruction_loss"]
    assert np.isfinite(float(rec))
    expr = model.get_normalized_expression(n_samples=2, return_mean=True)
    assert expr.shape == (N_CELLS, N_GENES)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)

    if kwargs is not None:
        torch.manual_seed(0)
        ll = model.get_marginal_ll(n_mc_samples=20, n_mc_samples_per_pass=7, progress_bar=False)
        elbo = float(model.get_elbo())
        assert np.isfinite(ll) and ll < 0
        assert ll > elbo - 1.0  # importance sampling tightens the bound (up to MC noise)
        if variant == "vamp":
            de = model.differential_expression(groupby="cell_type", group1="type0", mode="change")
            assert {"proba_de", "lfc_mean", "bayes_factor"} <= set(de.columns)
            assert len(de) == N_GENES and np.isfinite(de["lfc_mean"]).all()
        if variant == "linear_vamp":
            assert model.get_loadings().shape == (N_GENES, 5)
        if kwargs.get("posterior") == "iaf":
            with pytest.raises(ValueError, match="IAF"):
                model.get_latent_representation(return_dist=True)

    model.save(tmp_path / "m", overwrite=True, save_anndata=False)
    loaded = cls.load(tmp_path / "m", adata=adata)
    np.testing.assert_array_equal(latent, loaded.get_latent_representation())
    if kwargs is not None:
        torch.manual_seed(0)
        ll2 = loaded.get_marginal_ll(n_mc_samples=20, n_mc_samples_per_pass=7, progress_bar=False)
        assert ll2 == ll


def test_load_query_data_with_new_batch(adata):
    VampVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = VampVI(adata, n_latent=4, n_pseudo_inputs=20, n_hidden=32)
    model.train(**TRAIN)
    query = adata[:60].copy()
    query.obs["batch"] = pd.Categorical(["b_new"] * 60)
    qmodel = VampVI.load_query_data(query, model)
    torch.testing.assert_close(
        qmodel.module.prior.pseudo_inputs_unconstrained,
        model.module.prior.pseudo_inputs_unconstrained,
    )
    qmodel.train(**{**TRAIN, "max_epochs": 1})
    assert qmodel.get_latent_representation().shape == (60, 4)


def test_autoencoder_module_has_no_kl():
    module = NBAutoencoderModule(20, n_latent=3)
    tensors = {
        "X": _counts(5),
        "batch": torch.zeros(5, 1, dtype=torch.long),
        "labels": torch.zeros(5, 1, dtype=torch.long),
    }
    _, _, losses = module(tensors)
    torch.testing.assert_close(
        losses.loss, losses.reconstruction_loss["reconstruction_loss"].mean()
    )


def test_module_is_scvi_tools_vae_with_only_its_own_parameters():
    """VampPriorModule is scvi-tools' VAE; the library encoder VAE always builds is dropped
    with the observed library size, and the normal prior has no parameters."""
    from scvi.module import VAE

    module = VampPriorModule(20, n_batch=2, n_latent=3, n_pseudo_inputs=4)
    assert isinstance(module, VAE) and not hasattr(module, "l_encoder")
    assert module.prior_type == "vamp" and module.prior.pseudo_inputs.shape == (4, 20)
    assert module.prior.pseudo_input_batch.shape == (4, 1)
    normal = VampPriorModule(20, n_latent=3, prior="normal")
    assert normal.prior is None and not any(k.startswith("prior") for k in normal.state_dict())
    latent_library = VampPriorModule(
        20,
        n_batch=2,
        prior="normal",
        dispersion="gene-batch",
        use_observed_lib_size=False,
        library_log_means=np.zeros((1, 2)),
        library_log_vars=np.ones((1, 2)),
    )
    assert latent_library.px_r.shape == (20, 2) and hasattr(latent_library, "l_encoder")


def test_bad_options_raise():
    with pytest.raises(ValueError, match="prior"):
        VampPriorModule(10, prior="gmm")
    with pytest.raises(ValueError, match="pseudo_input_init"):
        VampPriorModule(10, n_pseudo_inputs=3, pseudo_input_init=torch.ones(2, 10))
    with pytest.raises(ValueError, match="non-negative"):
        VampPriorModule(10, n_pseudo_inputs=2, pseudo_input_init=-torch.ones(2, 10))
    with pytest.raises(ValueError, match="library_log_means"):
        VampPriorModule(10, use_observed_lib_size=False)

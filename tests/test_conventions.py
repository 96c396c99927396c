"""scvi-tools conventions: SCANVI's setup_anndata, covariates, from_scvi_model, signatures,
hyperparameter errors, non-integer counts, history names and stage-aware progress."""

import inspect

import numpy as np
import pytest
import scvi
import torch
from scvi import REGISTRY_KEYS
from test_capvi_model import QUIET, SMALL, synthetic_adata

from scvi_capvi.model import CapVI, VampVI

TINY_TRAIN = {"classifier_epochs": 2, "frozen_epochs": 1, "max_epochs": 1, **QUIET}


@pytest.fixture
def adata():
    a = synthetic_adata(n_cells=120, n_genes=30)
    rng = np.random.default_rng(1)
    a.obs["donor"] = rng.choice(["d1", "d2", "d3"], a.n_obs)
    a.obs["pct_mt"] = rng.uniform(0.0, 5.0, a.n_obs)
    a.obs["size_factor"] = np.asarray(a.layers["counts"].sum(1)).ravel() / 100.0
    return a


def test_setup_anndata_has_scanvis_argument_order():
    ours = list(inspect.signature(CapVI.setup_anndata).parameters)
    scanvi = list(inspect.signature(scvi.model.SCANVI.setup_anndata).parameters)
    shared = [p for p in scanvi if p not in ("use_minified", "kwargs")]
    assert ours[: len(shared)] == shared


def test_positional_setup_registers_layer_and_batch(adata):
    adata.X = adata.X * 0  # only the "counts" layer holds counts
    CapVI.setup_anndata(adata, "cell_type", "Unknown", "counts", "batch")
    model = CapVI(adata, **SMALL)
    args = model.registry_["setup_args"]
    assert args["layer"] == "counts"
    assert args["batch_key"] == "batch"
    assert model.summary_stats.n_batch == 2


def _forward(module, tensors):
    module.eval()
    with torch.no_grad():
        inf = module.inference(**module._get_inference_input(tensors))
        inf["z"] = inf["qz"].loc  # no sampling noise
        gen = module.generative(**module._get_generative_input(tensors, inf))
    return inf["qz"].loc, gen["px"].mu


@pytest.mark.parametrize("encode_covariates", [False, True])
def test_covariates_reach_decoder_and_optionally_encoder(adata, encode_covariates):
    CapVI.setup_anndata(
        adata,
        "cell_type",
        layer="counts",
        batch_key="batch",
        categorical_covariate_keys=["donor"],
        continuous_covariate_keys=["pct_mt"],
    )
    model = CapVI(adata, encode_covariates=encode_covariates, **SMALL)
    module = model.module
    assert module.n_cats_per_cov == [3]
    assert module.n_continuous_cov == 1
    tensors = next(iter(model._make_data_loader(adata=adata, batch_size=32)))
    loc, mu = _forward(module, tensors)
    for key, shift in ((REGISTRY_KEYS.CAT_COVS_KEY, 1), (REGISTRY_KEYS.CONT_COVS_KEY, 10.0)):
        changed = dict(tensors)
        if key == REGISTRY_KEYS.CAT_COVS_KEY:
            changed[key] = (tensors[key] + shift) % 3
        else:
            changed[key] = tensors[key] + shift
        loc2, mu2 = _forward(module, changed)
        assert not torch.allclose(mu, mu2), key  # the decoder reads the covariate
        assert torch.allclose(loc, loc2) != encode_covariates, key
    # the batch enters the encoders either way (Clivio et al. 2022), unlike scVI's default
    batch = REGISTRY_KEYS.BATCH_KEY
    other_batch = {**tensors, batch: (tensors[batch] + 1) % module.n_batch}
    assert module.n_batch > 1 and not torch.allclose(loc, _forward(module, other_batch)[0])
    model.train(**TINY_TRAIN)
    assert np.isfinite(model.get_marginal_ll(n_mc_samples=3, progress_bar=False))
    assert model.get_latent_representation().shape == (adata.n_obs, SMALL["n_latent"])


def test_size_factors_scale_the_decoded_mean(adata):
    CapVI.setup_anndata(adata, "cell_type", layer="counts", size_factor_key="size_factor")
    model = CapVI(adata, **SMALL)
    assert model.module.use_size_factor_key and model.module.use_observed_lib_size
    tensors = next(iter(model._make_data_loader(adata=adata, batch_size=32)))
    _, mu = _forward(model.module, tensors)
    key = REGISTRY_KEYS.SIZE_FACTOR_KEY
    doubled = {**tensors, key: 2 * tensors[key]}
    _, mu2 = _forward(model.module, doubled)
    torch.testing.assert_close(mu2, 2 * mu)


def test_covariate_arguments_are_checked(adata):
    with pytest.raises(KeyError, match="categorical_covariate_keys"):
        CapVI.setup_anndata(adata, "cell_type", categorical_covariate_keys=["nope"])
    with pytest.raises(TypeError, match="list of column names"):
        CapVI.setup_anndata(adata, "cell_type", continuous_covariate_keys="pct_mt")
    adata.obs["size_factor"] = 0.0
    with pytest.raises(ValueError, match="size_factor_key"):
        CapVI.setup_anndata(adata, "cell_type", size_factor_key="size_factor")
    with pytest.raises(TypeError, match="categorical_covariate_keys"):
        VampVI.setup_anndata(adata, categorical_covariate_keys=["donor"])


def test_from_scvi_model_starts_where_scvi_ended_then_trains_and_predicts(adata):
    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
    vae = scvi.model.SCVI(adata, n_latent=5, n_hidden=32)
    with pytest.raises(ValueError, match="not been trained"):
        CapVI.from_scvi_model(vae, labels_key="cell_type")
    vae.train(max_epochs=5, **QUIET)
    with pytest.raises(ValueError, match="labels_key"):
        CapVI.from_scvi_model(vae)
    with pytest.warns(UserWarning, match="Ignoring n_latent"):
        model = CapVI.from_scvi_model(vae, labels_key="cell_type", n_latent=7)
    assert model.module.n_latent == 5
    assert model.registry_["setup_args"]["layer"] == "counts"
    # same encoder: the batch columns CapVI adds start at zero
    latent = vae.get_latent_representation()
    model.module.eval()  # as a trained model: no dropout, batch-norm running statistics
    model.is_trained_ = True  # only to read the untrained latent without a warning
    np.testing.assert_allclose(model.get_latent_representation(), latent, atol=1e-5)
    model.is_trained_ = False
    labels = adata.obs["cell_type"].to_numpy()
    for k, name in enumerate(model.cell_types):
        expected = latent[labels == name].mean(0)
        np.testing.assert_allclose(model.module.prior.means[k].detach(), expected, atol=1e-5)
    model.train(**QUIET)
    assert model.history["stage3_elbo_train"].shape[0] <= 10  # the fine-tuning budget
    accuracy = np.mean(model.predict() == adata.obs["true_type"].to_numpy())
    assert accuracy > 0.8


@pytest.mark.parametrize(
    ("cls", "kwargs", "argument"),
    [
        (CapVI, {"n_latent": 0}, "n_latent"),
        (CapVI, {"n_hidden": 2.5}, "n_hidden"),
        (CapVI, {"n_layers": 0}, "n_layers"),
        (CapVI, {"dropout_rate": 1.0}, "dropout_rate"),
        (CapVI, {"prior_scale": -1.0}, "prior_scale"),
        (CapVI, {"prior_scale": float("nan")}, "prior_scale"),
        (CapVI, {"mixing_penalty": -0.1}, "mixing_penalty"),
        (CapVI, {"classifier_dropout_rate": -0.1}, "classifier_dropout_rate"),
        (VampVI, {"n_latent": 0}, "n_latent"),
        (VampVI, {"n_pseudo_inputs": 0}, "n_pseudo_inputs"),
        (VampVI, {"dropout_rate": 2.0}, "dropout_rate"),
        (VampVI, {"n_flows": True}, "n_flows"),
    ],
)
def test_bad_hyperparameters_name_the_argument(adata, cls, kwargs, argument):
    if cls is CapVI:
        cls.setup_anndata(adata, "cell_type", layer="counts")
    else:
        cls.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match=f"`{argument}`"):
        cls(adata, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"train_size": 1.5}, "train_size"),
        ({"train_size": 0.8, "validation_size": 0.5}, "validation_size"),
    ],
)
def test_bad_train_arguments_name_the_argument(adata, kwargs, argument):
    CapVI.setup_anndata(adata, "cell_type", layer="counts")
    with pytest.raises(ValueError, match=f"`{argument}`"):
        CapVI(adata, **SMALL).train(**kwargs, **QUIET)
    VampVI.setup_anndata(adata, layer="counts")
    with pytest.raises(ValueError, match=f"`{argument}`"):
        VampVI(adata, n_pseudo_inputs=10).train(**kwargs, **QUIET)


def test_non_integer_counts_need_an_explicit_opt_in(adata):
    adata.layers["counts"] = adata.layers["counts"] * 1.5  # e.g. ambient-corrected
    with pytest.raises(ValueError, match="allow_non_integer_counts=True"):
        CapVI.setup_anndata(adata, "cell_type", layer="counts")
    with pytest.warns(UserWarning, match="non-integer"):
        CapVI.setup_anndata(adata, "cell_type", layer="counts", allow_non_integer_counts=True)
    model = CapVI(adata, **SMALL)
    with pytest.warns(UserWarning, match="non-integer"):  # checked again before training
        model.train(**TINY_TRAIN)
    assert model.is_trained_


def test_history_has_scvi_tools_names_and_progress_names_the_stage(adata, capfd):
    CapVI.setup_anndata(adata, "cell_type", layer="counts", batch_key="batch")
    model = CapVI(adata, **SMALL)
    model.train(classifier_epochs=2, frozen_epochs=1, max_epochs=2)
    shown = "".join(capfd.readouterr())  # scvi-tools' tqdm bars write to stdout
    for stage in ("stage 1/3: classifier", "stage 2/3: frozen classifier", "stage 3/3: end to"):
        assert f"CapVI {stage}" in shown
    for key in ("elbo_train", "reconstruction_loss_train", "elbo_validation"):
        assert model.history[key].equals(model.history[f"stage3_{key}"])
    assert len(model.history["elbo_train"]) == 2


def test_public_signatures_are_explicit():
    query = inspect.signature(CapVI.load_query_data).parameters
    for name in ("adata", "reference_model", "freeze_classifier", "freeze_expression", "unfrozen"):
        assert name in query
    assert CapVI.load_query_data.__doc__
    train = inspect.signature(VampVI.train).parameters
    assert "args" not in train
    assert {"max_epochs", "batch_size", "plan_kwargs", "early_stopping"} <= set(train)


def test_repr_is_plain_text(adata, capsys):
    CapVI.setup_anndata(adata, "cell_type", layer="counts")
    text = repr(CapVI(adata, **SMALL))
    assert text.startswith("CapVI model: 3 prior modes") and "Not Trained" in text
    assert "\x1b[" not in text and capsys.readouterr().out == ""  # nothing printed

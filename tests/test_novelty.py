"""Unknown cell types and calibration: novelty scores, unknown calls, temperature scaling."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from sklearn.metrics import roc_auc_score
from test_capvi_model import QUIET, SMALL, synthetic_adata

from scvi_capvi.benchmark import leave_one_type_out
from scvi_capvi.metrics import expected_calibration_error, query_enrichment
from scvi_capvi.model import CapVI, _novelty_reference
from scvi_capvi.model._novelty import NOVELTY_METHODS, conformal_threshold


def _toy_with_hidden_type(seed=0):
    """Four well-separated types; T3 is never annotated (its cells stay, unlabelled)."""
    adata = synthetic_adata(n_cells=400, n_genes=40, n_types=4, seed=seed)
    hidden = (adata.obs["true_type"] == "T3").to_numpy()
    adata.obs["cell_type"] = np.where(hidden, "Unknown", adata.obs["true_type"])
    return adata, hidden


@pytest.fixture(scope="module")
def hidden_model():
    scvi.settings.seed = 0
    adata, hidden = _toy_with_hidden_type()
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch", layer="counts")
    model = CapVI(adata, semi_supervised=True, **SMALL)
    model.train(max_epochs=40, classifier_epochs=40, frozen_epochs=40, train_size=0.8, **QUIET)
    return model, adata, hidden


@pytest.mark.parametrize("method", ["ensemble", "latent", "entropy", "combined"])
def test_novelty_score_ranks_never_labelled_cluster_first(hidden_model, method):
    model, adata, hidden = hidden_model
    assert model.cell_types.tolist() == ["T0", "T1", "T2"]
    score = model.get_novelty_score(method=method)
    assert score.shape == (adata.n_obs,) and np.isfinite(score).all()
    assert roc_auc_score(hidden, score) > 0.9


@pytest.fixture(scope="module")
def removed_model():
    """The realistic case: the reference never had the type (in `hidden_model` its cells are
    in the training data, so the decoder learns to reconstruct them). The query: held-out
    cells of the known types and every cell of the hidden one."""
    scvi.settings.seed = 0
    adata, hidden = _toy_with_hidden_type(seed=1)
    held_out = np.random.default_rng(0).random(adata.n_obs) < 0.3
    reference = adata[~hidden & ~held_out].copy()
    CapVI.setup_anndata(reference, labels_key="cell_type", batch_key="batch", layer="counts")
    model = CapVI(reference, **SMALL)
    model.train(max_epochs=30, classifier_epochs=30, frozen_epochs=30, train_size=0.8, **QUIET)
    query = adata[hidden | held_out].copy()
    query.obs["cell_type"] = "Unknown"
    return model, reference, query, hidden[hidden | held_out]


@pytest.mark.parametrize("method", ["neighbors", "reconstruction", "ensemble"])
def test_scores_rank_a_type_absent_from_training_first(removed_model, method):
    model, _, query, hidden = removed_model
    score = model.get_novelty_score(query, method=method)
    assert roc_auc_score(hidden, score) > 0.9


def test_neighbors_score_threshold_holds_its_rate_on_held_out_known_cells(removed_model):
    model, _, query, hidden = removed_model
    stored = model.novelty_reference_
    n_val = len(model._known_validation_indices())
    assert stored["calibration"].shape == (n_val, model.module.n_latent)
    assert len(stored["reference"]) == model._is_labelled(model.train_indices).sum()
    score = model.get_novelty_score(query, method="neighbors")
    assert score.min() >= 0 and score.max() <= 1
    threshold = model.get_novelty_threshold(0.2, method="neighbors")
    # a quantile among the n calibration cells: the ceil((n + 1) 0.8)-th of 0/n .. (n-1)/n
    assert threshold == (np.ceil((n_val + 1) * 0.8) - 1) / n_val
    unknown = score > threshold
    assert unknown[~hidden].mean() <= 0.35 and unknown[hidden].mean() > 0.8
    pred = model.predict(query, unknown_threshold=threshold)  # "auto": here "neighbors"
    np.testing.assert_array_equal(pred == "unknown", unknown)
    with pytest.raises(ValueError, match="`adata` and `indices` must be None"):
        model.get_novelty_threshold(0.2, method="neighbors", adata=query)


def test_neighbors_reference_is_saved_and_carried_to_query_models(
    removed_model, tmp_path, monkeypatch
):
    model, reference, query, hidden = removed_model
    model.save(tmp_path / "ref", save_anndata=False)
    loaded = CapVI.load(tmp_path / "ref", adata=reference)
    np.testing.assert_array_equal(
        loaded.get_novelty_score(query, method="neighbors"),
        model.get_novelty_score(query, method="neighbors"),
    )
    # the default "auto" is "neighbors" for cells of the reference's batches
    np.testing.assert_array_equal(
        model.get_novelty_score(query), model.get_novelty_score(query, method="neighbors")
    )
    # a query batch the reference never saw, mapped with scArches
    new_batch = query.copy()
    new_batch.obs["batch"] = "b3"
    mapped = CapVI.load_query_data(new_batch, model)
    mapped.train(max_epochs=1, **QUIET)
    # the query's cells are what the score compares with the reference, never its reference
    for key, value in model.novelty_reference_.items():
        np.testing.assert_array_equal(mapped.novelty_reference_[key], value)
    assert mapped.get_novelty_threshold(0.2) == model.get_novelty_threshold(0.2)
    # ... and "auto" scores its new batch with the mean of the "neighbors" and "ensemble"
    # quantiles, ranked among the kept validation cells' own means
    stored = model.novelty_reference_
    kept = stored["calibration_ensemble"]
    np.testing.assert_allclose(
        model.get_novelty_score(indices=model._known_validation_indices(), method="ensemble"),
        kept,
        rtol=1e-6,
    )

    def quantile(calibration, scores):
        return np.searchsorted(np.sort(calibration), scores) / len(calibration)

    enrichment, calibration = query_enrichment(
        stored["reference"], mapped.get_latent_representation(), stored["calibration"]
    )
    neighbors = quantile(calibration, enrichment)
    ensemble = quantile(kept, mapped.get_novelty_score(method="ensemble"))
    own_mean = (quantile(calibration, calibration) + quantile(kept, kept)) / 2
    # the neighbour quantile is re-ranked among the query cells "ensemble" finds typical:
    # below the validation cells' median, or the MIN_TYPICAL_CELLS lowest where fewer are
    below = int((ensemble < 0.5).sum())
    assert 20 <= below < _novelty_reference.MIN_TYPICAL_CELLS <= len(ensemble)  # this toy
    for n_typical in (_novelty_reference.MIN_TYPICAL_CELLS, below):
        monkeypatch.setattr(_novelty_reference, "MIN_TYPICAL_CELLS", n_typical)
        typical = neighbors[np.argsort(ensemble, kind="stable")[:n_typical]]
        re_ranked = quantile(typical, neighbors)
        assert not np.array_equal(re_ranked, neighbors)
        auto = mapped.get_novelty_score()
        np.testing.assert_array_equal(auto, quantile(own_mean, (re_ranked + ensemble) / 2))
    assert roc_auc_score(hidden, auto) > 0.9
    loaded.novelty_reference_ = None  # as a model saved before the score existed
    with pytest.raises(ValueError, match="method='neighbors' needs"):
        loaded.get_novelty_score(query, method="neighbors")
    # "auto" is then "ensemble" as it is, threshold included
    np.testing.assert_array_equal(
        loaded.get_novelty_score(query), loaded.get_novelty_score(query, method="ensemble")
    )
    assert loaded.get_novelty_threshold(0.2) == loaded.get_novelty_threshold(
        0.2, method="ensemble"
    )


def test_every_novelty_method_gives_one_finite_float_per_cell(hidden_model):
    model, adata, _ = hidden_model
    idx = np.arange(0, adata.n_obs, 7)
    for method in NOVELTY_METHODS:
        score = model.get_novelty_score(indices=idx, method=method)
        assert score.shape == (len(idx),) and np.isfinite(score).all()
    combined = model.get_novelty_score(method="combined")
    assert combined.min() >= 0 and combined.max() <= 1
    with pytest.raises(ValueError, match="`method`"):
        model.get_novelty_score(method="distance")


def test_prior_score_is_minus_log_mixture_density_at_posterior_mean(hidden_model):
    model, adata, _ = hidden_model
    idx = np.arange(10)
    z = torch.as_tensor(model.get_latent_representation(indices=idx))
    module = model.module
    scale = module.prior.log_scale.exp()
    comp = torch.distributions.Normal(module.prior.means, scale).log_prob(z[:, None]).sum(-1)
    expected = -torch.logsumexp(comp + torch.log_softmax(module.prior.logits, -1), -1)
    np.testing.assert_allclose(
        model.get_novelty_score(indices=idx, method="prior"), expected.detach().numpy(), rtol=1e-4
    )


def test_reconstruction_and_ensemble_scores_closed_form(hidden_model):
    model, adata, _ = hidden_model
    idx = np.arange(12)
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata=adata, indices=idx, batch_size=12)))
    with torch.inference_mode():
        inf = module.inference(**module._get_inference_input(tensors))
        gen = module.generative(
            **module._get_generative_input(tensors, {**inf, "z": inf["qz"].loc})
        )
    mu, theta, x = gen["px"].mu, gen["px"].theta, tensors["X"]
    expected = ((x - mu) ** 2 / (mu + mu**2 / theta)).mean(-1).numpy()
    recon = model.get_novelty_score(indices=idx, method="reconstruction")
    np.testing.assert_allclose(recon, expected, rtol=1e-5)
    # "ensemble": both scores standardised by their median and MAD over annotated training cells
    train = model.train_indices[model._is_labelled(model.train_indices)]
    parts = [
        model.get_novelty_score(indices=train, method=m) for m in ("latent", "reconstruction")
    ]
    loc = module.novelty_location.numpy()
    scale = module.novelty_scale.numpy()
    np.testing.assert_allclose(loc, [np.median(p) for p in parts], rtol=1e-5)
    np.testing.assert_allclose(
        scale, [np.median(np.abs(p - np.median(p))) for p in parts], rtol=1e-5
    )
    latent = model.get_novelty_score(indices=idx, method="latent")
    np.testing.assert_allclose(
        model.get_novelty_score(indices=idx, method="ensemble"),
        (latent - loc[0]) / scale[0] + (recon - loc[1]) / scale[1],
        rtol=1e-6,
    )


def test_predict_calls_unknown_exactly_above_the_threshold(hidden_model):
    model, adata, _ = hidden_model
    threshold = model.get_novelty_threshold(false_unknown_rate=0.1, method="latent")
    score = model.get_novelty_score(method="latent")
    plain = model.predict()
    pred = model.predict(unknown_threshold=threshold, novelty_method="latent", unknown_label="?")
    above = score > threshold
    assert 0 < above.sum() < adata.n_obs
    assert (pred[above] == "?").all()
    np.testing.assert_array_equal(pred[~above], plain[~above])
    # the threshold calls ~10 % of the known validation cells unknown
    val = model.validation_indices[model._is_labelled(model.validation_indices)]
    assert abs(np.mean(score[val] > threshold) - 0.1) < 0.05
    with pytest.raises(ValueError, match="unknown_threshold"):
        model.predict(soft=True, unknown_threshold=threshold)
    with pytest.raises(ValueError, match="unknown_label"):
        model.predict(unknown_threshold=threshold, unknown_label="T0")
    with pytest.raises(ValueError, match="false_unknown_rate"):
        model.get_novelty_threshold(false_unknown_rate=1.5)


def test_conformal_threshold_known_answer_and_its_guarantee():
    # 19 scores 1..19, 10 %: the ceil(20 * 0.9) = 18th smallest
    assert conformal_threshold(np.arange(19, 0, -1), 0.1) == 18
    # exchangeable calibration and test scores: the rate above the threshold is at most the
    # target and at least target - 1 / (n + 1), on average over draws
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(2000):
        draws = rng.standard_normal(60)
        rates.append(np.mean(draws[40:] > conformal_threshold(draws[:40], 0.05)))
    assert 0.05 - 1 / 41 - 0.005 < np.mean(rates) <= 0.05 + 0.005
    with pytest.raises(ValueError, match="needs at least 19 calibration cells"):
        conformal_threshold(np.arange(10.0), 0.05)


def test_temperature_scaling_fixes_an_over_confident_classifier(tmp_path):
    scvi.settings.seed = 1
    adata = synthetic_adata(n_cells=300, n_genes=30, n_types=3, seed=1)
    rng = np.random.default_rng(1)
    noisy = adata.obs["true_type"].to_numpy().copy()
    flip = rng.random(adata.n_obs) < 0.25  # a quarter of the annotations are wrong
    noisy[flip] = rng.choice(["T0", "T1", "T2"], flip.sum())
    adata.obs["cell_type"] = noisy
    CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch", layer="counts")
    model = CapVI(adata, **SMALL)
    model.train(max_epochs=0, frozen_epochs=1, classifier_epochs=20, train_size=0.7, **QUIET)
    # make q(c|x) over-confident: sharpen its logits 30-fold
    with torch.no_grad():
        last = [m for m in model.module.classifier.modules() if isinstance(m, torch.nn.Linear)]
        last[-1].weight.mul_(30)
        last[-1].bias.mul_(30)
    val = model.validation_indices
    y_val = adata.obs["cell_type"].to_numpy()[val]
    model.module.classifier_temperature.fill_(1.0)
    before = expected_calibration_error(model.predict(indices=val, soft=True), y_val)
    hard_before = model.predict()
    temperature = model.calibrate()
    after = expected_calibration_error(model.predict(indices=val, soft=True), y_val)
    assert temperature > 2 and model.classifier_temperature == pytest.approx(temperature)
    assert after < before - 0.05
    np.testing.assert_array_equal(model.predict(), hard_before)  # argmax unchanged

    model.save(tmp_path / "calibrated", save_anndata=False)
    loaded = CapVI.load(tmp_path / "calibrated", adata=adata)
    assert loaded.classifier_temperature == pytest.approx(temperature)
    pd.testing.assert_frame_equal(loaded.predict(soft=True), model.predict(soft=True))


def test_gmvae_supports_the_scores_without_the_classifier_only():
    scvi.settings.seed = 0
    adata = synthetic_adata(n_cells=120, n_genes=20)
    CapVI.setup_anndata(adata, batch_key="batch", layer="counts")
    model = CapVI(adata, n_components=3, **SMALL)
    model.train(max_epochs=2, **QUIET)
    for method in ("neighbors", "ensemble", "reconstruction", "prior", "latent"):
        assert np.isfinite(model.get_novelty_score(method=method)).all()
    with pytest.raises(ValueError, match="GMVAE"):
        model.get_novelty_score(method="entropy")


def test_expected_calibration_error_known_answers():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    # bins: {0.9: 1 of 2 right}, {0.6: right}, {0.8: right}
    expected = (2 * abs(0.5 - 0.9) + abs(1 - 0.6) + abs(1 - 0.8)) / 4
    assert expected_calibration_error(probs, [0, 1, 0, 1]) == pytest.approx(expected, abs=1e-6)
    frame = pd.DataFrame(probs, columns=["a", "b"])
    # a label the classifier does not know is always wrong
    assert expected_calibration_error(frame, ["a", "b", "a", "c"]) == pytest.approx(0.5, abs=1e-6)
    # confident and always right: perfectly calibrated
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="rows summing to 1"):
        expected_calibration_error(probs * 2, [0, 1, 0, 1])


@pytest.mark.parametrize("mode", ["unlabelled", "removed", "query"])
def test_leave_one_type_out_scores_each_hidden_type(mode):
    scvi.settings.seed = 0
    adata = synthetic_adata(n_cells=240, n_genes=30, n_types=3, seed=2)
    adata.X = adata.layers["counts"]
    adata.obs["cell_type"] = adata.obs["true_type"]
    frame = leave_one_type_out(
        adata,
        hidden_types=["T1"],
        mode=mode,
        query_batches=["b2"] if mode == "query" else None,
        capvi_kwargs=SMALL,
        capvi_train_kwargs={"max_epochs": 2, "frozen_epochs": 2, "classifier_epochs": 2},
        query_train_kwargs={"max_epochs": 2},
        scvi_max_epochs=2,
        scanvi_train_kwargs={"max_epochs": 1},
        progress_bar=False,
    )
    assert frame.index.tolist() == ["T1"]
    row = frame.loc["T1"]
    n_query = (adata.obs["batch"] == "b2").sum() if mode == "query" else 60
    assert row["n_query_hidden"] + row["n_query_known"] == n_query
    for col in (
        "auroc_neighbors",
        "auroc_scanvi_neighbors",
        "auroc_ensemble",
        "auroc_reconstruction",
        "auroc_latent",
        "auroc_scanvi_max_prob",
        "auroc_scanvi_entropy",
    ):
        assert 0 <= row[col] <= 1
    for prefix in ("", "scanvi_"):
        for col in (
            "known_accuracy",
            "known_accuracy_with_unknown",
            "false_unknown_rate",
            "hidden_called_unknown",
        ):
            assert 0 <= row[prefix + col] <= 1
        assert row[prefix + "known_accuracy_with_unknown"] <= row[prefix + "known_accuracy"]
    assert 0 <= row["ece_after"] <= 1
    # the per-cell scores reproduce the row: the AUROC of the default score, and the ensemble
    # from its two standardised parts
    cells = frame.attrs["scores"]["T1"]
    assert cells["is_hidden"].sum() == row["n_query_hidden"]
    assert roc_auc_score(cells["is_hidden"], cells["ensemble"]) == pytest.approx(
        row["auroc_ensemble"]
    )
    parts = np.stack([cells["latent"], cells["reconstruction"]], 1)
    standardised = (parts - cells["novelty_location"]) / cells["novelty_scale"]
    np.testing.assert_allclose(standardised.sum(1), cells["ensemble"], rtol=1e-5, atol=1e-5)
    assert cells["calibration_latent"].shape == cells["calibration_reconstruction"].shape
    assert np.isfinite(cells["calibration_reconstruction"]).all()
    # which cells the classifier gets right: the known cells' share is the row's accuracy
    known = ~cells["is_hidden"]
    assert cells["predicted_correct"][known].mean() == pytest.approx(row["known_accuracy"])
    n_calibration = len(cells["calibration_latent"])
    assert cells["calibration_correct"].shape == cells["calibration_max_prob"].shape
    assert cells["calibration_correct"].shape == (n_calibration,)
    if mode == "removed":  # every validation cell kept: their own neighbour quantiles
        own = np.sort(cells["calibration_neighbors"])
        assert own.shape == (n_calibration,) and 0 <= own[0] and own[-1] < 1
    with pytest.raises(ValueError, match="hidden_types"):
        leave_one_type_out(adata, hidden_types=["T9"])
    with pytest.raises(ValueError, match="query_batches"):
        leave_one_type_out(adata, mode="query", query_batches=["b1", "b2"])
    with pytest.raises(ValueError, match="query_batches"):
        leave_one_type_out(adata, mode="removed", query_batches=["b2"])

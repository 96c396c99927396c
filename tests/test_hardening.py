"""SPEC §7: bad input gets a clear, early error naming the culprit, and nothing is lost."""

import json
import os
import re
import signal

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from lightning.pytorch.callbacks import Callback

from scvi_capvi import __version__
from scvi_capvi.model import CapVI, NBAutoencoder, VampVI
from scvi_capvi.model._io import ModelExistsError

N_CELLS, N_GENES = 200, 50
SMALL = {"n_hidden": 16, "n_layers": 1, "n_latent": 3, "classifier_n_hidden": 16}
VAMP = {"n_hidden": 16, "n_latent": 3, "n_pseudo_inputs": 10}
QUIET = {"enable_progress_bar": False}
EPOCHS = {"classifier_epochs": 1, "frozen_epochs": 1, "max_epochs": 1, **QUIET}


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_adata(n_cells=N_CELLS, n_genes=N_GENES, seed=0, batches=("b1", "b2"), types=3):
    """Poisson counts of ``types`` expression programmes; every 6th cell unannotated."""
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, types, n_cells)
    programmes = rng.gamma(1.0, 1.0, (types, n_genes)) + 0.1
    programmes[np.arange(types), np.arange(types)] += 20
    x = rng.poisson(programmes[cell_type] * 3).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(x))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    labels = np.array([f"T{k}" for k in range(types)])[cell_type].astype(object)
    labels[::6] = "Unknown"
    adata.obs["cell_type"] = labels
    adata.obs["batch"] = rng.choice(list(batches), n_cells)
    adata.layers["counts"] = adata.X.copy()
    return adata


def setup(cls, adata, **kwargs):
    args = {"layer": "counts", "batch_key": "batch", "labels_key": "cell_type", **kwargs}
    cls.setup_anndata(adata, **args)


@pytest.fixture(scope="module")
def capvi():
    scvi.settings.seed = 0
    adata = make_adata()
    setup(CapVI, adata)
    model = CapVI(adata, **SMALL)
    model.train(**EPOCHS)
    return model


# ---------------------------------------------------------------- bad input at setup_anndata
def _set_layer(adata, fn):
    adata.layers["counts"] = sp.csr_matrix(fn(adata.layers["counts"].toarray()))


def _set_obs(column, fn):
    def mutate(adata):
        values = adata.obs[column].to_numpy().astype(object)
        adata.obs[column] = fn(values)

    return mutate


def _first(value, n=1):
    def fn(values):
        values[:n] = value
        return values

    return fn


_ONLY_T0 = _set_obs("cell_type", lambda v: np.where(v == "Unknown", v, "T0"))
_ALL_ANNOTATED = _set_obs("cell_type", lambda v: np.where(v == "Unknown", "T0", v))
_ZERO_CELLS = lambda a: _set_layer(a, lambda x: np.where(np.arange(len(x))[:, None] < 3, 0, x))  # noqa: E731


def _unused_category(adata):
    adata.obs["cell_type"] = pd.Categorical(
        adata.obs["cell_type"], categories=["T0", "T1", "T2", "T9", "Unknown"]
    )


BOTH = (CapVI, VampVI)
# (id, models, mutate, setup kwargs, exception, regex the message must match)
ERRORS = [
    ("log_normalised", BOTH, lambda a: _set_layer(a, np.log1p), {}, ValueError,
     r"adata\.layers\['counts'\] has non-integer values"),
    ("negative", BOTH, lambda a: _set_layer(a, lambda x: x - 1), {}, ValueError,
     r"adata\.layers\['counts'\] has negative values \(min -1\)"),
    ("nan", BOTH, lambda a: _set_layer(a, lambda x: np.where(x > 5, np.nan, x)), {}, ValueError,
     r"adata\.layers\['counts'\] contains \d+ NaN or infinite"),
    ("inf", BOTH, lambda a: _set_layer(a, lambda x: np.where(x > 5, np.inf, x)), {}, ValueError,
     r"adata\.layers\['counts'\] contains \d+ NaN or infinite"),
    ("empty", BOTH, None, {}, ValueError, r"AnnData is empty \(0 cells x 50 genes\)"),
    ("layer_missing", BOTH, None, {"layer": "count"}, KeyError,
     r"layer='count' is not in adata\.layers.*Did you mean layer='counts'"),
    ("batch_key_missing", BOTH, None, {"batch_key": "batches"}, KeyError,
     r"batch_key='batches' is not a column of adata\.obs.*Did you mean batch_key='batch'"),
    ("batch_nan", BOTH, _set_obs("batch", _first(np.nan, 2)), {}, ValueError,
     r"adata\.obs\['batch'\] has 2 missing values"),
    ("labels_key_missing", BOTH, None, {"labels_key": "celltype"}, KeyError,
     r"labels_key='celltype' is not a column of adata\.obs.*Did you mean labels_key='cell_type'"),
    ("labels_nan", BOTH, _set_obs("cell_type", _first(np.nan, 3)), {}, ValueError,
     r"adata\.obs\['cell_type'\] has 3 missing values"),
    ("unlabeled_category_typo", (CapVI,), None, {"unlabeled_category": "unknown"}, ValueError,
     r"unlabeled_category='unknown' does not occur in adata\.obs\['cell_type'\], but 'Unknown'"),
    ("single_cell_type", (CapVI,), _ONLY_T0,
     {}, ValueError, r"single annotated cell type \('T0'\)"),
    ("no_annotated_cell", (CapVI,), _set_obs("cell_type", lambda v: np.full_like(v, "Unknown")),
     {}, ValueError, r"No cell of adata\.obs\['cell_type'\] is annotated \(all are 'Unknown'\)"),
    ("type_without_cell", (CapVI,), _unused_category, {}, ValueError,
     r"Cell type\(s\) 'T9' of adata\.obs\['cell_type'\] have no annotated cell"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "mutate", "kwargs", "error", "match"),
    [
        pytest.param(cls, *case[2:], id=f"{cls.__name__}-{case[0]}")
        for case in ERRORS
        for cls in case[1]
    ],
)
def test_bad_input_raises_naming_the_culprit(cls, mutate, kwargs, error, match):
    adata = make_adata()
    if match.startswith("AnnData is empty"):
        adata = adata[:0].copy()
    elif mutate is not None:
        mutate(adata)
    with pytest.raises(error, match=match):
        setup(cls, adata, **kwargs)


WARNINGS = [
    ("zero_cells", _ZERO_CELLS,
     {}, r"3 of 200 cells have no counts in adata\.layers\['counts'\]"),
    ("zero_genes", lambda a: _set_layer(a, lambda x: np.where(np.arange(x.shape[1]) >= 48, 0, x)),
     {}, r"2 of 50 genes have no counts in adata\.layers\['counts'\]"),
    ("one_cell_batch", _set_obs("batch", _first("lonely")), {},
     r"Batch\(es\) 'lonely' of adata\.obs\['batch'\] have a single cell"),
    ("unlabeled_category_absent", _ALL_ANNOTATED,
     {"unlabeled_category": "unassigned"},
     r"unlabeled_category='unassigned' does not occur in adata\.obs\['cell_type'\]: every cell"),
    ("unlabelled_lookalike", _set_obs("cell_type", lambda v: np.where(v == "Unknown", "NA", v)),
     {}, r"the \d+ cells labelled 'NA' are learned as a cell type.*unlabeled_category='NA'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"), [pytest.param(*c[1:], id=c[0]) for c in WARNINGS]
)
def test_suspicious_input_warns(mutate, kwargs, match):
    adata = make_adata()
    if mutate is not None:
        mutate(adata)
    with pytest.warns(UserWarning, match=match):
        setup(CapVI, adata, **kwargs)


def test_one_cell_batch_trains_with_finite_library_prior():
    """scvi-tools' library prior has variance 0 for a one-cell batch (a torch error)."""
    scvi.settings.seed = 0
    adata = make_adata()
    _set_obs("batch", _first("lonely"))(adata)
    with pytest.warns(UserWarning, match="single cell"):
        setup(CapVI, adata)
    model = CapVI(adata, recipe="paper", **SMALL)  # the recipe with a latent library
    assert (model.module.library_log_vars > 0).all()
    model.train(classifier_epochs=1, frozen_epochs=0, max_epochs=1, **QUIET)
    assert np.isfinite(model.get_latent_representation()).all()


def test_counts_normalised_after_setup_fail_at_train():
    adata = make_adata()
    setup(CapVI, adata)
    model = CapVI(adata, **SMALL)
    adata.layers["counts"].data = np.log1p(adata.layers["counts"].data)
    with pytest.raises(ValueError, match=r"adata\.layers\['counts'\] has non-integer"):
        model.train(**EPOCHS)


# ---------------------------------------------------------------- queries
def _query(**kwargs):
    return make_adata(n_cells=40, seed=3, **kwargs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda q: q[:, 2:].copy(), r"2 of the model's 50 genes are missing.*'gene0', 'gene1'"),
        (
            lambda q: ad.concat([q, q[:, :3]], axis=1, merge="first"),
            r"adata\.var_names has duplicated genes \('gene0', 'gene1', 'gene2'\)",
        ),
        (lambda q: q[:, ::-1].copy(), r"the model's 50 genes but in a different order"),
    ],
    ids=["missing_genes", "duplicated_genes", "reordered_genes"],
)
def test_query_with_other_genes_is_refused(capvi, change, match):
    query = change(_query())
    with pytest.raises(ValueError, match=match):
        capvi.predict(query)
    with pytest.raises(ValueError, match=match):
        capvi.get_latent_representation(query)


def test_query_with_extra_genes_names_them(capvi):
    query = _query()
    extra = ad.AnnData(sp.csr_matrix(np.ones((40, 2), dtype=np.float32)), obs=query.obs)
    extra.var_names = ["geneX", "geneY"]
    extra.layers["counts"] = extra.X.copy()
    query = ad.concat([query, extra], axis=1, merge="first")
    with pytest.raises(ValueError, match=r"adata has 2 genes the model was not trained on"):
        capvi.predict(query)


def test_query_unseen_labels_and_batches(capvi):
    query = _query(batches=("b9",))
    query.obs["cell_type"] = np.where(query.obs["cell_type"] == "T0", "NewType", "T1")
    with pytest.warns(UserWarning, match=r"labels the model was not trained on \('NewType'\)"):
        pred = capvi.predict(query)
    assert set(pred) <= {"T0", "T1", "T2"}
    assert query.obs["cell_type"].isin(["NewType", "T1"]).all()  # the user's column is intact
    # the latent space needs the batch: a clear error, not an index error inside torch
    with pytest.raises(ValueError, match=r"adata\.obs\['batch'\] has batches the model was not"):
        capvi.get_latent_representation(query)
    with pytest.raises(ValueError, match=r"batches the model was not trained on: 'b9'"):
        capvi.get_latent_representation(_query(batches=("b9",)))
    with pytest.raises(ValueError, match=r"adata\.layers\['counts'\] has non-integer"):
        bad = _query()
        bad.layers["counts"].data = bad.layers["counts"].data / 2.5
        capvi.predict(bad)


def test_load_query_data_checks(capvi):
    with pytest.raises(ValueError, match=r"2 of the model's 50 genes are missing"):
        CapVI.load_query_data(_query(batches=("b9",))[:, 2:].copy(), capvi)
    query = _query(batches=("b9",))
    query.obs["cell_type"] = "NewType"
    with pytest.warns(UserWarning, match=r"treated as unannotated \('Unknown'\)"):
        q_model = CapVI.load_query_data(query, capvi)
    assert len(q_model.cell_types) == 3


def test_vampvi_query_with_unseen_labels(tmp_path):
    scvi.settings.seed = 0
    adata = make_adata()
    setup(VampVI, adata)
    model = VampVI(adata, **VAMP)
    model.train(max_epochs=1, **QUIET)
    query = _query()
    query.obs["cell_type"] = "NewType"
    with pytest.warns(UserWarning, match=r"labels the model was not trained on \('NewType'\)"):
        z = model.get_latent_representation(query)
    assert z.shape == (40, 3) and np.isfinite(z).all()


def test_csc_dense_and_backed_matrices_are_accepted(capvi, tmp_path):
    query = _query()
    expected = capvi.predict(query, soft=True).to_numpy()
    for convert in (lambda m: m.tocsc(), lambda m: m.toarray()):
        other = _query()
        other.layers["counts"] = convert(other.layers["counts"])
        np.testing.assert_allclose(capvi.predict(other, soft=True).to_numpy(), expected, 1e-5)
    # backed: counts in X of an h5ad opened read-only, never loaded as a whole
    scvi.settings.seed = 0
    adata = make_adata()
    del adata.layers["counts"]
    adata.write_h5ad(tmp_path / "backed.h5ad")
    backed = ad.read_h5ad(tmp_path / "backed.h5ad", backed="r")
    CapVI.setup_anndata(backed, labels_key="cell_type", batch_key="batch")
    model = CapVI(backed, **SMALL)
    model.train(**EPOCHS)
    assert model.predict().shape == (N_CELLS,)


# ---------------------------------------------------------------- save / load
def _outputs(model):
    scvi.settings.seed = 7
    ll = model.get_marginal_ll(n_mc_samples=5, progress_bar=False, return_mean=False)
    return model.get_latent_representation(), model.predict(soft=True).to_numpy(), ll


def test_save_load_round_trip_and_refusals(capvi, tmp_path):
    path = tmp_path / "capvi"
    capvi.save(path)
    info = json.loads((path / "scvi_capvi.json").read_text())
    assert info["scvi_capvi_version"] == __version__ and info["model_class"] == "CapVI"
    loaded = CapVI.load(path, adata=capvi.adata)
    for a, b in zip(_outputs(capvi), _outputs(loaded), strict=True):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ModelExistsError, match=r"already exists.*overwrite=True") as err:
        capvi.save(path)
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match=r"holds a CapVI model, not a VampVI"):
        VampVI.load(path, adata=capvi.adata)

    reordered = capvi.adata[:, ::-1].copy()
    with pytest.raises(ValueError, match=r"in a different order"):
        CapVI.load(path, adata=reordered)
    new_batch = capvi.adata.copy()
    new_batch.obs["batch"] = "b9"
    with pytest.raises(ValueError, match=r"batches the model was not trained on: 'b9'.*"
                       r"load_query_data"):  # fmt: skip
        CapVI.load(path, adata=new_batch)


def test_save_is_atomic(capvi, tmp_path, monkeypatch):
    path = tmp_path / "capvi"
    capvi.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        capvi.save(path, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        capvi.save(tmp_path / "fresh")
    monkeypatch.undo()

    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capvi"]  # no temporary left over
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    loaded = CapVI.load(path, adata=capvi.adata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), capvi.get_latent_representation()
    )


def test_load_warns_on_version_mismatch(capvi, tmp_path):
    path = tmp_path / "capvi"
    capvi.save(path)
    info_path = path / "scvi_capvi.json"
    info = json.loads(info_path.read_text())
    info["scvi_capvi_version"] = "0.0.1"
    info_path.write_text(json.dumps(info))
    message = rf"saved with scvi-capvi 0\.0\.1; this is scvi-capvi {re.escape(__version__)}"
    with pytest.warns(UserWarning, match=message):
        CapVI.load(path, adata=capvi.adata)
    # parameters that no longer fit: the error names both versions
    state = torch.load(path / "model.pt", weights_only=False)
    state["model_state_dict"]["unexpected.weight"] = torch.zeros(1)
    torch.save(state, path / "model.pt")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=r"scvi-capvi 0\.0\.1\)"):
        CapVI.load(path, adata=capvi.adata)
    info_path.unlink()
    with (
        pytest.warns(UserWarning, match="records no scvi-capvi version"),
        pytest.raises(RuntimeError),
    ):
        CapVI.load(path, adata=capvi.adata)


def test_nbautoencoder_save_refuses_overwrite(tmp_path):
    adata = make_adata()
    setup(NBAutoencoder, adata)
    model = NBAutoencoder(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=1, **QUIET)
    model.save(tmp_path / "ae")
    with pytest.raises(ModelExistsError):
        model.save(tmp_path / "ae")
    model.save(tmp_path / "ae", overwrite=True)
    loaded = NBAutoencoder.load(tmp_path / "ae", adata=adata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


# ---------------------------------------------------------------- determinism
def test_same_seed_same_results():
    results = []
    for _ in range(2):
        scvi.settings.seed = 0
        adata = make_adata()
        setup(CapVI, adata)
        model = CapVI(adata, **SMALL)
        model.train(**EPOCHS)
        results.append((model.get_latent_representation(), model.predict(soft=True).to_numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ---------------------------------------------------------------- failures during training
def _corrupt_decoder(model):
    name, weight = next(
        (n, p) for n, p in model.module.named_parameters() if n.startswith("decoder.")
    )
    with torch.no_grad():
        weight.fill_(float("nan"))
    return name


def test_nan_loss_stops_capvi_and_vampvi():
    scvi.settings.seed = 0
    adata = make_adata()
    setup(CapVI, adata)
    model = CapVI(adata, **SMALL)
    _corrupt_decoder(model)
    with pytest.raises(
        FloatingPointError, match=r"CapVI stage 2 \(frozen\).*epoch 0.*reconstruction_loss"
    ):
        model.train(**EPOCHS)
    assert any(k.startswith("stage1_") for k in model.history)  # stage 1 finished: kept

    setup(VampVI, adata)
    vamp = VampVI(adata, **VAMP)
    _corrupt_decoder(vamp)
    with pytest.raises(FloatingPointError, match=r"VampPriorModule training.*epoch 0.*reconstr"):
        vamp.train(max_epochs=1, **QUIET)


def test_nan_validation_loss_stops_training_with_a_hint():
    """A validation loss that turns NaN (training finite) raises instead of letting early
    stopping end training silently after one epoch."""

    class NaNValidation(Callback):
        # after a finite training epoch of stage 2, the decoder overflows on held-out cells
        def on_validation_start(self, trainer, pl_module):
            if pl_module.stage == "frozen" and not trainer.sanity_checking:
                _corrupt_decoder(pl_module)

    adata = make_adata()
    setup(CapVI, adata)
    model = CapVI(adata, **SMALL)
    with pytest.raises(
        FloatingPointError,
        match=r"CapVI stage 2 \(frozen\): the validation loss .*epoch 0.*"
        r"reconstruction_loss_validation.*use_observed_lib_size=True",
    ):
        model.train(**EPOCHS, callbacks=[NaNValidation()])
    assert any(k.startswith("stage1_") for k in model.history) and not model.module.training


class Interrupt(Callback):
    """Raise KeyboardInterrupt at the second batch of ``epoch`` of ``stage``; snapshot before."""

    def __init__(self, epoch=1, stage=None):
        self.epoch, self.stage, self.snapshot = epoch, stage, None

    def on_train_epoch_end(self, trainer, pl_module):
        if getattr(pl_module, "stage", None) == self.stage and trainer.current_epoch == 0:
            self.snapshot = {k: v.clone() for k, v in pl_module.module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if getattr(pl_module, "stage", None) != self.stage:
            return
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise KeyboardInterrupt


def test_keyboard_interrupt_leaves_a_usable_model():
    scvi.settings.seed = 0
    adata = make_adata()
    setup(CapVI, adata)
    model = CapVI(adata, **SMALL)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="interrupted"):
        model.train(
            classifier_epochs=1, frozen_epochs=3, max_epochs=2, batch_size=64,
            callbacks=[Interrupt(stage="frozen")], early_stopping=False, **QUIET,
        )  # fmt: skip
    assert signal.getsignal(signal.SIGINT) == handler  # Lightning had set SIG_IGN
    assert model.is_trained
    assert all(p.requires_grad for p in model.module.classifier.parameters())  # unfrozen
    assert not model.module.training
    assert any(k.startswith("stage1_") for k in model.history)
    assert any(k.startswith("stage2_") for k in model.history)
    assert np.isfinite(model.get_latent_representation()).all()
    assert model.predict().shape == (N_CELLS,)

    # VampVI (scvi-tools' plan): back to the parameters of the last finished epoch
    setup(VampVI, adata)
    vamp = VampVI(adata, **VAMP)
    interrupt = Interrupt(stage=None)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="epoch 0"):
        vamp.train(max_epochs=3, batch_size=64, callbacks=[interrupt], **QUIET)
    state = vamp.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in interrupt.snapshot.items())
    assert vamp.is_trained and np.isfinite(vamp.get_latent_representation()).all()
    assert os.environ.get("PYTEST_CURRENT_TEST")  # still running: no sys.exit


def test_vampvi_ends_on_its_best_validation_epoch():
    """VampVI trains through the same callbacks as CapVI: it validates every epoch and ends
    on the parameters of the epoch with the best validation ELBO, not the last one."""

    class Snapshots(Callback):
        def __init__(self):
            self.states = {}

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                state = pl_module.module.state_dict()
                self.states[trainer.current_epoch] = {k: v.clone() for k, v in state.items()}

    scvi.settings.seed = 0
    adata = make_adata()
    setup(VampVI, adata)
    vamp = VampVI(adata, **VAMP)
    snapshots = Snapshots()
    # a large step size makes the validation ELBO go up and down
    vamp.train(
        max_epochs=8, batch_size=32, plan_kwargs={"lr": 0.05}, callbacks=[snapshots], **QUIET
    )
    elbo = vamp.history["elbo_validation"]["elbo_validation"].to_numpy()
    assert len(elbo) == 8 == len(snapshots.states)
    best = int(np.argmin(elbo))
    assert best < 7, "the last epoch was the best: the test cannot tell restore from no restore"
    state = vamp.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in snapshots.states[best].items())

"""The GPU path: training, inference, query mapping and save/load on a CUDA device.

Skipped without a CUDA GPU (CI has none). On a machine with one:
``python -m pytest tests/test_gpu.py -p no:cacheprovider``.
"""

import numpy as np
import pytest
import scvi
import torch
from _behaviour import FIXTURE, MODELS, QUIET, build, check_outputs, loaded, outputs, toy, train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)"
)
GPU = {"accelerator": "gpu", "devices": 1}


@pytest.fixture(scope="module")
def recorded():
    return np.load(FIXTURE)


@pytest.mark.parametrize("name", MODELS)
def test_stored_weights_give_the_cpu_outputs_on_a_gpu(recorded, name):
    """The weights recorded on the CPU give the CPU's outputs on the GPU (float32 rounding;
    the marginal LL at the estimator's spread, since the GPU draws other samples)."""
    model = loaded(recorded, name)
    model.to_device("cuda:0")
    assert all(p.is_cuda for p in model.module.parameters())
    check_outputs(recorded, name, outputs(name, model), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_models_train_on_a_gpu_and_load_on_the_cpu(name, tmp_path):
    scvi.settings.seed = 0
    adata = toy()
    model = build(name, adata)
    train(name, model, **GPU)
    assert model.device.type == "cuda"
    got = outputs(name, model)
    assert got["latent"].shape == (adata.n_obs, 4)
    assert all(np.isfinite(value).all() for value in got.values())
    model.save(tmp_path / name)
    on_cpu = type(model).load(tmp_path / name, adata=adata, accelerator="cpu")
    assert on_cpu.device.type == "cpu"
    np.testing.assert_allclose(
        on_cpu.get_latent_representation(), got["latent"], rtol=1e-3, atol=1e-4
    )


def test_capvi_calls_unknown_and_maps_a_query_on_a_gpu():
    from scvi_capvi.model import CapVI

    scvi.settings.seed = 0
    adata = toy()
    model = build("capvi", adata)
    train("capvi", model, **GPU)
    threshold = model.get_novelty_threshold(0.05)
    score = model.get_novelty_score()
    assert score.shape == (adata.n_obs,) and np.isfinite(score).all()
    labels = model.predict(unknown_threshold=threshold)
    assert set(labels) <= {*model.cell_types, "unknown"}
    np.testing.assert_array_equal(labels == "unknown", score > threshold)

    query = toy()
    query.obs["batch"] = "b3"  # a batch the reference never saw
    query.obs["cell_type"] = "Unknown"
    q_model = CapVI.load_query_data(query, model, accelerator="gpu")
    q_model.train(max_epochs=2, **QUIET, **GPU)
    assert q_model.device.type == "cuda"
    assert np.isfinite(q_model.get_latent_representation()).all()
    q_score = q_model.get_novelty_score()
    assert q_score.shape == (query.n_obs,) and ((q_score >= 0) & (q_score <= 1)).all()
    assert len(q_model.predict(unknown_threshold=q_model.get_novelty_threshold(0.05))) == 300

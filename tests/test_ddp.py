"""CapVI trains under Lightning's DDP (``strategy="ddp_find_unused_parameters_true"``,
``devices=2``): two CPU processes with the gloo backend, all three stages.

The training runs in a subprocess (``tests/_ddp_train.py``): Lightning's DDP starts the
second process by running the launching script again, which must not be pytest.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("_ddp_train.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_train_every_stage_to_the_same_finite_parameters(ranks):
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    # rank 0 keeps the history: every stage logged a finite training loss
    losses = ranks[0]["losses"]
    assert set(losses) == {"classifier", "frozen", "joint"}
    assert all(np.isfinite(v) for v in losses.values())
    # same parameters, shapes and values, on both processes (DDP averages the gradients, and
    # the best-epoch restore picked the same epoch from the synchronised validation metrics)
    assert ranks[0]["shapes"] == ranks[1]["shapes"]
    assert np.isfinite(ranks[0]["checksum"])
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)


def test_the_classifier_is_frozen_in_stage_2_and_trained_in_stage_3(ranks):
    for r in ranks:
        c = r["classifier"]
        assert c["frozen"] == c["classifier"]
        assert c["joint"] != c["frozen"]


def test_the_processes_see_different_cells_in_each_epoch(ranks):
    seen0, seen1 = ranks[0]["seen"], ranks[1]["seen"]
    assert set(seen0) == set(seen1) and len(seen0) == 6  # 3 stages x 2 epochs
    for key in seen0:
        a, b = seen0[key], seen1[key]
        assert len(a) == len(b) > 0
        # a DistributedSampler splits the epoch's cells between the processes (padding the
        # shorter share with at most one repeated cell)
        assert len(set(a) & set(b)) <= 1, key

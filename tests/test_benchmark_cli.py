"""``scvi-capvi benchmark`` end to end on a tiny dataset with held-out batches."""

import re

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from scvi_capvi._cli import main

from .test_benchmark_registry import toy_adata


def test_benchmark_cli_writes_every_report_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    toy_adata(n_cells=240, n_batches=4).write_h5ad(data / "toy.h5ad")
    out = tmp_path / "report"
    code = main(
        [
            "benchmark",
            "--quick",
            "--datasets",
            "toy",
            "--data-dir",
            str(data),
            "--methods",
            "CapVI",
            "SCVI",
            "Scanorama",
            "PCA",
            "--out",
            str(out),
            "--no-select",
            "--no-progress",
            "--max-epochs",
            "2",
            "--n-mc-samples",
            "5",
            "--probe-epochs",
            "1",
            "--probe-ks",
            "5",
        ]
    )
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert results["method"].tolist() == ["CapVI", "SCVI", "Scanorama", "PCA"]
    assert (results["dataset"] == "toy").all()
    assert results.set_index("method").loc[["CapVI", "SCVI"], "test_marginal_ll"].lt(0).all()
    assert results["median_clisi"].between(1, 3).all()
    assert results["median_pairwise_ilisi"].between(1, 2).all()
    assert results["Total"].between(0, 1).all()
    assert 0 <= results.set_index("method").loc["CapVI", "accuracy"] <= 1
    expected = [
        "report.md",
        "probe_toy.csv",
        "scib_toy.csv",
        "umap_toy.png",
        "lisi_toy.png",
        "confusion_toy_CapVI.png",
        "curves_toy_CapVI.png",
        "curves_toy_SCVI.png",
    ]
    for name in expected:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (out / "umap_toy.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "held-out batches" in report and "−655.85" in report and "quick" in report
    assert "![umap_toy.png](umap_toy.png)" in report
    assert "versions:" in report and "wall time" in report
    peak = float(re.search(r"peak memory (\d+\.\d+) GiB resident", report).group(1))
    assert 0.1 < peak < 64  # a process that imported torch and trained holds > 100 MiB

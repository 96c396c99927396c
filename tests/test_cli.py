"""The README's main job, end to end on a few epochs."""

import pandas as pd

from scvi_capvi._cli import main


def test_quickstart_writes_table_and_umap(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(
        ["quickstart", "--out", str(out), "--n-mc-samples", "10", "--max-epochs", "3",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    table = pd.read_csv(out / "results.csv", index_col=0)
    assert list(table.index) == ["CapVI", "SCVI", "SCANVI"]
    assert table["test_marginal_ll"].lt(0).all()
    assert table.loc[["CapVI", "SCANVI"], "accuracy"].between(0, 1).all()
    assert pd.isna(table.loc["SCVI", "accuracy"])
    # --max-epochs 3: SCVI 2 x 3 epochs, SCANVI 3 more on top (not the tutorial's 20)
    assert table.loc["SCANVI", "epochs"] == table.loc["SCVI", "epochs"] + 3
    assert table["median_clisi"].between(1, 10).all()
    png = (out / "umap_capvi.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    printed = capsys.readouterr().out
    assert "test_marginal_ll" in printed and "CapVI" in printed and "SCANVI" in printed

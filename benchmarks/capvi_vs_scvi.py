"""CapVI vs scVI, both with Clivio et al. (2022)'s recipe: likelihood, LISI, accuracy, cost.

This reproduces the paper's comparison. scvi-tools' users run SCVI and SCANVI otherwise: that
comparison, with CapVI's defaults, is ``benchmarks/capvi_vs_scanvi.py``.

Seeded 50/25/25 cell split (train / validation / test), Clivio et al.'s recipe for both models
(D = 20, 3 x 256 layers, dropout 0.25, Adam eps 0.01, early stopping on the validation
reconstruction error; a latent library size and gene-batch dispersion; CapVI with
``recipe="paper"``).

    python benchmarks/capvi_vs_scvi.py --datasets pbmc4k_10x_top2000 \
        kang2018_pbmc_ifnb_muscat_subset --n-mc-samples 1000

Writes ``benchmarks/results/capvi_vs_scvi.csv`` (and ``.md``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from lightning.pytorch.callbacks import Callback

from scvi_capvi.benchmark import Split, evaluate_models, fit_capvi, fit_scvi
from scvi_capvi.data import read_dataset
from scvi_capvi.metrics import accuracy, weighted_accuracy

OUT = Path(__file__).parent / "results"


class Stage1Predictions(Callback):
    """Test-set predictions of the classifier as stage 1 leaves it (before stages 2-3)."""

    def __init__(self, x_test: torch.Tensor):
        self.x_test, self.pred = x_test, None

    def on_train_end(self, trainer, pl_module):
        if pl_module.stage == "classifier":
            module = pl_module.module.eval()
            with torch.no_grad():
                self.pred = module.classify(self.x_test.to(module.device)).argmax(-1).cpu()


def run(name: str, n_mc_samples: int, seed: int, capvi_kwargs: dict, label: str) -> pd.DataFrame:
    adata = read_dataset(name)
    split = Split.by_cells(adata.n_obs, (0.5, 0.25, 0.25), seed=seed)
    train_size = split.train_size
    test = adata[split.test].copy()
    x_test = torch.as_tensor(np.asarray(test.X.todense()), dtype=torch.float32)
    stage1 = Stage1Predictions(x_test)

    scvi.settings.seed = seed
    capvi = fit_capvi(
        adata[split.fit].copy(),
        train_size,
        model_kwargs={"recipe": "paper", **capvi_kwargs},
        train_kwargs={"enable_progress_bar": False, "callbacks": [stage1]},
    )
    scvi.settings.seed = seed
    ref = fit_scvi(
        adata[split.fit].copy(), train_size, train_kwargs={"enable_progress_bar": False}
    )
    scvi.settings.seed = seed
    table = evaluate_models(
        {f"CapVI{label}": capvi, "scVI": ref}, test, n_mc_samples=n_mc_samples, progress_bar=False
    )
    y = test.obs["cell_type"].to_numpy()
    pred1 = capvi.model.cell_types[stage1.pred.numpy()]
    table.loc[f"CapVI{label}", "stage1_accuracy"] = accuracy(y, pred1)
    table.loc[f"CapVI{label}", "stage1_weighted_accuracy"] = weighted_accuracy(y, pred1)
    table.loc[f"CapVI{label}", "stage_epochs"] = json.dumps(capvi.epochs)
    table.insert(0, "dataset", name)
    table["n_test_cells"] = test.n_obs
    table["n_mc_samples"] = n_mc_samples
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc4k_10x_top2000"])
    parser.add_argument("--n-mc-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capvi", default="{}", help="JSON kwargs for CapVI, e.g. prior_scale")
    parser.add_argument("--label", default="", help="suffix of the CapVI row name")
    parser.add_argument("--out", default=str(OUT / "capvi_vs_scvi"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    frames = [
        run(d, args.n_mc_samples, args.seed, json.loads(args.capvi), args.label)
        for d in args.datasets
    ]
    table = pd.concat(frames)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{args.out}.csv")
    header = (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), scvi-tools {scvi.__version__}, seed {args.seed}, "
        f"wall {time.perf_counter() - start:.0f} s"
    )
    text = table.to_string(float_format=lambda v: f"{v:.3f}")
    Path(f"{args.out}.md").write_text(f"{header}\n\n```\n{text}\n```\n")
    print(header)
    print(text)


if __name__ == "__main__":
    main()

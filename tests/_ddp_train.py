"""Train CapVI (all three stages) under Lightning's DDP on the CPU: 2 processes, gloo.

Run by ``tests/test_ddp.py`` as ``python tests/_ddp_train.py OUT_DIR``; Lightning's ``ddp``
strategy starts the second process by running this script again. Each process writes
``OUT_DIR/rank{r}.json``: the fingerprints of the training cells it saw in each stage and
epoch, a checksum of q(c|x) at the end of each stage, the last training loss of each stage
(rank 0 keeps the history), the parameter shapes and a checksum of all parameters.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).parent))
from _behaviour import toy

from scvi_capvi.model import CapVI


class CellsSeen(Callback):
    """Fingerprints (a fixed random projection of the counts) of the training cells seen in
    each stage and epoch."""

    def __init__(self, n_genes: int):
        self.weights = torch.from_numpy(np.random.default_rng(0).normal(size=n_genes)).float()
        self.seen: dict[str, list[float]] = {}
        self.classifier: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[scvi.REGISTRY_KEYS.X_KEY].cpu()
        prints = (x @ self.weights).round(decimals=3).tolist()
        key = f"{pl_module.stage}/{trainer.current_epoch}"
        self.seen.setdefault(key, []).extend(prints)

    def on_train_end(self, trainer, pl_module):
        self.classifier[pl_module.stage] = _checksum(pl_module.module.classifier.state_dict())


def _checksum(state: dict) -> float:
    return float(sum(v.double().sum() for v in state.values() if v.is_floating_point()))


def main(out_dir: Path) -> None:
    warnings.simplefilter("ignore")
    scvi.settings.seed = 0
    torch.set_num_threads(1)
    adata = toy()
    CapVI.setup_anndata(adata, labels_key="cell_type", unlabeled_category="Unknown")
    model = CapVI(adata, n_hidden=16, n_latent=4, n_layers=1)
    seen = CellsSeen(adata.n_vars)
    model.train(
        classifier_epochs=2,
        frozen_epochs=2,
        max_epochs=2,
        batch_size=32,
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        callbacks=[seen],
        enable_progress_bar=False,
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else -1
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    history = model.history
    losses = {
        stage: float(history[key].iloc[-1, 0])
        for stage, key in (
            ("classifier", "stage1_train_loss"),
            ("frozen", "stage2_elbo_train"),
            ("joint", "stage3_elbo_train"),
        )
        if key in history
    }
    state = model.module.state_dict()
    result = {
        "rank": rank,
        "world_size": world,
        "seen": seen.seen,
        "losses": losses,
        "history_keys": sorted(history),
        "shapes": {k: list(v.shape) for k, v in state.items()},
        "classifier": seen.classifier,
        "checksum": _checksum(state),
    }
    (out_dir / f"rank{max(rank, 0)}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

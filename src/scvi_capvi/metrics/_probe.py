"""The probe of :cite:t:`Bolos20`: a small feed-forward classifier on raw counts vs PCA vs a
latent space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ._neighbors import check_per_cell

PROBE_KS = (10, 25, 50, 100)


def _dense(X) -> np.ndarray:
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (cells x features), got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values.")
    return X


def probe_split(
    n_cells: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / validation / test cells of the probe (:cite:t:`Bolos20`: 80/10/10)."""
    perm = np.random.default_rng(seed).permutation(n_cells)
    n_train = int(round(fractions[0] * n_cells))
    n_val = int(round(fractions[1] * n_cells))
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def probe_accuracy(
    X,
    labels: Sequence,
    n_hidden: int = 516,
    lr: float = 1e-4,
    n_epochs: int = 100,
    batch_size: int = 10,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    return_history: bool = False,
) -> float | tuple[float, pd.DataFrame]:
    """Test accuracy of :cite:t:`Bolos20`'s feed-forward probe trained on features ``X``.

    (:cite:t:`Bolos20`, §2.4, Table 2): one hidden layer of 516 ReLU units, Xavier
    (Glorot) initialisation, softmax output, cross-entropy, Adam with learning rate 1e-4,
    batch size 10, 100 epochs, 80/10/10 train / validation / test split of the cells. The
    weights of the last epoch are evaluated (the paper trains a fixed number of epochs).

    Parameters
    ----------
    X
        ``(n_cells, n_features)`` inputs: raw counts, PCA components or a latent space.
    labels
        ``(n_cells,)`` cell types.
    n_hidden, lr, n_epochs, batch_size
        Probe architecture and training (paper defaults).
    fractions
        Train / validation / test fractions of the cells.
    seed
        Seed of the split, the initialisation and the minibatch order.
    return_history
        Also return the per-epoch train / validation accuracy (:cite:t:`Bolos20`, Fig. 3).

    Returns
    -------
    Test accuracy in ``[0, 1]`` (and the history).
    """
    X = _dense(X)
    labels = check_per_cell(labels, X.shape[0], "labels")
    classes, y = np.unique(labels.astype(str), return_inverse=True)
    train, val, test = probe_split(X.shape[0], fractions, seed)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"Too few cells ({X.shape[0]}) for a train / test split.")

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], n_hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(n_hidden, len(classes)),
    )
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(layer.weight, generator=gen)
            torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def acc(idx: np.ndarray) -> float:
        if len(idx) == 0:
            return float("nan")
        net.eval()
        with torch.no_grad():
            pred = net(Xt[idx]).argmax(-1)
        net.train()
        return float((pred == yt[idx]).float().mean())

    history = []
    for epoch in range(n_epochs):
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(net(Xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if return_history:
            history.append(
                {"epoch": epoch, "train_accuracy": acc(train), "val_accuracy": acc(val)}
            )
    result = acc(test)
    return (result, pd.DataFrame(history)) if return_history else result


def pca_features(counts, k: int, seed: int = 0) -> np.ndarray:
    """Standardise each gene (``StandardScaler``), then the first ``k`` PCs (:cite:t:`Bolos20`,
    §2.3)."""
    X = _dense(counts)
    k = int(min(k, X.shape[0] - 1, X.shape[1]))
    scaled = StandardScaler().fit_transform(X)
    return PCA(n_components=k, random_state=seed).fit_transform(scaled).astype(np.float32)


def probe_table(
    counts,
    labels: Sequence,
    latents: Mapping[str, np.ndarray] | None = None,
    ks: Sequence[int] = PROBE_KS,
    seed: int = 0,
    **probe_kwargs,
) -> pd.DataFrame:
    """Probe test accuracy on raw counts, on PCA(k) and on latent spaces (:cite:t:`Bolos20`,
    Table 5).

    Parameters
    ----------
    counts
        ``(n_cells, n_genes)`` raw counts.
    labels
        ``(n_cells,)`` cell types.
    latents
        Name → ``(n_cells, k)`` latent spaces of the same cells (e.g. a model fitted with
        ``n_latent=k``); their dimension is reported as ``dim``.
    ks
        Numbers of principal components.
    seed
        Seed shared by every probe (same split for all inputs).
    **probe_kwargs
        Passed to :func:`probe_accuracy`.

    Returns
    -------
    One row per input: ``input`` (``"raw"``, ``"PCA"`` or the latent's name), ``dim`` and
    ``accuracy``.
    """
    rows = [
        {
            "input": "raw",
            "dim": np.asarray(counts.shape)[1],
            "accuracy": probe_accuracy(counts, labels, seed=seed, **probe_kwargs),
        }
    ]
    for k in ks:
        feats = pca_features(counts, k, seed=seed)
        acc = probe_accuracy(feats, labels, seed=seed, **probe_kwargs)
        rows.append({"input": "PCA", "dim": feats.shape[1], "accuracy": acc})
    for name, latent in (latents or {}).items():
        acc = probe_accuracy(latent, labels, seed=seed, **probe_kwargs)
        rows.append({"input": name, "dim": np.asarray(latent).shape[1], "accuracy": acc})
    return pd.DataFrame(rows)

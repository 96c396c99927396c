"""Checks of the count matrix: non-negative, finite, integer (unless allowed), not empty.

The matrix is read in bounded chunks (the ``.data`` of an in-memory sparse matrix, row blocks
of a dense one, the first rows of a backed one), so a 200k-cell AnnData is never densified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from ._validation import _warn

if TYPE_CHECKING:
    from collections.abc import Iterator

# Values read at a time (about 16 MB of float32) and rows read from a backed matrix.
_CHUNK_VALUES = 1 << 22
MAX_BACKED_ROWS = 10_000


@dataclass
class CountSummary:
    """What :func:`check_counts` saw: rows checked and all-zero cells / genes among them."""

    n_rows_checked: int
    n_rows: int
    n_zero_cells: int
    n_zero_genes: int | None  # None when only part of the rows was read


def _value_blocks(x, max_backed_rows: int) -> Iterator[tuple[np.ndarray, object]]:
    """Blocks ``(values, block)`` of ``x``: the stored values, and the block (for row sums)."""
    n_rows = x.shape[0]
    if sparse.issparse(x):
        data = x.data
        for start in range(0, data.size, _CHUNK_VALUES):
            yield data[start : start + _CHUNK_VALUES], None
        return
    rows = max(1, _CHUNK_VALUES // max(1, x.shape[1]))
    stop_rows = n_rows if isinstance(x, np.ndarray) else min(n_rows, max_backed_rows)
    for start in range(0, stop_rows, rows):
        block = x[start : min(start + rows, stop_rows)]
        if isinstance(block, pd.DataFrame):
            block = block.to_numpy()
        values = block.data if sparse.issparse(block) else np.asarray(block)
        yield values, block


def check_counts(
    x,
    where: str,
    *,
    max_backed_rows: int = MAX_BACKED_ROWS,
    warn_zero_cells: bool = True,
    warn_zero_genes: bool = True,
    allow_non_integer: bool = False,
) -> CountSummary:
    """Raise unless ``x`` holds raw counts; warn about all-zero cells and genes.

    ``x`` may be a dense array, a CSR / CSC matrix, or a backed (h5py / anndata sparse)
    dataset; only the first ``max_backed_rows`` rows of a backed matrix are read. With
    ``allow_non_integer``, non-integer values (ambient-corrected counts) give a warning instead.

    Raises
    ------
    ValueError
        NaN / inf, negative or non-integer values (log-normalised or scaled data).
    """
    warned_fraction = False
    n_rows, n_cols = x.shape
    row_sums, col_sums, n_checked = [], np.zeros(n_cols), 0
    for values, block in _value_blocks(x, max_backed_rows):
        values = np.asarray(values)
        finite = np.isfinite(values)
        if not finite.all():
            n_bad = int((~finite).sum())
            raise ValueError(
                f"{where} contains {n_bad} NaN or infinite values; the model needs finite raw "
                "counts. Check how the matrix was built (e.g. a merge or a division by zero)."
            )
        if values.size and values.min() < 0:
            raise ValueError(
                f"{where} has negative values (min {values.min():g}), so it does not hold raw "
                "counts (scaled or log-normalised data?). Pass the raw UMI counts, e.g. "
                "setup_anndata(adata, layer='counts')."
            )
        fractional = values != np.floor(values)
        if fractional.any() and not allow_non_integer:
            example = values[fractional][0]
            raise ValueError(
                f"{where} has non-integer values (e.g. {example:g}), so it does not hold raw "
                "counts (normalised or log-transformed data?). Pass the raw UMI counts, e.g. "
                "setup_anndata(adata, layer='counts'). For counts that are non-integer on "
                "purpose (ambient-corrected, e.g. SoupX or CellBender), pass "
                "setup_anndata(..., allow_non_integer_counts=True)."
            )
        if fractional.any() and not warned_fraction:
            warned_fraction = True
            _warn(
                f"{where} has non-integer values (e.g. {values[fractional][0]:g}); they are "
                "used as counts (allow_non_integer_counts=True). The count likelihood is "
                "evaluated at non-integer values, so likelihoods are not comparable with "
                "those of raw counts."
            )
        if block is not None:
            row_sums.append(np.asarray(block.sum(axis=1)).ravel())
            col_sums += np.asarray(block.sum(axis=0)).ravel()
            n_checked += block.shape[0]
    if sparse.issparse(x):
        row_sums = [np.asarray(x.sum(axis=1)).ravel()]
        col_sums = np.asarray(x.sum(axis=0)).ravel()
        n_checked = n_rows
    row_sums = np.concatenate(row_sums) if row_sums else np.zeros(0)
    whole = n_checked == n_rows
    summary = CountSummary(
        n_rows_checked=n_checked,
        n_rows=n_rows,
        n_zero_cells=int((row_sums == 0).sum()),
        n_zero_genes=int((col_sums == 0).sum()) if whole else None,
    )
    if warn_zero_cells and summary.n_zero_cells:
        of = f"{n_rows}" if whole else f"the first {n_checked} (backed matrix)"
        _warn(
            f"{summary.n_zero_cells} of {of} cells have no counts in {where}; they carry no "
            "information. Filter them first: scanpy.pp.filter_cells(adata, min_counts=1)."
        )
    if warn_zero_genes and summary.n_zero_genes:
        _warn(
            f"{summary.n_zero_genes} of {n_cols} genes have no counts in {where}; consider "
            "scanpy.pp.filter_genes(adata, min_counts=1) before setup_anndata."
        )
    return summary


# ---------------------------------------------------------------------- labels and batches

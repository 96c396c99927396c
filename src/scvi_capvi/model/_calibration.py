"""Temperature scaling of CapVI's classifier ``q(c|x)`` (Guo et al. 2017): calibrated soft
predictions, fitted on the annotated validation cells after training."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

TEMPERATURE_RANGE = (0.05, 20.0)


class CalibrationMixin:
    """The temperature T of ``q(c|x)``: its fit (:meth:`calibrate`) and its use."""

    def _probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        temperature = float(self.module.classifier_temperature) if calibrated else 1.0
        return torch.softmax(torch.as_tensor(logits) / temperature, -1).numpy()

    @property
    def classifier_temperature(self) -> float:
        """Temperature T of ``q(c|x)``: soft predictions are ``softmax(logits / T)``."""
        return float(self.module.classifier_temperature)

    def calibrate(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        labels_key: str | None = None,
        n_grid: int = 401,
    ) -> float:
        """Fit the temperature of ``q(c|x)`` by minimising the NLL of held-out labels.

        Temperature scaling (Guo et al. 2017) divides the classifier's logits by one scalar
        T > 0: hard predictions are unchanged, probabilities become calibrated. It runs
        automatically at the end of :meth:`train` on the annotated validation cells; the
        temperature is stored in the module (saved and loaded with the model) and applied by
        :meth:`predict` and :meth:`get_novelty_score`.

        Parameters
        ----------
        adata, indices
            Cells with annotations to fit on; default: the annotated validation cells.
        labels_key
            Column of ``adata.obs`` with their cell types when ``adata`` is a new AnnData
            (default: the key the model was set up with).
        n_grid
            Number of temperatures tried, log-spaced over ``TEMPERATURE_RANGE`` (1/20 to 20);
            the one with the lowest negative log-likelihood is kept.

        Returns
        -------
        The fitted temperature.
        """
        if not self.use_labels:
            raise ValueError("Calibration needs cell-type annotations (labels_key was None).")
        if adata is None:
            indices = self._known_validation_indices() if indices is None else indices
            codes = self._label_codes(np.asarray(indices))
        else:
            key = labels_key or self.registry_["setup_args"]["labels_key"]
            if key not in adata.obs:
                raise KeyError(f"`labels_key` {key!r} is not a column of adata.obs.")
            obs = adata.obs[key].to_numpy()
            obs = obs if indices is None else obs[np.asarray(indices)]
            lookup = {name: i for i, name in enumerate(self.cell_types)}
            codes = np.array([lookup.get(name, -1) for name in obs])
        known = (codes >= 0) & (codes < len(self.cell_types))
        if not known.any():
            raise ValueError("No cell of a known type to calibrate on.")
        logits, _ = self._classifier_pass(adata, indices, None, latent=False)
        logits = torch.as_tensor(logits[known], dtype=torch.float64)
        target = torch.as_tensor(codes[known].astype(np.int64))
        # a bounded 1-d search is exact enough and cannot diverge (an all-correct validation
        # set would otherwise drive T -> 0)
        grid = torch.exp(torch.linspace(*np.log(TEMPERATURE_RANGE), n_grid, dtype=torch.float64))
        nll = torch.stack([F.cross_entropy(logits / t, target) for t in grid])
        temperature = float(grid[int(torch.argmin(nll))])
        self.module.classifier_temperature.fill_(temperature)
        return temperature

"""Small pieces shared by the modules."""

from __future__ import annotations

import math

import torch
from scvi import REGISTRY_KEYS

# Dony et al. 2020, §2: "an additional layer at the input of each model which normalised all counts
# to 10000, followed by a ln(1 + x) operation"; CapVI's classifier reads the same input.
TARGET_SUM = 1e4


def normalize_log1p(x: torch.Tensor, target_sum: float = TARGET_SUM) -> torch.Tensor:
    """Scale each cell to ``target_sum`` counts, then ``log1p`` (all-zero cells stay zero)."""
    size = x.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.log1p(x / size * target_sum)


# A pass holds about this many float32 tensors of (samples x cells x genes) at once (the
# decoder's outputs, the NB's rate and dropout, log-probability terms): measured, 1e8 values
# per pass took a process from 0.84 to 5.61 GiB resident (48 bytes a value).
_IS_TENSORS_PER_PASS = 12
# Upper bound on the number of (sample x cell x gene) values one pass may hold on the CPU:
# about 1.2 GB at 48 bytes a value (1e8, the budget before, took 5.61 GiB: the likely cause of
# the 6.9 GB benchmark process; 2.5e7 peaked at 2.08 GiB and ran 10 % faster, same estimate:
# pbmc68k_reduced, 1,000 samples, benchmarks/marginal_ll_memory.py).
_IS_ELEMENT_BUDGET = 2.5e7
# On a GPU the budget comes from its free memory: a pass may use half of what is free.


def element_budget(device: torch.device | str | None = None) -> float:
    """Number of (sample x cell x gene) values one importance-sampling pass may hold on
    ``device``: fixed on the CPU, from the free memory on a CUDA device."""
    device = torch.device("cpu" if device is None else device)
    if device.type != "cuda":
        return _IS_ELEMENT_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    return 0.5 * free / (4 * _IS_TENSORS_PER_PASS)


def default_samples_per_pass(
    n_mc_samples: int,
    batch_size: int,
    n_genes: int,
    device: torch.device | str | None = None,
) -> int:
    """Number of importance samples decoded together so one pass stays within memory
    (:func:`element_budget` of ``device``)."""
    per_sample = max(1, batch_size * n_genes)
    return int(max(1, min(n_mc_samples, element_budget(device) // per_sample)))


@torch.inference_mode()
def chunked_log_px(module, tensors: dict[str, torch.Tensor], n_mc_samples: int, per_pass: int):
    """Importance-sampled ``log p(x)`` of each cell of a minibatch, from the module's
    ``log_importance_weights(tensors, n_samples)`` (``(n_samples, n_cells)`` of
    ``log p(x, latents) - log q(latents | x)``), drawn ``per_pass`` samples at a time and
    combined with a running log-sum-exp: the estimate does not depend on the chunking."""
    acc, done = None, 0
    while done < n_mc_samples:
        k = min(per_pass, n_mc_samples - done)
        chunk = torch.logsumexp(module.log_importance_weights(tensors, n_samples=k), dim=0)
        acc = chunk if acc is None else torch.logaddexp(acc, chunk)
        done += k
    return acc - math.log(n_mc_samples)


class ChunkedMarginalLLMixin:
    """``marginal_ll`` (the module API that :meth:`scvi.model.base.VAEMixin.get_marginal_ll`
    calls) for a module with ``log_importance_weights``: :func:`chunked_log_px` with a
    number of samples per pass that keeps memory bounded however many samples are asked for.
    """

    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int = 1000,
        return_mean: bool = False,
        n_mc_samples_per_pass: int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``log p(x)`` of each cell of the minibatch (their mean with ``return_mean``)."""
        if int(n_mc_samples) < 1:
            raise ValueError(f"`n_mc_samples` must be >= 1, got {n_mc_samples}.")
        x = tensors[REGISTRY_KEYS.X_KEY]
        per_pass = n_mc_samples_per_pass or default_samples_per_pass(
            n_mc_samples, x.shape[0], x.shape[-1], device=getattr(self, "device", None)
        )
        if per_pass < 1:
            raise ValueError(f"`n_mc_samples_per_pass` must be >= 1, got {per_pass}.")
        ll = chunked_log_px(self, tensors, int(n_mc_samples), int(per_pass))
        return ll.mean() if return_mean else ll

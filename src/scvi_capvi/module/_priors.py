"""The priors as modules: CapVI's mixture of isotropic Gaussians, one per cell type, with the
batch-mixing penalty on its centroids (:cite:t:`Clivio22`), and VampVI's VampPrior
(:cite:t:`Dony20`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from ._utils import normalize_log1p


def gaussian_kl_to_centroids(
    qz_m: torch.Tensor, qz_v: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """``KL(N(m, diag v) || N(mu_c, sigma_c^2 I))`` for every cell and every centroid at once.

    Parameters
    ----------
    qz_m, qz_v
        ``(n_cells, D)`` posterior means and variances.
    mu
        ``(C, D)`` centroids.
    log_scale
        ``(C,)`` or scalar log of the prior standard deviation sigma_c.

    Returns
    -------
    ``(n_cells, C)`` closed-form KL divergences (:cite:t:`Clivio22`, §3: q(z) does not depend
    on c, so all C terms share one encoder pass).
    """
    n_latent = qz_m.shape[-1]
    log_var = 2.0 * log_scale.expand(mu.shape[0])  # (C,)
    inv_var = torch.exp(-log_var)
    # sum_d (m_d - mu_cd)^2 as ||m||^2 - 2 m.mu + ||mu||^2, without a (n, C, D) tensor
    sq_dist = (
        qz_m.pow(2).sum(-1, keepdim=True) - 2.0 * qz_m @ mu.T + mu.pow(2).sum(-1).unsqueeze(0)
    ).clamp_min(0.0)
    return 0.5 * (
        inv_var * (qz_v.sum(-1, keepdim=True) + sq_dist)
        - n_latent
        - torch.log(qz_v).sum(-1, keepdim=True)
        + n_latent * log_var
    )


def _one_hot(index: torch.Tensor, n_cat: int) -> torch.Tensor:
    return F.one_hot(index.view(-1).long(), max(n_cat, 1)).float()


def batch_mixing_penalty(
    z_mean: torch.Tensor,
    q_bar: torch.Tensor,
    batch_index: torch.Tensor,
    mu: torch.Tensor,
    n_batch: int,
    weight: float,
) -> torch.Tensor:
    r"""Batch-mixing penalty of :cite:t:`Clivio22`, §3.

    .. math::
        P = \frac{\lambda}{C S} \sum_c \sum_s
            \Big\| \sum_{n: s_n = s} \bar q(c \mid x_n) (\hat z_n - \mu_c) \Big\|_2^2

    Parameters
    ----------
    z_mean
        ``(n_cells, D)`` posterior means ẑ_n.
    q_bar
        ``(n_cells, C)`` one-hot labels for annotated cells, q(c|x) otherwise.
    batch_index
        ``(n_cells,)`` or ``(n_cells, 1)`` integer batch codes in ``[0, n_batch)``.
    mu
        ``(C, D)`` centroids.
    n_batch
        S, the number of batches.
    weight
        λ.
    """
    n_types = mu.shape[0]
    onehot_s = _one_hot(batch_index, n_batch).to(z_mean.dtype)
    # A[c, s] = sum_n 1[s_n = s] q̄_nc ẑ_n ;  W[c, s] = sum_n 1[s_n = s] q̄_nc
    weighted = torch.einsum("ns,nc->cs", onehot_s, q_bar)
    sums = torch.einsum("ns,nc,nd->csd", onehot_s, q_bar, z_mean)
    diff = sums - weighted.unsqueeze(-1) * mu.unsqueeze(1)
    return weight / (n_types * max(n_batch, 1)) * diff.pow(2).sum()


class GaussianMixturePrior(nn.Module):
    """``p(z) = sum_c phi_c N(z; mu_c, sigma_c^2 I)``: centroids ``means`` ``(C, D)``, mixing
    weights ``phi = softmax(logits)`` and scales ``sigma_c = exp(log_scale)``, one shared
    (a buffer) or one per component (learned).

    Parameters
    ----------
    n_components
        C, the number of modes (cell types, or mixture components without labels).
    n_latent
        D, the latent dimension.
    scale
        Initial (or fixed) sigma.
    learn_scale
        Learn one sigma_c per component.
    init_scale
        Standard deviation of the random initial centroids.
    """

    def __init__(
        self,
        n_components: int,
        n_latent: int,
        scale: float = 1.0,
        learn_scale: bool = False,
        init_scale: float = 1.0,
    ):
        super().__init__()
        self.n_components = n_components
        self.means = nn.Parameter(init_scale * torch.randn(n_components, n_latent))
        self.logits = nn.Parameter(torch.zeros(n_components))
        log_scale = torch.full((n_components,) if learn_scale else (1,), math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def log_weights(self) -> torch.Tensor:
        """``(C,)`` log mixing weights ``log phi_c``."""
        return F.log_softmax(self.logits, -1)

    def kl(self, qz_loc: torch.Tensor, qz_var: torch.Tensor) -> torch.Tensor:
        """``(n_cells, C)``: ``KL(q(z|x) || N(mu_c, sigma_c^2 I))`` for every component."""
        return gaussian_kl_to_centroids(qz_loc, qz_var, self.means, self.log_scale)

    def component_logits(self, qz_loc: torch.Tensor, qz_var: torch.Tensor) -> torch.Tensor:
        """``log phi_c - KL(q(z|x) || N(mu_c, sigma_c^2 I))``, up to a constant per cell.

        Their softmax is the q(c|x) that maximises the unlabelled bound for a given q(z|x):
        the assignment the classifier learns in a GMVAE.
        """
        return self.log_weights() - self.kl(qz_loc, qz_var)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z) = logsumexp_c [log phi_c + log N(z; mu_c, sigma_c^2 I)]`` (any shape)."""
        scale = self.log_scale.exp().expand(self.n_components).unsqueeze(-1)  # (C, 1)
        comp = Normal(self.means, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (..., C)
        return torch.logsumexp(comp + self.log_weights(), dim=-1)


def diagonal_gaussian_mixture_log_prob(
    z: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    """``log (1/K) Σ_k N(z; means_k, diag(variances_k))`` for every row of ``z``.

    The quadratic form is expanded into matrix products so that no ``(..., K, D)`` tensor is
    built: importance sampling evaluates this for ``n_samples × cells × K`` pairs at once.

    Parameters
    ----------
    z
        ``(..., D)`` points.
    means, variances
        ``(K, D)`` component parameters.

    Returns
    -------
    ``(...)`` log densities.
    """
    precision = variances.reciprocal()
    quad = (
        (z * z) @ precision.T
        - 2.0 * (z @ (means * precision).T)
        + (means * means * precision).sum(-1)
    )
    log_norm = variances.log().sum(-1) + z.shape[-1] * math.log(2 * math.pi)
    log_comp = -0.5 * (quad + log_norm)
    return torch.logsumexp(log_comp, dim=-1) - math.log(means.shape[0])


class VampPrior(nn.Module):
    """VampPrior (:cite:t:`Tomczak18`, as used by :cite:t:`Dony20`):
    ``p(z) = (1/K) Σ_k q(z | u_k)`` over ``K`` learnable pseudo-inputs ``u_k`` in gene space.

    The components are the posterior of the model's own encoder at the pseudo-inputs, so the
    encoder is an argument of every method rather than a submodule (it belongs to the VAE).
    Pseudo-inputs are kept non-negative (``u = softplus(w)``) so the count normalisation of
    the encoder's input applies to them unchanged.

    Parameters
    ----------
    pseudo_inputs
        ``(K, n_input)`` non-negative initial counts (zeros start at ``1e-3`` to keep the
        inverse softplus finite).
    pseudo_input_batch
        ``(K,)`` batch index with which each pseudo-input is encoded.
    """

    def __init__(self, pseudo_inputs: torch.Tensor, pseudo_input_batch: torch.Tensor):
        super().__init__()
        u = pseudo_inputs.float().clamp_min(1e-3)
        # inverse softplus: w = u + log(1 - exp(-u))
        self.pseudo_inputs_unconstrained = nn.Parameter(u + torch.log(-torch.expm1(-u)))
        self.register_buffer("pseudo_input_batch", pseudo_input_batch.long().reshape(-1, 1))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The ``(K, n_input)`` non-negative pseudo-inputs ``u_k``."""
        return F.softplus(self.pseudo_inputs_unconstrained)

    def components(self, encoder: nn.Module) -> Normal:
        """``q(z | u_k)`` of every pseudo-input, batch shape ``(K, n_latent)``: ``encoder``
        (a scvi-tools ``Encoder`` with ``return_dist=True``) on the normalised pseudo-inputs."""
        qz, _ = encoder(normalize_log1p(self.pseudo_inputs), self.pseudo_input_batch)
        return qz

    def log_prob(self, z: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
        """``log p(z) = log (1/K) Σ_k q(z | u_k)`` for ``(..., n_latent)`` points."""
        qu = self.components(encoder)
        return diagonal_gaussian_mixture_log_prob(z, qu.loc, qu.scale.square())

    def kl(self, qz: Normal, z: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
        """One-sample Monte Carlo ``KL(q(z|x) ‖ p(z))``: ``log q(z|x) - log p(z)`` at a draw
        ``z ~ q(z|x)`` (a diagonal Gaussian).

        An invertible map ``T`` applied to the posterior and to every component alike (a flow
        shared by all inputs) leaves this unchanged: pass the draw before ``T``.
        """
        return qz.log_prob(z).sum(-1) - self.log_prob(z, encoder)


def _rename_keys(renamed: dict[str, str], state_dict: dict, prefix: str) -> None:
    for old, new in renamed.items():
        if prefix + old in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


# state-dict names before the prior became a submodule -> names now (saved models load)
RENAMED_PRIOR_KEYS = {
    "prior_means": "prior.means",
    "prior_logits": "prior.logits",
    "prior_log_scale": "prior.log_scale",
}
RENAMED_VAMP_PRIOR_KEYS = {
    "pseudo_inputs_unconstrained": "prior.pseudo_inputs_unconstrained",
    "pseudo_input_batch": "prior.pseudo_input_batch",
}


def rename_old_prior_keys(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: a state saved with the old flat names loads."""
    _rename_keys(RENAMED_PRIOR_KEYS, state_dict, prefix)


def rename_old_vamp_prior_keys(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: a VampVI state saved before the VampPrior became a
    submodule (flat ``pseudo_inputs_unconstrained``, ``pseudo_input_batch``) loads."""
    _rename_keys(RENAMED_VAMP_PRIOR_KEYS, state_dict, prefix)

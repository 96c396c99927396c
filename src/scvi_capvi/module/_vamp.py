"""VAE with a VampPrior and/or an inverse-autoregressive-flow posterior (:cite:t:`Dony20`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pyro.distributions import TransformedDistribution
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence
from torch.nn.functional import softplus

from ._nb import build_nb_decoder
from ._priors import VampPrior, rename_old_vamp_prior_keys
from ._utils import ChunkedMarginalLLMixin, normalize_log1p

if TYPE_CHECKING:
    from typing import Literal

    from torch.distributions import Distribution

Z_BASE_KEY = "z_base"
QZ_BASE_KEY = "qz_base"
LOG_QZ_KEY = "log_qz"
FLOW_LOG_DET_KEY = "flow_log_det"


class VampPriorModule(ChunkedMarginalLLMixin, VAE):
    """VAE for counts with a VampPrior and/or an IAF posterior (:cite:t:`Dony20`).

    scvi-tools' :class:`~scvi.module.VAE` with what the paper adds. Generative model (VAE's
    ``generative``): ``z ~ p(z)``, ``x_g | z, l, s ~ NB(l ρ_g(z, s), θ_g)`` (ZINB optional),
    with ``ρ`` from ``DecoderSCVI`` or, with ``decoder="linear"``, the LDVAE
    ``LinearDecoderSCVI``. The prior is either ``N(0, I)`` or the :class:`VampPrior`
    (:cite:t:`Tomczak18`) ``p(z) = (1/K) Σ_k q(z | u_k)`` over ``K`` learnable pseudo-inputs
    ``u_k`` in gene space, encoded by the same encoder as the cells. The KL term is estimated by
    Monte Carlo, ``log q(z|x) - log p(z)``, unless both prior and posterior are Gaussian.

    The posterior is ``q(z0 | x) = N(μ(x), σ²(x))`` from VAE's encoder applied to the paper's
    input layer (counts scaled to 10,000 per cell, then ``log1p``), batch one-hot injected,
    optionally pushed through ``n_flows`` pyro ``AffineAutoregressive`` layers (IAF,
    :cite:t:`Kingma16`): ``z = T(z0)``, ``log q(z|x) = log N(z0) - log|det ∂T/∂z0|``.

    The flow is shared by all cells (not conditioned on ``x``). Two consequences, by design:
    ``q(z | u_k)`` of every pseudo-input is the same flow applied to its own Gaussian, so the
    VampPrior stays exact and cheap with an IAF posterior — ``T⁻¹(z)`` is the cached ``z0`` —
    instead of needing ``K`` sequential flow inversions per sample; and with the VampPrior the
    log-determinant cancels in the KL, so VAMP+IAF differs from VAMP through where the
    decoder reads ``z = T(z0)``. With the normal prior the flow acts on the KL as well.

    Each pseudo-input is encoded with the batch of the cell it was initialised from (batch 0
    for a random initialisation). The encoder uses layer norm instead of batch norm by default:
    with batch norm the pseudo-inputs' encoding, hence the prior, would depend on the
    minibatch during training and differ in evaluation mode.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches; ``0`` or ``1`` for none.
    n_labels
        Number of labels (unused; kept for the scvi-tools model interface).
    n_hidden
        Nodes per hidden layer of the encoder and the non-linear decoder.
    n_latent
        Dimensionality of ``z``.
    n_layers
        Hidden layers of the encoder and the non-linear decoder.
    dropout_rate
        Dropout in the encoder.
    prior
        ``"vamp"`` (VampPrior, kept as the submodule ``prior``) or ``"normal"`` (``N(0, I)``;
        ``prior`` is then ``None``). The choice is ``prior_type``.
    n_pseudo_inputs
        ``K``, number of pseudo-inputs (:cite:t:`Dony20` uses 500).
    pseudo_input_init
        ``(K, n_input)`` non-negative counts (e.g. ``K`` random cells) to start the
        pseudo-inputs from; random positive values if ``None``.
    pseudo_input_batch
        ``(K,)`` batch index used to encode each pseudo-input; zeros if ``None``.
    posterior
        ``"normal"`` (diagonal Gaussian) or ``"iaf"`` (that Gaussian followed by ``n_flows``
        IAF layers).
    n_flows
        Number of IAF layers (:cite:t:`Dony20` uses 5).
    flow_hidden_dims
        Hidden sizes of each flow's ``pyro.nn.AutoRegressiveNN``; pyro's default
        ``[3 * n_latent + 1]`` if ``None``.
    decoder
        ``"nonlinear"`` (``DecoderSCVI``) or ``"linear"`` (``LinearDecoderSCVI``, LDVAE).
    dispersion
        ``"gene"`` or ``"gene-batch"``.
    gene_likelihood
        ``"nb"`` (:cite:t:`Dony20`) or ``"zinb"``.
    use_observed_lib_size
        Use the observed library size ``l``; otherwise a log-normal latent library with a
        per-batch prior as in scVI, encoded from ``log1p`` of the raw counts.
    library_log_means, library_log_vars
        ``(1, n_batch)`` prior parameters of the log library, required when
        ``use_observed_lib_size=False``.
    use_batch_norm
        Where to use batch norm: ``"none"``, ``"encoder"``, ``"decoder"`` or ``"both"``.
    use_layer_norm
        Where to use layer norm: ``"none"``, ``"encoder"``, ``"decoder"`` or ``"both"``.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        prior: Literal["vamp", "normal"] = "vamp",
        n_pseudo_inputs: int = 500,
        pseudo_input_init: torch.Tensor | np.ndarray | None = None,
        pseudo_input_batch: torch.Tensor | np.ndarray | None = None,
        posterior: Literal["normal", "iaf"] = "normal",
        n_flows: int = 5,
        flow_hidden_dims: list[int] | None = None,
        decoder: Literal["nonlinear", "linear"] = "nonlinear",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        gene_likelihood: Literal["nb", "zinb"] = "nb",
        use_observed_lib_size: bool = True,
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "decoder",
        use_layer_norm: Literal["encoder", "decoder", "none", "both"] = "encoder",
    ):
        if prior not in ("vamp", "normal"):
            raise ValueError(f"`prior` must be 'vamp' or 'normal', got {prior!r}.")
        if posterior not in ("normal", "iaf"):
            raise ValueError(f"`posterior` must be 'normal' or 'iaf', got {posterior!r}.")
        if posterior == "iaf" and (n_latent < 2 or n_flows < 1):
            raise ValueError("An IAF posterior needs `n_latent >= 2` and `n_flows >= 1`.")
        if decoder not in ("nonlinear", "linear"):
            raise ValueError(f"`decoder` must be 'nonlinear' or 'linear', got {decoder!r}.")
        if dispersion not in ("gene", "gene-batch"):
            raise ValueError(f"`dispersion` must be 'gene' or 'gene-batch', got {dispersion!r}.")
        if gene_likelihood not in ("nb", "zinb"):
            raise ValueError(f"`gene_likelihood` must be 'nb' or 'zinb', got {gene_likelihood!r}.")
        if not use_observed_lib_size and (library_log_means is None or library_log_vars is None):
            raise ValueError(
                "`use_observed_lib_size=False` needs `library_log_means` and `library_log_vars`."
            )
        super().__init__(
            n_input,
            # VAE's gene-batch dispersion has one column per batch: at least one. The encoder
            # and decoders ignore a single category, as they ignore none.
            n_batch=max(n_batch, 1),
            n_labels=n_labels,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            log_variational=False,  # `inference` below builds the encoders' inputs
            gene_likelihood=gene_likelihood,
            encode_covariates=True,  # the encoders see the batch (VampVI has no covariates)
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
            use_observed_lib_size=use_observed_lib_size,
            library_log_means=None if use_observed_lib_size else np.asarray(library_log_means),
            library_log_vars=None if use_observed_lib_size else np.asarray(library_log_vars),
        )
        if use_observed_lib_size:
            del self.l_encoder  # VAE builds it regardless; it reads it only without this option
        if decoder == "linear":  # as scvi-tools' LDVAE: VAE's decoder replaced
            self.decoder = build_nb_decoder(
                "linear",
                n_latent,
                n_input,
                n_batch,
                n_layers,
                n_hidden,
                use_batch_norm in ("decoder", "both"),
                use_layer_norm in ("decoder", "both"),
            )
        self.prior_type = prior
        self.posterior = posterior
        self.decoder_type = decoder

        if posterior == "iaf":
            # What pyro's `affine_autoregressive` helper builds, but with a fresh ReLU per
            # network: the helper's default activation is one module instance shared by every
            # flow ever created, so `.eval()` on one model would reach into another.
            hidden = flow_hidden_dims or [3 * n_latent + 1]
            self.flows = nn.ModuleList(
                AffineAutoregressive(AutoRegressiveNN(n_latent, hidden, nonlinearity=nn.ReLU()))
                for _ in range(n_flows)
            )
        else:
            self.flows = nn.ModuleList()

        self.prior = None
        if prior == "vamp":
            if pseudo_input_init is None:
                init = softplus(torch.randn(n_pseudo_inputs, n_input))
            else:
                init = torch.as_tensor(np.asarray(pseudo_input_init), dtype=torch.float32)
                if init.shape != (n_pseudo_inputs, n_input):
                    raise ValueError(
                        f"`pseudo_input_init` must have shape ({n_pseudo_inputs}, {n_input}), "
                        f"got {tuple(init.shape)}."
                    )
                if (init < 0).any() or not torch.isfinite(init).all():
                    raise ValueError("`pseudo_input_init` must be finite non-negative counts.")
            if pseudo_input_batch is None:
                pseudo_input_batch = torch.zeros(n_pseudo_inputs, dtype=torch.long)
            pib = torch.as_tensor(np.asarray(pseudo_input_batch), dtype=torch.long).reshape(-1)
            if pib.shape[0] != n_pseudo_inputs:
                raise ValueError("`pseudo_input_batch` needs one batch index per pseudo-input.")
            self.prior = VampPrior(init, pib)
        self.register_load_state_dict_pre_hook(rename_old_vamp_prior_keys)

    # ------------------------------------------------------------------ prior / posterior
    def flow_forward(self, z_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Push ``z0`` through the IAF layers; return ``z`` and ``log|det ∂z/∂z0|``."""
        z = z_base
        log_det = torch.zeros(z_base.shape[:-1], device=z_base.device)
        for flow in self.flows:
            z_next = flow(z)
            log_det = log_det + flow.log_abs_det_jacobian(z, z_next)
            z = z_next
        return z, log_det

    def posterior_distribution(self, qz_base: Normal) -> Distribution:
        """``q(z | x)`` as a distribution object (pyro ``TransformedDistribution`` for IAF)."""
        if self.posterior == "normal":
            return qz_base
        return TransformedDistribution(Independent(qz_base, 1), list(self.flows))

    def log_prior(
        self, z: torch.Tensor, z_base: torch.Tensor, flow_log_det: torch.Tensor
    ) -> torch.Tensor:
        """``log p(z)`` for ``z = T(z_base)``.

        For the VampPrior, ``log q(z | u_k) = log N(T⁻¹ z; μ_k, σ_k²) - log|det ∂T/∂z0|`` with
        the flow shared by all inputs, so ``T⁻¹ z`` is the known ``z_base``.
        """
        if self.prior is None:
            return Normal(0.0, 1.0).log_prob(z).sum(-1)
        return self.prior.log_prob(z_base, self.z_encoder) - flow_log_det

    def kl_z(self, inference_outputs: dict) -> torch.Tensor:
        """``KL(q(z|x) ‖ p(z))``: closed form for Gaussian/Gaussian, else one-sample MC."""
        qz_base, z_base = inference_outputs[QZ_BASE_KEY], inference_outputs[Z_BASE_KEY]
        if self.prior is not None:  # the shared flow cancels (see VampPrior.kl)
            return self.prior.kl(qz_base, z_base, self.z_encoder)
        if self.posterior == "normal":
            return kl_divergence(qz_base, Normal(0.0, 1.0)).sum(-1)
        z = inference_outputs[MODULE_KEYS.Z_KEY]
        return inference_outputs[LOG_QZ_KEY] - Normal(0.0, 1.0).log_prob(z).sum(-1)

    # ------------------------------------------------------------------ module API
    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, torch.Tensor | Distribution | None]:
        """Encode ``x``; draw ``z`` (shape ``(n_samples, cells, D)`` if ``n_samples > 1``).

        ``cont_covs`` and ``cat_covs`` (from VAE's inputs) are ``None``: VampVI registers no
        covariates.
        """
        qz_base, _ = self.z_encoder(normalize_log1p(x), batch_index)
        z_base = qz_base.rsample() if n_samples == 1 else qz_base.rsample((n_samples,))
        z, log_det = self.flow_forward(z_base)
        log_qz = qz_base.log_prob(z_base).sum(-1) - log_det

        ql = None
        if self.use_observed_lib_size:
            library = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
            if n_samples > 1:
                library = library.unsqueeze(0).expand(n_samples, -1, -1)
        else:
            ql, library = self.l_encoder(torch.log1p(x), batch_index)
            if n_samples > 1:
                library = ql.rsample((n_samples,))
        return {
            MODULE_KEYS.Z_KEY: z,
            MODULE_KEYS.QZ_KEY: self.posterior_distribution(qz_base),
            MODULE_KEYS.QL_KEY: ql,
            MODULE_KEYS.LIBRARY_KEY: library,
            Z_BASE_KEY: z_base,
            QZ_BASE_KEY: qz_base,
            LOG_QZ_KEY: log_qz,
            FLOW_LOG_DET_KEY: log_det,
        }

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Negative ELBO; ``reconstruction_loss`` is the NB NLL per cell (:cite:t:`Dony20`,
        Eq. 1)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        reconst_loss = -generative_outputs[MODULE_KEYS.PX_KEY].log_prob(x).sum(-1)
        kl_z = self.kl_z(inference_outputs)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = kl_divergence(
                inference_outputs[MODULE_KEYS.QL_KEY], generative_outputs[MODULE_KEYS.PL_KEY]
            ).sum(-1)
        loss = torch.mean(reconst_loss + kl_weight * kl_z + kl_l)
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconst_loss,
            kl_local={MODULE_KEYS.KL_L_KEY: kl_l, MODULE_KEYS.KL_Z_KEY: kl_z},
        )

    @torch.inference_mode()
    @auto_move_data
    def log_importance_weights(
        self, tensors: dict[str, torch.Tensor], n_samples: int
    ) -> torch.Tensor:
        """``log p(x, z[, l]) - log q(z[, l] | x)`` for ``n_samples`` posterior draws.

        All samples are decoded in one pass. Returns ``(n_samples, n_cells)``.
        """
        inf, gen = self.forward(
            tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
        )
        x = tensors[REGISTRY_KEYS.X_KEY]
        log_w = gen[MODULE_KEYS.PX_KEY].log_prob(x).sum(-1)
        log_w = log_w + self.log_prior(
            inf[MODULE_KEYS.Z_KEY], inf[Z_BASE_KEY], inf[FLOW_LOG_DET_KEY]
        )
        log_w = log_w - inf[LOG_QZ_KEY]
        if not self.use_observed_lib_size:
            library = inf[MODULE_KEYS.LIBRARY_KEY]
            log_w = log_w + gen[MODULE_KEYS.PL_KEY].log_prob(library).sum(-1)
            log_w = log_w - inf[MODULE_KEYS.QL_KEY].log_prob(library).sum(-1)
        return log_w.reshape(n_samples, -1)

    @torch.inference_mode()
    @auto_move_data
    def latent_mean(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic latent point per cell: ``T(μ(x))`` (``μ(x)`` without flows)."""
        qz_base, _ = self.z_encoder(
            normalize_log1p(tensors[REGISTRY_KEYS.X_KEY]), tensors[REGISTRY_KEYS.BATCH_KEY]
        )
        return self.flow_forward(qz_base.loc)[0]

    @torch.inference_mode()
    def get_loadings(self) -> np.ndarray:
        """``(genes, n_latent)`` weights of the linear decoder, batch norm folded in (as LDVAE)."""
        if self.decoder_type != "linear":
            raise ValueError("Loadings exist only for `decoder='linear'`.")
        layer = self.decoder.factor_regressor.fc_layers[0]
        w = layer[0].weight
        if layer[1] is not None:  # BatchNorm1d in eval mode: gamma / sqrt(var + eps) * W
            bn = layer[1]
            w = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).unsqueeze(1) * w
        return w[:, : self.n_latent].detach().cpu().numpy()

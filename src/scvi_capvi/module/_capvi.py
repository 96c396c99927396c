"""CapVI: a VAE whose prior has one Gaussian mode per cell type (:cite:t:`Clivio22`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module import VAE, Classifier
from scvi.module.base import LossOutput, auto_move_data
from scvi.nn import Encoder
from torch.distributions import kl_divergence as kl

from ._classifier import CellTypeClassifierMixin, masked_classification_terms
from ._priors import GaussianMixturePrior, batch_mixing_penalty, rename_old_prior_keys
from ._utils import ChunkedMarginalLLMixin

if TYPE_CHECKING:
    from collections.abc import Iterable

_NORM_PLACES = ("encoder", "decoder", "none", "both")


class CapVIModule(CellTypeClassifierMixin, ChunkedMarginalLLMixin, VAE):
    """CapVI generative model and inference networks (:cite:t:`Clivio22`, §2–3).

    A :class:`scvi.module.VAE` (its encoders, decoder, dispersion and library prior) with the
    mixture prior :class:`~scvi_capvi.module.GaussianMixturePrior` in place of ``N(0, I)``,
    the classifier ``q(c|x)`` and the batch-mixing penalty.

    Generative model for cell n: ``c ~ Cat(phi)``, ``z | c ~ N(mu_c, sigma_c^2 I)``,
    ``l | s ~ LogNormal(nu_s, tau_s)``, ``x | z, l, s ~ ZINB(l rho(z, s), theta_{g,s}, pi(z, s))``.
    Variational family: ``q(z|x,s)`` diagonal normal, ``q(l|x,s)`` log-normal and the classifier
    ``q(c|x)`` on log1p-normalised counts.

    Parameters
    ----------
    n_input
        Number of genes.
    n_labels
        Number of prior modes C (cell types, or mixture components without labels).
    n_batch
        Number of batches S.
    n_latent
        Latent dimension D.
    n_hidden, n_layers, dropout_rate
        Encoder / decoder width, depth and dropout (paper: 256, 3, 0.25).
    prior_scale
        Shared prior standard deviation sigma (paper grid 1, 1/8, 1/32).
    learn_prior_scale
        Learn one sigma_c per cell type, initialised at ``prior_scale`` (beyond the paper).
    mixing_penalty
        λ, the weight of the batch-mixing penalty (paper grid 0, 0.01, 0.1).
    gene_likelihood
        ``"zinb"`` (paper) or ``"nb"``.
    dispersion
        ``"gene-batch"`` (paper) or ``"gene"``.
    use_observed_lib_size
        Use the observed library size instead of the latent ``l`` (paper: latent).
    library_log_means, library_log_vars
        ``(1, S)`` empirical mean / variance of log library size per batch (prior of ``l``).
    classifier_n_hidden, classifier_n_layers, classifier_dropout_rate
        Architecture of ``q(c|x)``.
    use_labels
        Whether the labels tensor carries annotations (``False`` for the GMVAE without labels).
    semi_supervised
        Use annotations in the ELBO and the penalty (default: ignored, as in the paper), and
        keep training ``q(c|x)`` on them: ``classification_ratio`` times the class-weighted
        cross-entropy of the annotated cells is added to the loss, as scANVI does (the
        M2 model's alpha term, Kingma et al. 2014).
    classification_ratio
        Weight of that cross-entropy (scANVI's default, 50); only with ``semi_supervised``.
    class_weights
        ``(C,)`` weights of the stage-1 cross-entropy (inverse class frequency).
    prior_init_scale
        Standard deviation of the centroids' random initialisation.
    n_continuous_cov, n_cats_per_cov
        Number of continuous covariates, and categories of each categorical covariate
        (registered with ``categorical_covariate_keys`` / ``continuous_covariate_keys``). As in
        :class:`scvi.module.VAE`, they enter the decoder, and the encoders too with
        ``encode_covariates=True``; the batch always enters both.
    encode_covariates
        Give the covariates to the encoders as well.
    use_size_factor_key
        Scale the decoded expression by the registered size factors (``size_factor_key``)
        instead of the library size, as :class:`scvi.module.VAE`.
    use_batch_norm, use_layer_norm
        Where to normalise hidden layers: ``"encoder"``, ``"decoder"``, ``"both"`` or
        ``"none"`` (as :class:`scvi.module.VAE`; CapVI: batch norm in the encoders).
    component_balance
        Weight of ``KL(mean_n q(c|x_n) || uniform)`` over each minibatch, added to the loss
        (default 0: off). Without labels, q(c|x) tends to put every cell in the few components
        nearest at the start (the others then get no gradient and stay empty); this term keeps
        every component in use.
    """

    def __init__(
        self,
        n_input: int,
        n_labels: int,
        n_batch: int = 0,
        n_latent: int = 20,
        n_hidden: int = 256,
        n_layers: int = 3,
        dropout_rate: float = 0.25,
        prior_scale: float = 1.0,
        learn_prior_scale: bool = False,
        mixing_penalty: float = 0.01,
        gene_likelihood: Literal["zinb", "nb"] = "zinb",
        dispersion: Literal["gene-batch", "gene"] = "gene-batch",
        use_observed_lib_size: bool = False,
        library_log_means=None,
        library_log_vars=None,
        classifier_n_hidden: int = 256,
        classifier_n_layers: int = 1,
        classifier_dropout_rate: float = 0.25,
        use_labels: bool = True,
        semi_supervised: bool = False,
        classification_ratio: float = 50.0,
        class_weights=None,
        prior_init_scale: float = 1.0,
        n_continuous_cov: int = 0,
        n_cats_per_cov: Iterable[int] | None = None,
        encode_covariates: bool = False,
        use_size_factor_key: bool = False,
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "encoder",
        use_layer_norm: Literal["encoder", "decoder", "none", "both"] = "none",
        component_balance: float = 0.0,
    ):
        if n_labels < 1:
            raise ValueError(f"`n_labels` must be >= 1, got {n_labels}.")
        if prior_scale <= 0:
            raise ValueError(f"`prior_scale` must be > 0, got {prior_scale}.")
        if mixing_penalty < 0:
            raise ValueError(f"`mixing_penalty` must be >= 0, got {mixing_penalty}.")
        if component_balance < 0:
            raise ValueError(f"`component_balance` must be >= 0, got {component_balance}.")
        if classification_ratio < 0:
            raise ValueError(f"`classification_ratio` must be >= 0, got {classification_ratio}.")
        for name, value, allowed in (
            ("gene_likelihood", gene_likelihood, ("zinb", "nb")),
            ("dispersion", dispersion, ("gene-batch", "gene")),
            ("use_batch_norm", use_batch_norm, _NORM_PLACES),
            ("use_layer_norm", use_layer_norm, _NORM_PLACES),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
        use_observed_lib_size = use_size_factor_key or use_observed_lib_size
        if not use_observed_lib_size and (library_log_means is None or library_log_vars is None):
            raise ValueError(
                "`library_log_means` and `library_log_vars` are required when "
                "`use_observed_lib_size=False`."
            )
        n_cats_per_cov = [int(n) for n in (n_cats_per_cov or [])]
        other_covariates = n_continuous_cov > 0 or len(n_cats_per_cov) > 0
        n_batch = max(n_batch, 1)
        super().__init__(
            n_input,
            n_batch=n_batch,
            n_labels=n_labels,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            n_continuous_cov=n_continuous_cov,
            n_cats_per_cov=n_cats_per_cov,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            # the batch always enters the encoders (Clivio et al. 2022); scVI's encoders see
            # it only with the other covariates
            encode_covariates=encode_covariates or not other_covariates,
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
            use_size_factor_key=use_size_factor_key,
            use_observed_lib_size=use_observed_lib_size,
            library_log_means=_as_numpy(library_log_means),
            library_log_vars=_as_numpy(library_log_vars),
        )
        if other_covariates and not encode_covariates:
            # covariates in the decoder only, but the batch in the encoders too: VAE's
            # inference then passes the batch alone to encoders that take it
            for name, n_output, depth in (("z_encoder", n_latent, n_layers), ("l_encoder", 1, 1)):
                encoder = Encoder(
                    n_input,
                    n_output,
                    n_cat_list=[n_batch],
                    n_layers=depth,
                    n_hidden=n_hidden,
                    dropout_rate=dropout_rate,
                    return_dist=True,
                    use_batch_norm=use_batch_norm in ("encoder", "both"),
                    use_layer_norm=use_layer_norm in ("encoder", "both"),
                )
                setattr(self, name, encoder)
        self.n_continuous_cov = int(n_continuous_cov)
        self.n_cats_per_cov = n_cats_per_cov
        self.mixing_penalty = mixing_penalty
        self.use_labels = use_labels
        self.component_balance = float(component_balance)
        self.semi_supervised = semi_supervised
        self.classification_ratio = classification_ratio
        self.register_load_state_dict_pre_hook(_reshape_old_gene_dispersion)

        # LayerNorm rather than BatchNorm: a frozen classifier (stage 2) then has no running
        # statistics that would drift, and predictions do not depend on the minibatch.
        self.classifier = Classifier(
            n_input,
            n_hidden=classifier_n_hidden,
            n_labels=n_labels,
            n_layers=classifier_n_layers,
            dropout_rate=classifier_dropout_rate,
            logits=True,
            use_batch_norm=False,
            use_layer_norm=True,
        )

        # Prior: centroids mu_c, mixing weights phi, scales sigma (Clivio et al. 2022, §2)
        self.prior = GaussianMixturePrior(
            n_labels, n_latent, prior_scale, learn_prior_scale, prior_init_scale
        )
        self.register_load_state_dict_pre_hook(rename_old_prior_keys)

        cw = torch.ones(n_labels) if class_weights is None else torch.as_tensor(class_weights)
        if cw.shape != (n_labels,):
            raise ValueError(
                f"`class_weights` must have shape ({n_labels},), got {tuple(cw.shape)}."
            )
        self.register_buffer("class_weights", cw.float())
        # temperature of q(c|x) fitted after training (Guo et al. 2017); only the model's
        # outputs use it, never the training loss
        self.register_buffer("classifier_temperature", torch.ones(()))
        # empirical class means and shared precision of E_q[z] over the annotated training
        # cells, fitted after training: the reference of the "latent" novelty score
        self.register_buffer("latent_class_means", torch.zeros(n_labels, n_latent))
        self.register_buffer("latent_precision", torch.eye(n_latent))
        # median and spread of the "latent" and "reconstruction" novelty scores over the
        # training cells, fitted after training: they put both on one scale for "ensemble"
        self.register_buffer("novelty_location", torch.zeros(2))
        self.register_buffer("novelty_scale", torch.ones(2))
        self.register_load_state_dict_pre_hook(_add_novelty_scales)
        # the training plan turns q(c|x) off during a GMVAE's warm-up
        self.classifier_in_use = True

    def prior_parameters(self):
        """Trainable parameters of the mixture prior (centroids, mixing weights, scales)."""
        return list(self.prior.parameters())

    @auto_move_data
    def inference(self, x, batch_index, cont_covs=None, cat_covs=None, n_samples: int = 1):
        """:meth:`scvi.module.VAE.inference` (q(z|x,s), q(l|x,s)), and the logits of q(c|x)."""
        outputs = super().inference(
            x, batch_index, cont_covs=cont_covs, cat_covs=cat_covs, n_samples=n_samples
        )
        # a GMVAE's warm-up has no use for q(c|x) (every component is the same)
        outputs["class_logits"] = self.classify(x) if self.classifier_in_use else None
        return outputs

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """Negative ELBO (labelled / unlabelled bounds, :cite:t:`Clivio22`, §3) plus the mixing
        penalty.

        The penalty is computed on the minibatch and divided by its number of cells so that it
        is on the same per-cell scale as the averaged negative ELBO.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        qz = inference_outputs["qz"]
        logits = inference_outputs["class_logits"]
        n_cells = x.shape[0]
        if logits is None:  # q(c|x) = phi: with identical components the bound is the same
            logits = self.prior.logits.detach().expand(n_cells, -1)

        rec = -generative_outputs["px"].log_prob(x).sum(-1)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(rec)
        else:
            kl_l = kl(inference_outputs["ql"], generative_outputs["pl"]).sum(-1)

        kl_z_all = self.prior.kl(qz.loc, qz.scale.pow(2))
        log_phi = self.prior.log_weights()
        log_q = F.log_softmax(logits, -1)
        q = log_q.exp()
        # Unlabelled bound U(x) = sum_c q(c|x) L(x, c) + H(q): expected KL_z and KL(q(c|x) || phi)
        kl_z = (q * kl_z_all).sum(-1)
        kl_c = (q * (log_q - log_phi)).sum(-1)
        q_bar = q
        labelled = self.labels_mask(labels)
        if self.semi_supervised:
            # Labelled bound L(x, c) for annotated cells: KL to the annotated mode, -log phi_c
            safe = torch.where(labelled, labels, torch.zeros_like(labels))
            kl_z = torch.where(labelled, kl_z_all.gather(1, safe[:, None]).squeeze(1), kl_z)
            kl_c = torch.where(labelled, -log_phi[safe], kl_c)
            q_bar = torch.where(labelled[:, None], F.one_hot(safe, self.n_labels).to(q), q)

        if self.mixing_penalty > 0:
            penalty = (
                batch_mixing_penalty(
                    qz.loc, q_bar, batch_index, self.prior.means, self.n_batch, self.mixing_penalty
                )
                / n_cells
            )
        else:
            penalty = torch.zeros((), device=x.device)

        loss = torch.mean(rec + kl_weight * (kl_z + kl_c + kl_l)) + penalty
        if self.component_balance > 0:
            # KL(mean_n q(c|x_n) || uniform) = log C - H(q̄): keeps every component in use
            q_mean = q.mean(0)
            balance = math.log(self.n_labels) + (q_mean * torch.log(q_mean + 1e-8)).sum()
            loss = loss + self.component_balance * balance
        extra = {"mixing_penalty": penalty.detach()}
        if self.use_labels:  # over the annotated cells, without a host sync
            terms = masked_classification_terms(logits, labels, labelled, self.class_weights)
            if self.semi_supervised and self.classification_ratio > 0:
                # without it, the unlabelled bound alone moves q(c|x) toward whichever mode is
                # nearest and the annotations stop anchoring the classifier in stage 3
                loss = loss + self.classification_ratio * terms["loss"]
            extra["classification_loss"] = terms["cross_entropy"].detach()
            extra["accuracy"] = terms["accuracy"].detach()
        return LossOutput(
            loss=loss,
            reconstruction_loss=rec,
            kl_local={
                "kl_divergence_z": kl_z,
                "kl_divergence_c": kl_c,
                "kl_divergence_l": kl_l,
            },
            extra_metrics=extra,
        )

    @torch.inference_mode()
    def log_importance_weights(self, tensors, n_samples: int) -> torch.Tensor:
        """``log p(x, z, l) - log q(z, l | x)`` for ``n_samples`` posterior draws per cell.

        ``c`` is summed out exactly in ``log p(z)`` (a C-component mixture), so the estimate
        targets the marginal ``log p(x)``. All draws are decoded in one flattened pass.
        """
        inputs = self._get_inference_input(tensors)
        inputs = {k: None if v is None else v.to(self.device) for k, v in inputs.items()}
        x = inputs["x"]
        inf = self.inference(**inputs, n_samples=1)
        qz, ql = inf["qz"], inf["ql"]
        z = qz.sample((n_samples,))  # (K, n, D)
        k, n = z.shape[:2]
        if ql is not None:
            library = ql.sample((n_samples,))
        else:
            library = inf["library"].expand(n_samples, n, 1)
        # all K draws decoded in one pass: repeat each cell's covariates K times
        covariates = {
            key: None if value is None else value.to(self.device).repeat(k, 1)
            for key, value in self._get_generative_input(tensors, inf).items()
            if key not in ("z", "library")
        }
        gen = self.generative(z.reshape(k * n, -1), library.reshape(k * n, 1), **covariates)
        log_px = gen["px"].log_prob(x.repeat(k, 1)).sum(-1).view(k, n)
        log_w = log_px + self.prior.log_prob(z) - qz.log_prob(z).sum(-1)
        if ql is not None:
            log_pl = gen["pl"].log_prob(library.reshape(k * n, 1)).view(k, n)
            log_w = log_w + log_pl - ql.log_prob(library).sum(-1)
        return log_w


def _as_numpy(values) -> np.ndarray | None:
    """Library prior parameters as the float32 array :class:`scvi.module.VAE` takes."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def _reshape_old_gene_dispersion(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: CapVI stored a gene-wise dispersion as ``(genes, 1)``
    before it was built on :class:`scvi.module.VAE` (``(genes,)``)."""
    key = prefix + "px_r"
    if module.dispersion == "gene" and key in state_dict and state_dict[key].dim() == 2:
        state_dict[key] = state_dict[key].squeeze(-1)


def _add_novelty_scales(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: models saved before the ``"ensemble"`` novelty score have
    no ``novelty_location`` / ``novelty_scale``; they load with the neutral 0 and 1."""
    for name, value in (("novelty_location", 0.0), ("novelty_scale", 1.0)):
        if prefix + name not in state_dict:
            state_dict[prefix + name] = torch.full((2,), value)

"""CapVI: a VAE whose prior has one Gaussian mode per cell type (:cite:t:`Clivio22`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module import Classifier
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl

from ._priors import GaussianMixturePrior, rename_old_prior_keys
from ._utils import ChunkedMarginalLLMixin, normalize_log1p

if TYPE_CHECKING:
    from collections.abc import Iterable

_NORM_PLACES = ("encoder", "decoder", "none", "both")


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


class CapVIModule(ChunkedMarginalLLMixin, BaseModuleClass):
    """CapVI generative model and inference networks (:cite:t:`Clivio22`, §2–3).

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
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"`n_labels` must be >= 1, got {n_labels}.")
        if prior_scale <= 0:
            raise ValueError(f"`prior_scale` must be > 0, got {prior_scale}.")
        if mixing_penalty < 0:
            raise ValueError(f"`mixing_penalty` must be >= 0, got {mixing_penalty}.")
        if gene_likelihood not in ("zinb", "nb"):
            raise ValueError(f"`gene_likelihood` must be 'zinb' or 'nb', got {gene_likelihood!r}.")
        if dispersion not in ("gene-batch", "gene"):
            raise ValueError(f"`dispersion` must be 'gene-batch' or 'gene', got {dispersion!r}.")
        for name, value in (
            ("use_batch_norm", use_batch_norm),
            ("use_layer_norm", use_layer_norm),
        ):
            if value not in _NORM_PLACES:
                raise ValueError(f"`{name}` must be one of {_NORM_PLACES}, got {value!r}.")
        self.n_input = n_input
        self.n_labels = n_labels
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.mixing_penalty = mixing_penalty
        self.gene_likelihood = gene_likelihood
        self.dispersion = dispersion
        # as scvi.module.VAE: size factors replace the library, which is then observed
        self.use_size_factor_key = use_size_factor_key
        self.use_observed_lib_size = use_size_factor_key or use_observed_lib_size
        self.encode_covariates = encode_covariates
        self.n_continuous_cov = int(n_continuous_cov)
        self.n_cats_per_cov = [int(n) for n in (n_cats_per_cov or [])]
        self.use_labels = use_labels
        if component_balance < 0:
            raise ValueError(f"`component_balance` must be >= 0, got {component_balance}.")
        self.component_balance = float(component_balance)
        self.semi_supervised = semi_supervised
        if classification_ratio < 0:
            raise ValueError(f"`classification_ratio` must be >= 0, got {classification_ratio}.")
        self.classification_ratio = classification_ratio

        if not self.use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError(
                    "`library_log_means` and `library_log_vars` are required when "
                    "`use_observed_lib_size=False`."
                )
            self.register_buffer("library_log_means", torch.as_tensor(library_log_means).float())
            self.register_buffer("library_log_vars", torch.as_tensor(library_log_vars).float())

        n_disp = max(n_batch, 1) if dispersion == "gene-batch" else 1
        self.px_r = nn.Parameter(torch.randn(n_input, n_disp))

        # the batch enters encoders and decoder (Clivio et al. 2022); other covariates as in scVI
        cat_list = [n_batch, *self.n_cats_per_cov]
        encoder_cat_list = cat_list if encode_covariates else [n_batch]
        n_input_encoder = n_input + self.n_continuous_cov * encode_covariates
        norms = {
            "use_batch_norm": use_batch_norm in ("encoder", "both"),
            "use_layer_norm": use_layer_norm in ("encoder", "both"),
        }
        self.z_encoder = Encoder(
            n_input_encoder,
            n_latent,
            n_cat_list=encoder_cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            return_dist=True,
            **norms,
        )
        self.l_encoder = Encoder(
            n_input_encoder,
            1,
            n_layers=1,
            n_cat_list=encoder_cat_list,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            return_dist=True,
            **norms,
        )
        self.decoder = DecoderSCVI(
            n_latent + self.n_continuous_cov,
            n_input,
            n_cat_list=cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            use_batch_norm=use_batch_norm in ("decoder", "both"),
            use_layer_norm=use_layer_norm in ("decoder", "both"),
            scale_activation="softplus" if use_size_factor_key else "softmax",
        )
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
        # the training plan turns q(c|x) off during a GMVAE's warm-up
        self.classifier_in_use = True

    # ------------------------------------------------------------------ helpers
    def classifier_parameters(self):
        """Parameters of q(c|x) (stage 1 trains only these; stage 2 freezes them)."""
        return self.classifier.parameters()

    def prior_parameters(self):
        """Trainable parameters of the mixture prior (centroids, mixing weights, scales)."""
        return list(self.prior.parameters())

    @auto_move_data
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(c|x) from raw counts (log1p of counts scaled to 10,000 per cell)."""
        return self.classifier(normalize_log1p(x))

    def _labels_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean ``(n_cells,)``: the cell carries an annotation among the C known types."""
        labels = labels.view(-1)
        if not self.use_labels:
            return torch.zeros_like(labels, dtype=torch.bool)
        return labels < self.n_labels

    def _local_library_params(self, batch_index: torch.Tensor):
        onehot = _one_hot(batch_index, self.n_batch)
        means = F.linear(onehot, self.library_log_means)
        variances = F.linear(onehot, self.library_log_vars)
        return means, variances

    # ------------------------------------------------------------------ module API
    def _get_inference_input(self, tensors, **kwargs):
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        size_factor = tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY)
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "size_factor": None if size_factor is None else torch.log(size_factor),
        }

    @auto_move_data
    def inference(self, x, batch_index, cont_covs=None, cat_covs=None, n_samples: int = 1):
        """q(z|x,s), q(l|x,s) and q(c|x) (covariates as :class:`scvi.module.VAE`)."""
        x_log = torch.log1p(x)
        categorical = ()
        if self.encode_covariates:
            if cont_covs is not None:
                x_log = torch.cat((x_log, cont_covs), dim=-1)
            if cat_covs is not None:
                categorical = torch.split(cat_covs, 1, dim=1)
        qz, z = self.z_encoder(x_log, batch_index, *categorical)
        if self.use_observed_lib_size:
            ql = None
            library = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
        else:
            ql, library = self.l_encoder(x_log, batch_index, *categorical)
        if n_samples > 1:
            z = qz.rsample((n_samples,))
            library = (
                ql.rsample((n_samples,))
                if ql is not None
                else library.expand(n_samples, *library.shape)
            )
        return {
            "qz": qz,
            "z": z,
            "ql": ql,
            "library": library,
            # a GMVAE's warm-up has no use for q(c|x) (every component is the same)
            "class_logits": self.classify(x) if self.classifier_in_use else None,
        }

    @auto_move_data
    def generative(
        self,
        z,
        library,
        batch_index,
        cont_covs=None,
        cat_covs=None,
        size_factor=None,
        transform_batch=None,
    ):
        """p(x | z, l, s): ZINB (or NB) with gene or gene-batch dispersion."""
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        decoder_input = z
        if cont_covs is not None:
            if z.dim() != cont_covs.dim():  # several posterior samples per cell
                cont_covs = cont_covs.unsqueeze(0).expand(z.size(0), -1, -1)
            decoder_input = torch.cat([z, cont_covs], dim=-1)
        categorical = () if cat_covs is None else torch.split(cat_covs, 1, dim=1)
        if not self.use_size_factor_key or size_factor is None:
            size_factor = library
        px_scale, _, px_rate, px_dropout = self.decoder(
            "gene", decoder_input, size_factor, batch_index, *categorical
        )
        if self.dispersion == "gene-batch":
            px_r = F.linear(_one_hot(batch_index, self.n_batch), self.px_r)
        else:
            px_r = self.px_r.squeeze(-1)
        theta = torch.exp(px_r)
        if self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=theta, zi_logits=px_dropout, scale=px_scale
            )
        else:
            px = NegativeBinomial(mu=px_rate, theta=theta, scale=px_scale)
        return {"px": px}

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
            means, variances = self._local_library_params(batch_index)
            kl_l = kl(inference_outputs["ql"], Normal(means, variances.sqrt())).sum(-1)

        kl_z_all = self.prior.kl(qz.loc, qz.scale.pow(2))
        log_phi = self.prior.log_weights()
        log_q = F.log_softmax(logits, -1)
        q = log_q.exp()
        # Unlabelled bound U(x) = sum_c q(c|x) L(x, c) + H(q): expected KL_z and KL(q(c|x) || phi)
        kl_z = (q * kl_z_all).sum(-1)
        kl_c = (q * (log_q - log_phi)).sum(-1)
        q_bar = q
        labelled = self._labels_mask(labels)
        if self.semi_supervised and labelled.any():
            # Labelled bound L(x, c): KL to the annotated mode, and -log phi_c
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
        if self.semi_supervised and labelled.any() and self.classification_ratio > 0:
            # without it, the unlabelled bound alone moves q(c|x) toward whichever mode is
            # nearest and the annotations stop anchoring the classifier in stage 3
            ce = F.cross_entropy(logits[labelled], labels[labelled], weight=self.class_weights)
            loss = loss + self.classification_ratio * ce
        extra = {"mixing_penalty": penalty.detach()}
        if labelled.any():
            extra["classification_loss"] = F.cross_entropy(logits[labelled], labels[labelled])
            extra["accuracy"] = (logits[labelled].argmax(-1) == labels[labelled]).float().mean()
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

    def classification_loss(self, tensors) -> dict[str, torch.Tensor]:
        """Stage-1 objective: class-weighted cross-entropy of q(c|x) on annotated cells (for a
        GMVAE without labels: cross-entropy to the components' posterior, see
        :meth:`~scvi_capvi.module.GaussianMixturePrior.component_logits`).

        Returns the weighted loss to optimise, and the standard cross-entropy, accuracy and
        number of annotated cells for logging and early stopping.
        """
        if not self.use_labels:
            return self._component_distillation_loss(tensors)
        x = tensors[REGISTRY_KEYS.X_KEY]
        labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
        mask = self._labels_mask(labels)
        n = mask.sum()
        if n == 0:
            zero = torch.zeros((), device=x.device, requires_grad=True)
            return {
                "loss": zero,
                "cross_entropy": zero.detach(),
                "accuracy": zero.detach(),
                "n": n,
            }
        logits = self.classify(x[mask])
        y = labels[mask]
        return {
            "loss": F.cross_entropy(logits, y, weight=self.class_weights),
            "cross_entropy": F.cross_entropy(logits, y).detach(),
            "accuracy": (logits.argmax(-1) == y).float().mean().detach(),
            "n": n,
        }

    def _component_distillation_loss(self, tensors) -> dict[str, torch.Tensor]:
        """GMVAE stage 1: cross-entropy of q(c|x) to the components' posterior
        :meth:`~scvi_capvi.module.GaussianMixturePrior.component_logits` under the current
        encoder and prior (held fixed)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        # one pass gives q(c|x) and the encoder's q(z|x); only q(c|x) gets a gradient
        out = self.inference(**self._get_inference_input(tensors))
        logits, qz = out["class_logits"], out["qz"]
        with torch.no_grad():
            target = F.softmax(self.prior.component_logits(qz.loc, qz.scale.pow(2)), -1)
        loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()
        return {
            "loss": loss,
            "cross_entropy": loss.detach(),
            "accuracy": (logits.argmax(-1) == target.argmax(-1)).float().mean().detach(),
            "n": torch.tensor(x.shape[0], device=x.device),
        }

    @torch.inference_mode()
    def log_importance_weights(self, tensors, n_samples: int) -> torch.Tensor:
        """``log p(x, z, l) - log q(z, l | x)`` for ``n_samples`` posterior draws per cell.

        ``c`` is summed out exactly in ``log p(z)`` (a C-component mixture), so the estimate
        targets the marginal ``log p(x)``. All draws are decoded in one flattened pass.
        """
        inputs = self._get_inference_input(tensors)
        inputs = {k: None if v is None else v.to(self.device) for k, v in inputs.items()}
        x, batch_index = inputs["x"], inputs["batch_index"]
        inf = self.inference(**inputs, n_samples=1)
        qz, ql = inf["qz"], inf["ql"]
        z = qz.sample((n_samples,))  # (K, n, D)
        k, n = z.shape[:2]
        if ql is not None:
            library = ql.sample((n_samples,))
        else:
            library = inf["library"].expand(n_samples, n, 1)
        # all K draws decoded in one pass: repeat each cell's covariates K times
        gen = self._get_generative_input(tensors, inf)
        gen = {
            key: None if gen[key] is None else gen[key].to(self.device).repeat(k, 1)
            for key in ("batch_index", "cont_covs", "cat_covs", "size_factor")
        }
        px = self.generative(z.reshape(k * n, -1), library.reshape(k * n, 1), **gen)["px"]
        log_px = px.log_prob(x.repeat(k, 1)).sum(-1).view(k, n)
        log_w = log_px + self.prior.log_prob(z) - qz.log_prob(z).sum(-1)
        if ql is not None:
            means, variances = self._local_library_params(batch_index)
            prior_l = Normal(means, variances.sqrt())
            log_w = log_w + (prior_l.log_prob(library) - ql.log_prob(library)).sum(-1)
        return log_w

"""CapVI: cell-type annotation priors for scRNA-seq (:cite:t:`Clivio22`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)
from scvi.utils import setup_anndata_dsp

from scvi_capvi.module import CapVIModule
from scvi_capvi.train import CapVITrainingPlan

from ._anndata_checks import AnnDataChecksMixin, check_setup_anndata
from ._calibration import CalibrationMixin
from ._capvi_predict import PredictionMixin
from ._capvi_training import StagedTrainingMixin
from ._fields import (
    UnseenAsUnlabeledField,
    covariate_fields,
    covariate_module_kwargs,
    library_size_prior,
)
from ._from_scvi import capvi_arguments_from_scvi, init_from_scvi
from ._io import CheckedQueryMixin, SafeSaveLoadMixin
from ._marginal_ll import ImportanceSampledLLMixin
from ._novelty import NoveltyMixin
from ._recipes import RECIPES
from ._validation import (
    check_cell_types,
    check_covariates,
    check_float,
    check_int,
    check_no_missing,
    check_unlabeled_category,
    label_counts,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI


class CapVI(
    PredictionMixin,
    NoveltyMixin,
    CalibrationMixin,
    CheckedQueryMixin,
    SafeSaveLoadMixin,
    AnnDataChecksMixin,
    ImportanceSampledLLMixin,
    VAEMixin,
    RNASeqMixin,
    ArchesMixin,
    StagedTrainingMixin,
    BaseModelClass,
):
    """Cell-type annotation prior VI (capVI) :cite:t:`Clivio22`.

    A scVI-style VAE whose prior has one Gaussian mode ``N(mu_c, sigma^2 I)`` per cell type,
    with a cell-type classifier ``q(c|x)`` pre-trained on the annotated cells and then trained
    end to end (three stages, see :meth:`train`).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Latent dimension D (paper: 20).
    prior_scale
        sigma, the standard deviation of each prior mode (paper grid 1, 1/8, 1/32). The
        centroids start from N(0, I), so a small sigma starts with far-apart modes; on the PBMC
        sets here sigma = 1 gave the best held-out likelihood (see the benchmark notes).
    mixing_penalty
        λ, the weight of the batch-mixing penalty (paper grid 0, 0.01, 0.1).
    n_hidden, n_layers, dropout_rate
        Encoder / decoder architecture (paper: 256, 3, 0.25).
    learn_prior_scale
        Learn one sigma per cell type instead of a shared fixed one (beyond the paper).
    n_components
        Number of mixture components when ``setup_anndata`` had no ``labels_key``: CapVI is
        then the unsupervised Gaussian-mixture VAE (GMVAE, :cite:t:`Bolos20`).
    gene_likelihood
        ``"zinb"`` (paper) or ``"nb"``.
    semi_supervised
        Use the annotations in the ELBO and the penalty during stages 2–3 (paper: not used).
    classifier_n_hidden, classifier_n_layers, classifier_dropout_rate
        Architecture of ``q(c|x)``.
    **module_kwargs
        Passed to :class:`~scvi_capvi.module.CapVIModule`, e.g. ``use_observed_lib_size=True``
        (observed library size instead of the latent one: use it when training stops on a
        non-finite validation loss, as on very large libraries over many genes).

    Examples
    --------
    >>> CapVI.setup_anndata(adata, labels_key="cell_type", batch_key="batch", layer="counts")
    >>> model = CapVI(adata, n_latent=20, prior_scale=1 / 8, mixing_penalty=0.01)
    >>> model.train()
    >>> adata.obsm["X_capvi"] = model.get_latent_representation()
    >>> adata.obs["capvi_pred"] = model.predict()
    """

    _module_cls = CapVIModule
    _training_plan_cls = CapVITrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_latent: int = 20,
        prior_scale: float = 1.0,
        mixing_penalty: float = 0.01,
        n_hidden: int = 256,
        n_layers: int = 3,
        dropout_rate: float = 0.25,
        learn_prior_scale: bool = False,
        n_components: int | None = None,
        gene_likelihood: Literal["zinb", "nb"] = "zinb",
        recipe: Literal["scvi-tools", "paper"] = "scvi-tools",
        use_observed_lib_size: bool | None = None,
        dispersion: Literal["gene", "gene-batch"] | None = None,
        semi_supervised: bool | None = None,
        classifier_n_hidden: int = 256,
        classifier_n_layers: int = 1,
        classifier_dropout_rate: float = 0.25,
        **module_kwargs,
    ):
        check_int("n_latent", n_latent)
        check_int("n_hidden", n_hidden)
        check_int("n_layers", n_layers)
        check_int("classifier_n_hidden", classifier_n_hidden)
        check_int("classifier_n_layers", classifier_n_layers, 0)
        check_float("dropout_rate", dropout_rate, 0.0, 1.0, high_open=True)
        check_float("classifier_dropout_rate", classifier_dropout_rate, 0.0, 1.0, high_open=True)
        check_float("prior_scale", prior_scale, 0.0, low_open=True)
        check_float("mixing_penalty", mixing_penalty, 0.0)
        super().__init__(adata)
        self.was_pretrained = False  # from_scvi_model sets it: shorter default training
        self.is_query_ = False  # load_query_data sets it: a GMVAE keeps the reference's prior
        self.classifier_frozen_ = False  # load_query_data sets it (scArches' frozen q(c|x))
        # E_q[z] of reference and calibration cells for the "neighbors" novelty score
        self.novelty_reference_ = None
        self.use_labels = self.registry_["setup_args"]["labels_key"] is not None
        if self.use_labels and adata is not None and self.adata_manager._source_registry is None:
            # set up for training (not a loaded model or a query): the annotations must make
            # at least two prior modes, none of them empty
            n_types = len(self.cell_types)
            codes = self._label_codes()
            check_cell_types(
                self.cell_types,
                np.bincount(codes[codes < n_types], minlength=n_types),
                self.registry_["setup_args"]["labels_key"],
                self.registry_["setup_args"]["unlabeled_category"],
            )
        if self.use_labels:
            if n_components is not None:
                raise ValueError(
                    "`n_components` is only for CapVI without labels (setup_anndata with "
                    "labels_key=None); with labels there is one prior mode per cell type."
                )
            n_labels = len(self.cell_types)
        else:
            if n_components is None:
                raise ValueError(
                    "Without `labels_key`, CapVI is a Gaussian-mixture VAE: pass "
                    "`n_components` >= 2 (got None)."
                )
            check_int("n_components", n_components, 2)
            n_labels = int(n_components)

        if recipe not in RECIPES:
            raise ValueError(f"`recipe` must be one of {sorted(RECIPES)}, got {recipe!r}.")
        self.recipe = recipe
        given = {
            "use_observed_lib_size": use_observed_lib_size,
            "dispersion": dispersion,
            "semi_supervised": semi_supervised,
        }
        settings_ = {k: RECIPES[recipe][k] if v is None else v for k, v in given.items()}
        use_observed = bool(settings_["use_observed_lib_size"])
        semi_supervised = bool(settings_["semi_supervised"])
        n_batch = self.summary_stats.n_batch
        lib_means, lib_vars = (None, None)
        if not use_observed:
            lib_means, lib_vars = library_size_prior(self.adata_manager, n_batch)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_labels=n_labels,
            n_batch=n_batch,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            prior_scale=prior_scale,
            learn_prior_scale=learn_prior_scale,
            mixing_penalty=mixing_penalty,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed,
            dispersion=settings_["dispersion"],
            library_log_means=lib_means,
            library_log_vars=lib_vars,
            classifier_n_hidden=classifier_n_hidden,
            classifier_n_layers=classifier_n_layers,
            classifier_dropout_rate=classifier_dropout_rate,
            use_labels=self.use_labels,
            semi_supervised=semi_supervised,
            **covariate_module_kwargs(self.adata_manager),
            **module_kwargs,
        )
        self._model_summary_string = (
            f"CapVI model: {n_labels} prior modes ({'cell types' if self.use_labels else 'GMVAE'}"
            f"), n_latent: {n_latent}, prior_scale: {prior_scale:g}, mixing_penalty: "
            f"{mixing_penalty:g}, n_hidden: {n_hidden}, n_layers: {n_layers}, gene_likelihood: "
            f"{gene_likelihood}, recipe: {recipe}."
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ registration
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str | None = None,
        unlabeled_category: str = "Unknown",
        layer: str | None = None,
        batch_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        allow_non_integer_counts: bool = False,
        **kwargs,
    ):
        """%(summary)s.

        The arguments are those of :meth:`scvi.model.SCANVI.setup_anndata`, in its order.

        Parameters
        ----------
        %(param_adata)s
        labels_key
            Key in ``adata.obs`` with cell-type annotations; cells labelled
            ``unlabeled_category`` are unannotated. ``None``: no annotations (GMVAE mode).
        %(param_unlabeled_category)s
        %(param_layer)s
        %(param_batch_key)s
        %(param_size_factor_key)s
        %(param_cat_cov_keys)s
        %(param_cont_cov_keys)s
        allow_non_integer_counts
            Accept non-integer values (ambient-corrected counts, e.g. from SoupX or CellBender)
            with a warning instead of an error.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_setup_anndata(
            cls.__name__, adata, layer, batch_key, labels_key, kwargs, allow_non_integer_counts
        )
        check_covariates(
            adata, size_factor_key, categorical_covariate_keys, continuous_covariate_keys
        )
        if labels_key is not None and kwargs.get("source_registry") is None:
            # annotations for training (a loaded model or a query was checked when trained)
            check_no_missing(
                adata,
                labels_key,
                "label",
                f"Mark unannotated cells with unlabeled_category={unlabeled_category!r}.",
            )
            labels = adata.obs[labels_key]
            check_unlabeled_category(labels, labels_key, unlabeled_category)
            check_cell_types(
                *label_counts(labels, unlabeled_category), labels_key, unlabeled_category
            )
        if labels_key is not None:
            labels_field = UnseenAsUnlabeledField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category
            )
        else:
            labels_field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            labels_field,
            *covariate_fields(
                size_factor_key, categorical_covariate_keys, continuous_covariate_keys
            ),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def from_scvi_model(
        cls,
        scvi_model: SCVI,
        labels_key: str | None = None,
        unlabeled_category: str = "Unknown",
        adata: AnnData | None = None,
        **capvi_kwargs,
    ) -> CapVI:
        """A CapVI that starts from a trained :class:`scvi.model.SCVI`.

        As :meth:`scvi.model.SCANVI.from_scvi_model`: ``adata`` (default: the SCVI model's) is
        registered with the SCVI model's layer, batch, covariates and size factors plus
        ``labels_key``; CapVI takes the SCVI architecture and weights (its encoders, which also
        see the batch, start with zero weights on it, so they compute what SCVI's did), and
        each prior mode starts at the mean SCVI latent position of its annotated cells. Then
        :meth:`train` runs the three stages with a fine-tuning budget.

        Parameters
        ----------
        scvi_model
            A trained SCVI (normal latent, ZINB or NB likelihood, gene or gene-batch
            dispersion).
        labels_key
            Column of ``adata.obs`` with the cell types (default: the one the SCVI model was
            set up with; one of the two is needed).
        unlabeled_category
            Value of ``labels_key`` for unannotated cells.
        adata
            AnnData with the SCVI model's genes; default: the one it was trained on.
        **capvi_kwargs
            Other :class:`CapVI` arguments (e.g. ``prior_scale``, ``mixing_penalty``);
            architecture arguments are fixed by the SCVI model (a different value is ignored
            with a warning).

        Examples
        --------
        >>> scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
        >>> vae = scvi.model.SCVI(adata)
        >>> vae.train()
        >>> model = CapVI.from_scvi_model(vae, labels_key="cell_type")
        >>> model.train()
        >>> adata.obs["capvi_pred"] = model.predict()
        """
        setup_args, kwargs = capvi_arguments_from_scvi(scvi_model, capvi_kwargs)
        labels_key = labels_key or scvi_model.registry["setup_args"].get("labels_key")
        if labels_key is None:
            raise ValueError("`labels_key` is needed: the SCVI model was set up without one.")
        adata = scvi_model.adata if adata is None else adata
        # before CapVI registers `adata`: SCVI would overwrite CapVI's label codes
        latent = scvi_model.get_latent_representation(adata)
        cls.setup_anndata(
            adata, labels_key=labels_key, unlabeled_category=unlabeled_category, **setup_args
        )
        model = cls(adata, **kwargs)
        init_from_scvi(model, scvi_model, latent)
        return model

    @property
    def cell_types(self) -> np.ndarray:
        """The C annotated cell types, in the order of the prior modes (empty for a GMVAE)."""
        if not self.registry_["setup_args"]["labels_key"]:
            return np.array([], dtype=object)
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)[
            "categorical_mapping"
        ]
        # scvi-tools moves the unlabelled category to the last position of the mapping.
        return np.asarray(mapping[:-1])

    def _label_codes(self, indices: np.ndarray | None = None) -> np.ndarray:
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        return codes if indices is None else codes[indices]

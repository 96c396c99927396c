"""CapVI: cell-type annotation priors for scRNA-seq (paper 000, Clivio et al.)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data._utils import _assign_adata_uuid
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.dataloaders import DataSplitter
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)
from scvi.utils import setup_anndata_dsp

from scvi_capvi.module import CapVIModule
from scvi_capvi.train import CapVITrainingPlan
from scvi_capvi.train._progress import StageProgressBar
from scvi_capvi.train._trainingplans import STAGE_MONITORS, STAGE_NUMBERS, STAGE_TITLES

from ._from_scvi import capvi_arguments_from_scvi, init_from_scvi
from ._io import CheckedQueryMixin, SafeSaveLoadMixin
from ._mixins import (
    HardenedModelMixin,
    ImportanceSampledLLMixin,
    UnseenAsUnlabeledField,
    check_setup_anndata,
    covariate_fields,
    covariate_module_kwargs,
    default_log_every_n_steps,
    library_size_prior,
)
from ._novelty import NoveltyMethod, NoveltyMixin
from ._training import RobustTrainingMixin
from ._validation import (
    check_cell_types,
    check_covariates,
    check_float,
    check_int,
    check_no_missing,
    check_split,
    check_unlabeled_category,
    label_counts,
)

RECIPES: dict[str, dict] = {
    # scvi-tools' conventions (as SCVI / SCANVI): observed library size, one dispersion per
    # gene, annotations kept in the ELBO of stages 2-3, best epoch by validation ELBO
    "scvi-tools": {
        "use_observed_lib_size": True,
        "dispersion": "gene",
        "semi_supervised": True,
        "monitor": "elbo_validation",
    },
    # paper 000 §4.2: latent library size, gene-batch dispersion, annotations used only by
    # the classifier, early stopping on the validation reconstruction error
    "paper": {
        "use_observed_lib_size": False,
        "dispersion": "gene-batch",
        "semi_supervised": False,
        "monitor": "reconstruction_loss_validation",
    },
}
"""CapVI's two training recipes (``CapVI(adata, recipe=...)``)."""

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from scvi.model import SCVI


class CapVI(
    NoveltyMixin,
    CheckedQueryMixin,
    SafeSaveLoadMixin,
    HardenedModelMixin,
    ImportanceSampledLLMixin,
    VAEMixin,
    RNASeqMixin,
    ArchesMixin,
    RobustTrainingMixin,
    BaseModelClass,
):
    """Cell-type annotation prior VI (capVI) :cite:p:`Clivio22`.

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
        then the unsupervised Gaussian-mixture VAE (GMVAE, paper 002).
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

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        classifier_epochs: int | None = None,
        frozen_epochs: int | None = None,
        pretrain_classifier: bool = True,
        train_size: float = 0.9,
        validation_size: float | None = None,
        batch_size: int = 128,
        early_stopping: bool = True,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train CapVI in three stages (paper 000 §3).

        1. the classifier ``q(c|x)`` on the annotated training cells (class-weighted
           cross-entropy, early stopping on validation cross-entropy);
        2. everything else, with ``q(c|x)`` frozen;
        3. all parameters end to end.

        Without labels (a GMVAE, ``CapVI(adata, n_components=K)``) the stages are: a VAE
        warm-up (``frozen_epochs``; every centroid at 0 and frozen, so the prior is
        ``N(0, sigma^2 I)``, and q(c|x) frozen); then the centroids are put at the k-means
        centres of the training cells' ``E_q[z]`` and the mixing weights at the clusters'
        proportions; stage 1 fits q(c|x) to the components' posterior under the fixed encoder
        (``classifier_epochs``, default a twentieth of scvi-tools' heuristic); stage 3 trains
        end to end (``max_epochs``). Trained end to end from a random start
        (``pretrain_classifier=False``), the mixture puts most cells in a few components.

        The same seeded train / validation split is used by all stages; each stage early-stops
        on its own validation criterion and restores its best epoch. ``model.history`` holds
        every stage's curves, keys prefixed ``stage1_``, ``stage2_``, ``stage3_``; the last
        stage run is also under scvi-tools' usual names (``history["elbo_train"]``, ...).
        Each stage shows its own progress bar (``stage 2/3: frozen classifier, epoch 4/200``).

        Parameters
        ----------
        max_epochs
            Maximum epochs of stage 3 (``0`` skips the stage). Default: with
            ``recipe="scvi-tools"``, stages 2 and 3 split the number of epochs scvi-tools
            gives SCVI on this many cells (:func:`scvi.model._utils.get_max_epochs_heuristic`)
            half and half; with ``recipe="paper"``, each stage gets all of it. A model made
            with :meth:`from_scvi_model` starts from a trained VAE and, like
            :meth:`scvi.model.SCANVI.from_scvi_model`, gets a third of that, 2 to 10 epochs,
            per stage.
        classifier_epochs
            Maximum epochs of stage 1 (default: scvi-tools' heuristic; stage 1 trains only
            the classifier and early-stops on its validation cross-entropy).
        frozen_epochs
            Maximum epochs of stage 2 (``0`` skips the stage; default as ``max_epochs``).
        pretrain_classifier
            ``False`` skips stages 1 and 2 (and a GMVAE's warm-up): the paper's "fully
            end-to-end" ablation.
        train_size, validation_size
            Fractions of cells for training and validation (rest: test).
        batch_size
            Minibatch size.
        early_stopping
            Early-stop each stage on its validation criterion.
        plan_kwargs
            Passed to :class:`~scvi_capvi.train.CapVITrainingPlan` (all stages).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (all stages).
        """
        self._check_training_data()
        check_split(train_size, validation_size, batch_size)
        default_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        defaults = dict.fromkeys(("classifier", "frozen", "joint"), default_epochs)
        if getattr(self, "was_pretrained", False):
            # SCANVI.from_scvi_model's budget for fine-tuning a trained VAE
            short = int(np.clip(round(default_epochs / 3.0), 2, 10))
            defaults["frozen"] = defaults["joint"] = short
        elif self.recipe == "scvi-tools":
            # stages 2 and 3 share the budget scvi-tools gives SCVI (the paper: one each)
            defaults["frozen"] = default_epochs // 2
            defaults["joint"] = default_epochs - default_epochs // 2
        if not self.use_labels:
            # GMVAE stage 1 only fits q(c|x) to the components' posterior (a fixed target)
            defaults["classifier"] = max(1, round(default_epochs / 20))
        epochs = {}
        for stage, name, value, minimum in (
            ("classifier", "classifier_epochs", classifier_epochs, 1),
            ("frozen", "frozen_epochs", frozen_epochs, 0),
            ("joint", "max_epochs", max_epochs, 0),
        ):
            if value is not None and (int(value) != value or value < minimum):
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
            epochs[stage] = defaults[stage] if value is None else int(value)

        splitter = DataSplitter(
            self.adata_manager, train_size=train_size, validation_size=validation_size
        )
        splitter.setup()
        split = [np.asarray(i, dtype=int) for i in (splitter.train_idx, splitter.val_idx)]
        split.append(np.asarray(splitter.test_idx, dtype=int))
        train_idx, val_idx, test_idx = split

        stages = ["joint"]
        labelled_train = self._is_labelled(train_idx)
        if pretrain_classifier and not self.use_labels and not self.is_query_:
            # GMVAE: a VAE warm-up, components from k-means on its latent, q(c|x) fitted to
            # them, then end to end (without it, most components stay empty: issue 16)
            stages = ["warmup", "classifier", "joint"]
            epochs["warmup"] = epochs.pop("frozen")
        elif pretrain_classifier and labelled_train.any():
            self._set_class_weights(train_idx[labelled_train])
            stages = ["classifier", "frozen", "joint"]
        elif pretrain_classifier:
            # a query mapped with `load_query_data` that carries no annotation
            warnings.warn(
                "No annotated cell in the training split: skipping classifier pre-training "
                "and training end to end (stage 3 only).",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )

        # 0 epochs skips a stage (e.g. `max_epochs=0` keeps the pre-trained classifier as is)
        stages = [stage for stage in stages if epochs[stage] > 0]
        if not stages:
            raise ValueError("Every stage has 0 epochs: nothing to train (see `max_epochs`).")
        history: dict[str, pd.DataFrame] = {}
        classifier_before = {
            k: v.detach().clone() for k, v in self.module.classifier.state_dict().items()
        }
        run = {
            "split": split,
            "labelled_train": labelled_train,
            "batch_size": batch_size,
            "early_stopping": early_stopping,
            "plan_kwargs": plan_kwargs or {},
            "trainer_kwargs": trainer_kwargs,
        }
        try:
            self._run_stages(stages, epochs, history, **run)
        finally:
            # also after an interrupt or a failure: keep the finished stages' history and the
            # split; KeepUsableOnFailure has restored usable parameters
            self.history_ = history
            self.train_indices, self.validation_indices, self.test_indices = split
        self.is_trained_ = True
        # refit the classifier's temperature on the annotated validation cells; without any
        # (a query mapped with `load_query_data`) keep it while q(c|x) is unchanged (scArches
        # freezes it; only weight decay moves it, by ~1e-9), reset it otherwise. Then the
        # latent reference of the novelty score.
        state = self.module.classifier.state_dict()
        changed = any(not torch.allclose(v, state[k]) for k, v in classifier_before.items())
        if self.use_labels and self._is_labelled(split[1]).any():
            self.module.classifier_temperature.fill_(1.0)
            self.calibrate()
        elif changed:
            self.module.classifier_temperature.fill_(1.0)
        self._fit_latent_reference()

    def _run_stages(
        self,
        stages,
        epochs,
        history,
        split,
        labelled_train,
        batch_size,
        early_stopping,
        plan_kwargs,
        trainer_kwargs,
    ):
        train_idx, val_idx, test_idx = split
        trained = self.is_trained_
        for position, stage in enumerate(stages, start=1):
            idx = [train_idx, val_idx, test_idx]
            if stage == "classifier" and self.use_labels:
                # stage 1 sees annotated cells only; scvi-tools' splitter wants every cell
                # assigned, so the rest go to the (unused) test part.
                idx[0] = train_idx[labelled_train]
                idx[1] = val_idx[self._is_labelled(val_idx)]
                idx[2] = np.setdiff1d(np.arange(self.adata.n_obs), np.concatenate(idx[:2]))
            label = f"stage {position}/{len(stages)}: {STAGE_TITLES[stage]}"
            if stage == "warmup":
                with torch.no_grad():  # every centroid at 0: the prior is N(0, sigma^2 I)
                    self.module.prior_means.zero_()
            try:
                self._run_stage(
                    stage,
                    epochs[stage],
                    idx,
                    batch_size,
                    early_stopping,
                    plan_kwargs,
                    dict(trainer_kwargs),
                    label,
                )
                if stage == "warmup":
                    self._init_components(train_idx)
            finally:
                last = self.history_ or {}
                for key, frame in last.items():
                    history[f"stage{STAGE_NUMBERS[stage]}_{key}"] = frame
                if last:
                    # the last stage run also under scvi-tools' names (history["elbo_train"])
                    for key in [k for k in history if not k.startswith("stage")]:
                        del history[key]
                    history.update(last)
                # trained if any stage (this or an earlier one, or an earlier train) finished
                # an epoch; `_run_stage` resets the flag and the runner sets it
                trained = trained or self.is_trained_
                self.is_trained_ = trained

    @torch.no_grad()
    def _init_components(self, indices: np.ndarray):
        """GMVAE: centroids at the k-means centres of ``E_q[z]`` of the training cells, mixing
        weights at the clusters' proportions, scales at the clusters' spread (k-means seeded
        with ``scvi.settings.seed``)."""
        from sklearn.cluster import KMeans

        latent, variances = self.get_latent_representation(indices=indices, return_dist=True)
        n_components = self.module.n_labels
        kmeans = KMeans(n_components, n_init=10, random_state=settings.seed).fit(latent)
        counts = np.bincount(kmeans.labels_, minlength=n_components)
        module = self.module
        module.prior_means.copy_(torch.as_tensor(kmeans.cluster_centers_).to(module.prior_means))
        module.prior_logits.copy_(
            torch.as_tensor(np.log(counts / counts.sum())).to(module.prior_logits)
        )
        # each component's scale: the spread of its cells' posteriors around the centre,
        # E[(z - mu_c)^2] under q(z|x) (pooled over components unless each has its own).
        # With the warm-up's N(0, 1) the clusters are narrower than 1, and a unit scale would
        # blur them into one another; the scale of the means alone would be narrower than
        # q(z|x) and the first epochs would tear the latent apart.
        spread = (latent - kmeans.cluster_centers_[kmeans.labels_]) ** 2 + variances
        sq = spread.mean(1)
        if module.prior_log_scale.numel() > 1:
            per = np.bincount(kmeans.labels_, sq, n_components) / np.maximum(counts, 1)
            scale = np.sqrt(np.where(counts > 1, per, sq.mean()))
        else:
            scale = np.sqrt(sq.mean())
        module.prior_log_scale.copy_(
            torch.as_tensor(np.log(np.maximum(scale, 1e-3))).to(module.prior_log_scale)
        )

    def _is_labelled(self, indices: np.ndarray) -> np.ndarray:
        return self._label_codes(indices) < len(self.cell_types)

    def _set_class_weights(self, labelled_idx: np.ndarray):
        """Inverse-frequency weights of the annotated training cells (stage-1 cross-entropy)."""
        n_types = len(self.cell_types)
        counts = np.bincount(self._label_codes(labelled_idx), minlength=n_types).astype(float)
        weights = np.where(counts > 0, counts.sum() / (n_types * np.maximum(counts, 1)), 0.0)
        self.module.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))

    def _run_stage(
        self,
        stage,
        max_epochs,
        indices,
        batch_size,
        early_stopping,
        plan_kwargs,
        trainer_kwargs,
        label,
    ):
        has_val = len(indices[1]) > 0
        if early_stopping and not has_val:
            warnings.warn(
                f"CapVI stage {STAGE_NUMBERS[stage]} ({stage}): no validation cells, so early "
                "stopping is off for this stage.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        # scvi-tools' Trainer appends its own callbacks to the list it is given: copy it so
        # one stage's early stopping does not leak into the next
        trainer_kwargs["callbacks"] = list(trainer_kwargs.get("callbacks") or [])
        if trainer_kwargs.get("enable_progress_bar", True) and trainer_kwargs.get(
            "simple_progress_bar", True
        ):
            # scvi-tools' epoch bar, with the stage in front of the epoch counter
            trainer_kwargs["simple_progress_bar"] = False
            trainer_kwargs["callbacks"].append(StageProgressBar(f"CapVI {label}"))
        if stage == "classifier":
            # stage 1 always stops on the classifier's own validation cross-entropy
            trainer_kwargs.pop("early_stopping_monitor", None)
        default_monitor = (
            STAGE_MONITORS[stage] if stage == "classifier" else RECIPES[self.recipe]["monitor"]
        )
        trainer_kwargs.setdefault("early_stopping_monitor", default_monitor)
        # a last minibatch of 1-2 cells breaks BatchNorm: drop it, as scvi-tools advises
        n_last = len(indices[0]) % batch_size
        trainer_kwargs.setdefault(
            "log_every_n_steps", default_log_every_n_steps(len(indices[0]), batch_size)
        )
        # Lightning keeps the modes it finds; the previous stage ended in eval mode
        self.module.train()
        # each stage gets a fresh history (TrainRunner appends only to keys it already knows)
        self.history_, self.is_trained_ = None, False
        return super().train(
            max_epochs=int(max_epochs),
            batch_size=batch_size,
            early_stopping=early_stopping and has_val,
            datasplitter_kwargs={"external_indexing": list(indices), "drop_last": 0 < n_last < 3},
            plan_kwargs={**plan_kwargs, "stage": stage},
            **trainer_kwargs,
        )

    # ------------------------------------------------------------------ outputs
    def _validate_query_anndata(self, adata: AnnData | None) -> AnnData:
        """Register a query for classification: q(c|x) does not see the batch, so a query may
        bring batches the model never saw, and needs no label column (labels the model does
        not know count as unannotated). Genes and counts are checked as for any new AnnData."""
        if adata is not None and self.adata_manager is not None:
            if not self._is_registered(adata):  # new AnnData, or a copy of one
                self._check_new_anndata(adata, unseen_batches=True)
                _assign_adata_uuid(adata, overwrite=True)
                manager = self.adata_manager.transfer_fields(
                    adata, extend_categories=True, allow_missing_labels=True
                )
                self._register_manager_for_instance(manager)
        # scvi-tools' registration check only: the classifier encodes no batch
        return BaseModelClass._validate_anndata(self, adata)

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        unknown_threshold: float | None = None,
        novelty_method: NoveltyMethod = "prior",
        unknown_label: str = "unknown",
    ) -> np.ndarray | pd.DataFrame:
        """Cell-type predictions of the classifier ``q(c|x)``.

        Works on a query AnnData with batches the model has not seen (the classifier does not
        take the batch as input). Probabilities are temperature-scaled (see :meth:`calibrate`).

        Parameters
        ----------
        adata
            AnnData registered with the model; defaults to the training data.
        indices
            Cells to predict; all if ``None``.
        soft
            Return a cells × types DataFrame of probabilities instead of hard labels.
        batch_size
            Minibatch size.
        unknown_threshold
            Call ``unknown_label`` for every cell whose novelty score
            (:meth:`get_novelty_score` with ``novelty_method``) is above this value. Set it
            from a target false-unknown rate with :meth:`get_novelty_threshold`.
            Hard labels only.
        novelty_method
            The novelty score the threshold applies to.
        unknown_label
            Label of the cells called unknown.

        Returns
        -------
        Hard labels (``numpy`` array of type names) or, with ``soft=True``, probabilities.

        Examples
        --------
        >>> threshold = model.get_novelty_threshold(false_unknown_rate=0.05)
        >>> adata.obs["capvi_pred"] = model.predict(unknown_threshold=threshold)
        """
        if unknown_threshold is not None and soft:
            raise ValueError(
                "`unknown_threshold` applies to hard labels; with `soft=True` use "
                "`get_novelty_score` next to the probabilities."
            )
        if unknown_threshold is not None and not np.isfinite(unknown_threshold):
            raise ValueError(
                f"`unknown_threshold` must be a finite number, got {unknown_threshold!r}."
            )
        adata = self._validate_query_anndata(adata)
        if indices is None:
            indices = np.arange(adata.n_obs)
        logits, _ = self._classifier_pass(adata, indices, batch_size, latent=False)
        probs = self._probabilities(logits)
        names = (
            self.cell_types
            if self.use_labels
            else np.array([f"component_{k}" for k in range(self.module.n_labels)])
        )
        if soft:
            return pd.DataFrame(probs, index=adata.obs_names[indices], columns=names)
        labels = names[probs.argmax(1)]
        if unknown_threshold is None:
            return labels
        if unknown_label in set(names):
            raise ValueError(
                f"`unknown_label` {unknown_label!r} is already a cell type of the model."
            )
        scores = self.get_novelty_score(
            adata, indices, method=novelty_method, batch_size=batch_size
        )
        labels = labels.astype(object)
        labels[scores > unknown_threshold] = unknown_label
        return labels

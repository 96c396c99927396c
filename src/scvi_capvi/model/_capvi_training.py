"""CapVI's staged training: classifier, frozen classifier, end to end (a GMVAE: warm-up,
components from k-means, classifier, end to end), each stage one call of scvi-tools' train."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from scvi import settings
from scvi.dataloaders import DataSplitter
from scvi.model._utils import get_max_epochs_heuristic

from scvi_capvi.train._progress import StageProgressBar
from scvi_capvi.train._trainingplans import STAGE_MONITORS, STAGE_NUMBERS, STAGE_TITLES

from ._recipes import RECIPES
from ._training import RobustTrainingMixin, default_log_every_n_steps, has_tiny_last_batch
from ._validation import check_split


def classifier_trained(before: dict, after: dict, tolerance: float = 1e-3) -> bool:
    """Whether the classifier's weights moved as training moves them.

    A classifier frozen by scArches still drifts under the optimiser's weight decay: its
    gradients are zeroed, so Adam's coupled L2 term shrinks each tensor towards 0, by about
    1e-7 of its size per step at scvi-tools' defaults, which adds up over a long query
    training. That drift is mostly along the tensor itself; training moves weights across it.
    So a tensor counts as trained when its change, less the part along the old tensor, exceeds
    ``tolerance`` of the old tensor's norm (or when a tensor of zeros moves at all). On a toy
    query, 1,000 frozen steps moved the weights 1.0e-4 (1.7e-5 across); one unfrozen step
    7.5e-3 across. A query mapped with a frozen classifier skips this check
    (``classifier_frozen_``), so a very long query training cannot trip it.
    """
    for key, old in before.items():
        # on the CPU: training may have moved the module to a GPU since `before` was taken
        old = old.detach().cpu().double().flatten()
        delta = after[key].detach().cpu().double().flatten() - old
        norm = float(old.norm())
        if norm == 0:
            if float(delta.norm()) > 0:
                return True
            continue
        across = delta - (delta @ old) / norm**2 * old
        if float(across.norm()) > tolerance * norm:
            return True
    return False


class StagedTrainingMixin(RobustTrainingMixin):
    """``train`` of :class:`~scvi_capvi.model.CapVI`: its stages, each through
    :meth:`~scvi_capvi.model._training.RobustTrainingMixin.train` with the stage's plan
    arguments and cells."""

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
        """Train CapVI in three stages (:cite:t:`Clivio22`, §3).

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
            Passed to :class:`scvi.train.Trainer` (all stages), e.g. ``accelerator``
            (``"auto"``: a GPU when there is one, ``"cpu"``), ``devices`` (a number of devices
            or a list of their indices) and ``strategy``. Several devices, or several
            machines: ``devices=N, strategy="ddp_find_unused_parameters_true"`` (Lightning's
            DDP; each process sees its share of the cells, and q(c|x) receives no gradient in
            stage 2, hence the ``find_unused_parameters`` variant). Launch the script with
            ``torchrun`` or under SLURM as the user guide shows.
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
            k: v.detach().cpu().clone() for k, v in self.module.classifier.state_dict().items()
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
        # (a query mapped with `load_query_data`) keep it if q(c|x) was frozen or did not
        # train, reset it otherwise. Then the latent reference of the novelty score.
        if self.use_labels and self._is_labelled(split[1]).any():
            self.module.classifier_temperature.fill_(1.0)
            self.calibrate()
        elif not self.classifier_frozen_ and classifier_trained(
            classifier_before, self.module.classifier.state_dict()
        ):
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
                    self.module.prior.means.zero_()
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
        module.prior.means.copy_(torch.as_tensor(kmeans.cluster_centers_).to(module.prior.means))
        module.prior.logits.copy_(
            torch.as_tensor(np.log(counts / counts.sum())).to(module.prior.logits)
        )
        # each component's scale: the spread of its cells' posteriors around the centre,
        # E[(z - mu_c)^2] under q(z|x) (pooled over components unless each has its own).
        # With the warm-up's N(0, 1) the clusters are narrower than 1, and a unit scale would
        # blur them into one another; the scale of the means alone would be narrower than
        # q(z|x) and the first epochs would tear the latent apart.
        spread = (latent - kmeans.cluster_centers_[kmeans.labels_]) ** 2 + variances
        sq = spread.mean(1)
        if module.prior.log_scale.numel() > 1:
            per = np.bincount(kmeans.labels_, sq, n_components) / np.maximum(counts, 1)
            scale = np.sqrt(np.where(counts > 1, per, sq.mean()))
        else:
            scale = np.sqrt(sq.mean())
        module.prior.log_scale.copy_(
            torch.as_tensor(np.log(np.maximum(scale, 1e-3))).to(module.prior.log_scale)
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
        trainer_kwargs.setdefault(
            "log_every_n_steps", default_log_every_n_steps(len(indices[0]), batch_size)
        )
        # Lightning keeps the modes it finds; the previous stage ended in eval mode
        self.module.train()
        # each stage gets a fresh history (TrainRunner appends only to keys it already knows)
        self.history_, self.is_trained_ = None, False
        # the counts were checked once by `train`, before the first stage
        return self._train_with_callbacks(
            max_epochs=int(max_epochs),
            batch_size=batch_size,
            early_stopping=early_stopping and has_val,
            datasplitter_kwargs={
                "external_indexing": list(indices),
                "drop_last": has_tiny_last_batch(len(indices[0]), batch_size),
            },
            plan_kwargs={**plan_kwargs, "stage": stage},
            **trainer_kwargs,
        )

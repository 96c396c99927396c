"""Atomic, versioned save / load on top of :class:`scvi.model.base.BaseModelClass`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING

import scvi
from scvi import settings
from scvi.model.base._constants import SAVE_KEYS

from ._validation import _preview

if TYPE_CHECKING:
    from anndata import AnnData

SAVE_INFO_FNAME = "scvi_capvi.json"
# scvi-tools only warns when the genes differ, then fails with a shape error or silently
# gives wrong results; our setup_anndata raises a clear error right after instead.
_VAR_NAMES_WARNING = "`var_names` for the loaded `model` does not match"


class ModelExistsError(FileExistsError, ValueError):
    """``save`` would overwrite a model (a ``ValueError`` too, as scvi-tools raises)."""


def _version() -> str:
    from scvi_capvi import __version__

    return __version__


def read_save_info(dir_path, prefix: str | None = None) -> dict | None:
    """The ``scvi_capvi.json`` written by ``save`` (``None`` if there is none)."""
    path = os.path.join(os.fspath(dir_path), f"{prefix or ''}{SAVE_INFO_FNAME}")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_save_info(cls: type, dir_path, prefix: str | None = None) -> dict | None:
    """Check the model class and scvi-capvi version recorded next to a saved model.

    Raises ``ValueError`` for a model of another class; warns when the versions differ or when
    no version was recorded. Returns the recorded information.
    """
    model_file = os.path.join(os.fspath(dir_path), f"{prefix or ''}{SAVE_KEYS.MODEL_FNAME}")
    if not os.path.exists(model_file):
        return None  # scvi-tools reports the missing model file
    info = read_save_info(dir_path, prefix)
    if info is None:
        warnings.warn(
            f"{dir_path} records no scvi-capvi version (saved by another tool or before "
            f"versioned saves); loading it with scvi-capvi {_version()} as is.",
            UserWarning,
            stacklevel=settings.warnings_stacklevel,
        )
        return None
    saved_cls = info.get("model_class")
    if saved_cls and saved_cls != cls.__name__:
        raise ValueError(
            f"{dir_path} holds a {saved_cls} model, not a {cls.__name__}: load it with "
            f"{saved_cls}.load()."
        )
    saved = info.get("scvi_capvi_version")
    if saved != _version():
        warnings.warn(
            f"{dir_path} was saved with scvi-capvi {saved}; this is scvi-capvi {_version()}. "
            f"If loading fails or outputs differ, load it with scvi-capvi=={saved}.",
            UserWarning,
            stacklevel=settings.warnings_stacklevel,
        )
    return info


class SafeSaveLoadMixin:
    """``save`` that never leaves a half-written model and ``load`` that says what is wrong.

    ``save`` writes into a temporary directory next to ``dir_path`` and moves the result into
    place (a new directory is renamed in one step; into an existing one the files are replaced
    one by one, the model file last). It records the scvi-capvi version and the model class in
    ``scvi_capvi.json``; ``load`` checks them, and the AnnData against the saved registry.
    """

    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ):
        """Save the model (see :meth:`scvi.model.base.BaseModelClass.save`), atomically.

        Raises
        ------
        ModelExistsError
            ``dir_path`` exists and is not empty, and ``overwrite`` is ``False``
            (a subclass of both ``FileExistsError`` and ``ValueError``).
        """
        target = os.path.abspath(os.fspath(dir_path))
        if os.path.exists(target) and not os.path.isdir(target):
            raise ModelExistsError(f"Cannot save the model to {dir_path}: it is a file.")
        if os.path.isdir(target) and os.listdir(target) and not overwrite:
            raise ModelExistsError(
                f"{dir_path} already exists and is not empty; pass overwrite=True to replace "
                "the model saved there (the old one stays intact if the save fails)."
            )
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
        try:
            super().save(tmp, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs)
            info = {
                "model_class": type(self).__name__,
                "scvi_capvi_version": _version(),
                "scvi_tools_version": scvi.__version__,
            }
            with open(os.path.join(tmp, f"{prefix or ''}{SAVE_INFO_FNAME}"), "w") as f:
                json.dump(info, f, indent=1)
            if os.path.isdir(target) and not os.listdir(target):
                os.rmdir(target)
            if not os.path.exists(target):
                os.rename(tmp, target)  # one step: the directory appears complete or not at all
            else:
                model_file = f"{prefix or ''}{SAVE_KEYS.MODEL_FNAME}"
                for name in sorted(os.listdir(tmp), key=lambda n: n == model_file):
                    os.replace(os.path.join(tmp, name), os.path.join(target, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
        **kwargs,
    ):
        """Load a saved model (see :meth:`scvi.model.base.BaseModelClass.load`).

        Checks the recorded model class and scvi-capvi version, and that ``adata`` has the
        saved model's genes (in its order), layer, columns and batches.
        """
        info = check_save_info(cls, dir_path, prefix)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_VAR_NAMES_WARNING)
            try:
                return super().load(
                    os.fspath(dir_path),
                    adata=adata,
                    accelerator=accelerator,
                    device=device,
                    prefix=prefix,
                    backup_url=backup_url,
                    **kwargs,
                )
            except RuntimeError as err:
                if "state_dict" not in str(err):
                    raise
                saved = (info or {}).get("scvi_capvi_version", "an unknown version")
                raise RuntimeError(
                    f"The parameters saved in {dir_path} (scvi-capvi {saved}) do not fit a "
                    f"{cls.__name__} of scvi-capvi {_version()}; load it with the version "
                    "that saved it."
                ) from err


class CheckedQueryMixin:
    """``load_query_data`` with the checks of :class:`SafeSaveLoadMixin.load`."""

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData | None = None,
        reference_model=None,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_decoder_first_layer: bool = True,
        freeze_batchnorm_encoder: bool = True,
        freeze_batchnorm_decoder: bool = False,
        freeze_classifier: bool = True,
        **kwargs,
    ):
        """Map a query onto a trained reference with scArches :cite:t:`Lotfollahi21`.

        :meth:`scvi.model.base.ArchesMixin.load_query_data` with clear errors: the query's
        batches are added to the reference's, the reference's weights are copied and frozen,
        and only the weights of the new batches (and what the ``freeze_*`` options leave free)
        train when you call ``train`` on the returned model. CapVI's classifier and prior stay
        frozen by default, so the query's cell types are predicted in the reference's terms.

        Parameters
        ----------
        adata
            The query, with the reference's genes in its order
            (:meth:`~scvi.model.base.ArchesMixin.prepare_query_anndata` pads missing genes),
            raw counts in the reference's layer and the reference's ``obs`` columns (its
            labels column may be missing or hold cell types the reference does not know:
            those count as unannotated).
        reference_model
            The trained reference model, or the folder it was saved to.
        inplace_subset_query_vars
            Subset ``adata`` to the reference's genes, in place (it must have all of them).
        accelerator, device
            Where to put the query model (as :meth:`scvi.model.base.BaseModelClass.load`).
        unfrozen
            Train every weight (overrides the ``freeze_*`` options).
        freeze_dropout
            Turn dropout off while training the query.
        freeze_expression
            Freeze the first-layer weights of the genes (the query trains only its batches'
            weights).
        freeze_decoder_first_layer
            Freeze the decoder's first layer.
        freeze_batchnorm_encoder, freeze_batchnorm_decoder
            Freeze batch-norm weights and statistics in the encoder / decoder.
        freeze_classifier
            Keep the cell-type classifier as trained on the reference.
        **kwargs
            Other arguments of :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        Returns
        -------
        A model of the same class on the query; train it briefly (e.g.
        ``model.train(max_epochs=100, plan_kwargs={"weight_decay": 0.0})``).
        """
        kwargs.update(
            inplace_subset_query_vars=inplace_subset_query_vars,
            accelerator=accelerator,
            device=device,
            unfrozen=unfrozen,
            freeze_dropout=freeze_dropout,
            freeze_expression=freeze_expression,
            freeze_decoder_first_layer=freeze_decoder_first_layer,
            freeze_batchnorm_encoder=freeze_batchnorm_encoder,
            freeze_batchnorm_decoder=freeze_batchnorm_decoder,
            freeze_classifier=freeze_classifier,
        )
        if isinstance(reference_model, str | os.PathLike):
            check_save_info(cls, reference_model)
            reference_model = os.fspath(reference_model)
        if adata is not None and kwargs.get("inplace_subset_query_vars"):
            # scvi-tools would fail with a bare KeyError on the first missing gene
            if not isinstance(reference_model, str):
                var_names = list(reference_model.get_var_names())
                missing = [g for g in var_names if g not in set(adata.var_names)]
                if missing:
                    raise ValueError(
                        f"{len(missing)} of the reference model's {len(var_names)} genes are "
                        f"missing from adata.var_names ({_preview(missing)}); "
                        "inplace_subset_query_vars can only drop genes. "
                        f"{cls.__name__}.prepare_query_anndata(adata, reference_model) pads "
                        "missing genes with zeros."
                    )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_VAR_NAMES_WARNING)
            model = super().load_query_data(adata, reference_model, **kwargs)
        model.is_query_ = True  # trains from the reference's prior (no fresh GMVAE start)
        # its temperature stays valid however long the query trains (see `classifier_trained`)
        model.classifier_frozen_ = bool(freeze_classifier and not unfrozen)
        return model

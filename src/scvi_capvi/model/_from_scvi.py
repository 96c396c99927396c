"""Start a CapVI from a trained scvi-tools SCVI, as ``SCANVI.from_scvi_model`` does."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi import REGISTRY_KEYS, settings

if TYPE_CHECKING:
    from scvi.model import SCVI

# the SCVI setup arguments CapVI registers the same way
_SETUP_ARGS = (
    "layer",
    "batch_key",
    "size_factor_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
)
# the SCVI architecture CapVI takes over (the module's shapes must match to copy weights)
_ARCHITECTURE = (
    "n_hidden",
    "n_latent",
    "n_layers",
    "dropout_rate",
    "dispersion",
    "gene_likelihood",
    "use_observed_lib_size",
    "encode_covariates",
    "use_batch_norm",
    "use_layer_norm",
)
_SUPPORTED = {
    "dispersion": ("gene", "gene-batch"),
    "gene_likelihood": ("zinb", "nb"),
    "latent_distribution": ("normal",),
    "batch_representation": ("one-hot",),
}


def _signature_defaults(cls: type) -> dict:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def scvi_init_params(scvi_model: SCVI) -> dict:
    """The SCVI model's constructor arguments, ``**kwargs`` flattened; those not passed take
    the model's defaults, then its module's (``init_params_`` holds only what was passed)."""
    params = scvi_model.init_params_
    flat = dict(params.get("non_kwargs", {}))
    for group in params.get("kwargs", {}).values():
        flat.update(group)
    defaults = _signature_defaults(type(scvi_model.module))
    defaults.update(_signature_defaults(type(scvi_model)))
    return {**defaults, **flat}


def capvi_arguments_from_scvi(scvi_model: SCVI, capvi_kwargs: dict) -> tuple[dict, dict]:
    """CapVI's setup arguments and constructor arguments for a trained ``scvi_model``.

    Raises a ``ValueError`` for an SCVI that CapVI cannot start from (untrained, a latent
    distribution or likelihood CapVI does not have, minified data); warns about, and drops,
    architecture arguments in ``capvi_kwargs`` that the SCVI model fixes.
    """
    if not scvi_model.is_trained:
        raise ValueError("`scvi_model` has not been trained yet: train it first.")
    if scvi_model.minified_data_type is not None:
        raise ValueError("`scvi_model` has minified data; CapVI needs the counts.")
    params = scvi_init_params(scvi_model)
    for name, allowed in _SUPPORTED.items():
        value = params.get(name, allowed[0])
        if value not in allowed:
            raise ValueError(
                f"CapVI cannot start from an SCVI with {name}={value!r} (CapVI supports "
                f"{', '.join(map(repr, allowed))})."
            )
    setup_args = {k: scvi_model.registry["setup_args"].get(k) for k in _SETUP_ARGS}
    architecture = {k: params[k] for k in _ARCHITECTURE}
    kwargs = dict(capvi_kwargs)
    for name in _ARCHITECTURE:
        if name in kwargs and kwargs[name] != architecture[name]:
            warnings.warn(
                f"Ignoring {name}={kwargs[name]!r}: the SCVI model fixes it to "
                f"{architecture[name]!r}.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        kwargs.pop(name, None)
    return setup_args, {**architecture, **kwargs}


def copy_vae_weights(target: torch.nn.Module, source: torch.nn.Module) -> list[str]:
    """Copy ``source``'s (an :class:`scvi.module.VAE`) parameters into ``target`` (CapVI).

    Tensors of the same name and shape are copied. CapVI's encoders also take the batch when
    SCVI's do not: their layers have extra input columns for it, which get zeros, so the
    encoders compute exactly what SCVI's did. A gene dispersion of shape ``(G,)`` becomes
    ``(G, 1)``. Returns the names of ``target``'s tensors copied from ``source``.
    """
    source_state = source.state_dict()
    state = target.state_dict()
    copied = []
    for name, value in state.items():
        if name not in source_state:
            continue
        new = source_state[name]
        if new.shape == value.shape:
            state[name] = new.clone()
        elif new.dim() == 2 and value.dim() == 2 and new.shape[0] == value.shape[0]:
            if new.shape[1] > value.shape[1]:
                raise ValueError(f"Cannot copy {name}: SCVI {tuple(new.shape)} is wider.")
            padded = torch.zeros_like(value)
            padded[:, : new.shape[1]] = new  # one-hot covariate columns come after the input
            state[name] = padded
        elif new.numel() == value.numel():
            state[name] = new.reshape(value.shape).clone()
        else:
            raise ValueError(
                f"Cannot copy {name}: shape {tuple(new.shape)} in SCVI, {tuple(value.shape)} "
                "in CapVI."
            )
        copied.append(name)
    target.load_state_dict(state)
    return copied


def centroids_from_latent(
    latent: np.ndarray, codes: np.ndarray, n_types: int
) -> torch.Tensor | None:
    """Mean latent position of each annotated cell type (``None`` if a type has no cell)."""
    means = np.zeros((n_types, latent.shape[1]), dtype=np.float32)
    for k in range(n_types):
        cells = codes == k
        if not cells.any():
            return None
        means[k] = latent[cells].mean(0)
    return torch.as_tensor(means)


def init_from_scvi(model, scvi_model: SCVI, latent: np.ndarray):
    """Weights from ``scvi_model``; prior modes at the cell types' mean of ``latent`` (the
    SCVI latent of ``model``'s cells, computed before CapVI registered them: both models
    write the same ``obs`` columns)."""
    copy_vae_weights(model.module, scvi_model.module)
    if model.use_labels:
        codes = model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        means = centroids_from_latent(latent, codes, len(model.cell_types))
        if means is not None:
            model.module.prior.means.data.copy_(means)
    model.was_pretrained = True

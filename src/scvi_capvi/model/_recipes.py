"""CapVI's training recipes: scvi-tools' conventions, or the paper's."""

RECIPES: dict[str, dict] = {
    # scvi-tools' conventions (as SCVI / SCANVI): observed library size, one dispersion per
    # gene, annotations kept in the ELBO of stages 2-3, best epoch by validation ELBO
    "scvi-tools": {
        "use_observed_lib_size": True,
        "dispersion": "gene",
        "semi_supervised": True,
        "monitor": "elbo_validation",
    },
    # Clivio et al. 2022 §4.2: latent library size, gene-batch dispersion, annotations used only by
    # the classifier, early stopping on the validation reconstruction error
    "paper": {
        "use_observed_lib_size": False,
        "dispersion": "gene-batch",
        "semi_supervised": False,
        "monitor": "reconstruction_loss_validation",
    },
}
"""CapVI's two training recipes (``CapVI(adata, recipe=...)``)."""

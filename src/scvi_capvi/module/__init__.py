"""Pure-torch modules (no AnnData): generative models and inference networks."""

__all__: list[str] = []

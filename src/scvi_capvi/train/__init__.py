"""Training plans."""

__all__: list[str] = []

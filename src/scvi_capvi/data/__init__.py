"""Dataset loaders."""

from ._datasets import kang2018, list_datasets, pbmc68k_reduced, read_dataset
from ._pbmc11k import pbmc11k

__all__: list[str] = []
__all__ += ["kang2018", "list_datasets", "pbmc11k", "pbmc68k_reduced", "read_dataset"]

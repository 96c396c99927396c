"""Fixtures shared by the test files."""

import os
from pathlib import Path

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder of the real datasets: ``$SCVI_CAPVI_DATA_DIR``, else ``../shared/data``.

    Tests using it are skipped (with the reason) when neither exists.
    """
    env = os.environ.get("SCVI_CAPVI_DATA_DIR")
    path = Path(env) if env else SHARED_DATA_DIR
    if not path.is_dir():
        pytest.skip(f"shared dataset folder not found ({path}); set SCVI_CAPVI_DATA_DIR")
    return path

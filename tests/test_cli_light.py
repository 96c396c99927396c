"""``scvi-capvi`` answers ``--help``, ``--version``, ``list`` and bad names without the heavy
stack (scvi-tools, PyTorch, scanpy); the commands that train are tested in ``test_cli.py`` and
``test_benchmark_cli.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import scvi_capvi
from scvi_capvi._cli import main

SRC = str(Path(scvi_capvi.__file__).resolve().parents[1])
HEAVY = ("scvi", "torch", "scanpy", "anndata", "lightning", "pandas")


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python <args>`` in a fresh interpreter that imports this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"scvi-capvi {scvi_capvi.__version__}\n"


def test_cli_and_list_do_not_import_the_heavy_stack(tmp_path):
    code = (
        "import sys\n"
        "import scvi_capvi, scvi_capvi._cli as cli\n"
        "cli.build_parser()\n"
        f"cli.main(['list', '--data-dir', {str(tmp_path)!r}])\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


def test_lazy_subpackages_still_work():
    done = _run(
        "-c",
        "import scvi_capvi; from scvi_capvi.model import CapVI; "
        "assert scvi_capvi.model.CapVI is CapVI; assert scvi_capvi.metrics.clisi; "
        "print(scvi_capvi.__version__)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == scvi_capvi.__version__


@pytest.mark.parametrize("command", [[], ["quickstart"], ["benchmark"], ["list"]])
def test_help(command):
    done = _run("-m", "scvi_capvi._cli", *command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("usage: scvi-capvi")
    # help is for users: no references to internal documents
    assert "SPEC" not in text and "§" not in text and "paper 0" not in text.lower()
    assert "(default: None)" not in text and "(default: False)" not in text
    if command == ["benchmark"]:
        from scvi_capvi.benchmark import METHODS

        for name in METHODS:
            assert name in text, name
        for flag in ("--max-cells", "--max-epochs", "--n-mc-samples", "--probe-epochs",
                     "--probe-ks", "--data-dir", "--quick", "--no-select"):  # fmt: skip
            assert flag in text, flag
        assert "pbmc68k_reduced" in text and "(default: auto)" in text
    if command == ["quickstart"]:
        assert "(default: 1000)" in text and "(default: capvi_quickstart)" in text


def test_list_marks_methods_and_available_datasets(tmp_path, capsys):
    from scvi_capvi.benchmark import METHODS

    (tmp_path / "kang2018_pbmc_ifnb_muscat_subset.h5ad").touch()
    (tmp_path / "my_data.h5ad").touch()
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, method in METHODS.items():
        mark = "[x]" if method.default else "[ ]"
        assert f"\n  {mark} {name} " in out, name
    assert "  [x] pbmc68k_reduced: 700 cells" in out
    assert "  [x] kang2018_pbmc_ifnb_muscat_subset: " in out
    assert "  [ ] cellbench_lung_cell_lines: " in out
    assert "  [ ] pbmc11k: " in out
    assert "  [x] my_data\n" in out
    assert str(tmp_path) in out


def test_unknown_method_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--out", "x", "--methods", "CapVI", "NoSuchMethod"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'NoSuchMethod'" in err and "'SCANVI'" in err


def test_unknown_or_missing_dataset_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--out", str(out), "--data-dir", str(tmp_path),
              "--datasets", "pbmc68k_reduced", "nope"])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown dataset(s): nope" in err
    assert "kang2018_pbmc_ifnb_muscat_subset" in err and "pbmc11k" in err

    with pytest.raises(SystemExit):
        main(["benchmark", "--out", str(out), "--data-dir", str(tmp_path),
              "--datasets", "kang2018_pbmc_ifnb_muscat_subset"])  # fmt: skip
    err = capsys.readouterr().err
    assert "not found here: kang2018_pbmc_ifnb_muscat_subset" in err and str(tmp_path) in err
    assert not out.exists()

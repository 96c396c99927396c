"""Wall time of ``scvi-capvi --help`` (and ``--version``, ``list``) in fresh interpreters.

Each command runs ``--runs`` times in a new process; the minimum and median are reported. By
default the CLI runs as ``python -m scvi_capvi._cli`` with this interpreter (the package it
imports: this checkout's ``src/`` first, then the installed one); ``--console-script`` runs the
installed ``scvi-capvi`` instead. For comparison, ``import scvi_capvi.benchmark`` (what every
command paid before the package's import became lazy) is timed too.

    OMP_NUM_THREADS=1 python benchmarks/cli_startup.py --runs 5
    python benchmarks/cli_startup.py --commands help   # e.g. for a version without `list`

Writes ``benchmarks/results/cli_startup.json`` and prints the table. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _time(cmd: list[str], env: dict, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command")
    parser.add_argument(
        "--console-script", action="store_true", help="time the installed `scvi-capvi`"
    )
    parser.add_argument(
        "--commands",
        default="help,version,list,import",
        help="which to time, comma-separated (help, version, list, import)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cli_startup.json")
    args = parser.parse_args()

    env = dict(os.environ)
    if SRC.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    if args.console_script:
        exe = shutil.which("scvi-capvi")
        if exe is None:
            sys.exit("no `scvi-capvi` on PATH")
        cli = [exe]
    else:
        cli = [sys.executable, "-m", "scvi_capvi._cli"]
    every = {
        "help": ("scvi-capvi --help", [*cli, "--help"]),
        "version": ("scvi-capvi --version", [*cli, "--version"]),
        "list": ("scvi-capvi list", [*cli, "list"]),
        "import": (
            "python -c 'import scvi_capvi.benchmark'",
            [sys.executable, "-c", "import scvi_capvi.benchmark"],
        ),
    }
    commands = dict(every[key] for key in args.commands.split(","))

    rows = []
    for name, cmd in commands.items():
        seconds = _time(cmd, env, args.runs)
        rows.append(
            {
                "command": name,
                "runs": args.runs,
                "min_s": round(min(seconds), 3),
                "median_s": round(statistics.median(seconds), 3),
                "seconds": [round(s, 3) for s in seconds],
            }
        )
    payload = {
        "cli": cli,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))

    width = max(len(r["command"]) for r in rows)
    print(f"{'command':<{width}}  min (s)  median (s)  ({args.runs} runs each)")
    for r in rows:
        print(f"{r['command']:<{width}}  {r['min_s']:7.3f}  {r['median_s']:10.3f}")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()

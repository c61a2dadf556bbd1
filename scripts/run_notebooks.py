"""Execute every notebook in notebooks/ in order, in place, as "Run All" would.

Used by `make run`. Each notebook runs in a fresh kernel with notebooks/ as its
working folder; outputs are stored back into the .ipynb (atomically, so a failed run
never leaves a half-written notebook). At the end it prints the headline numbers that
the notebooks recorded in results/*.json.

    python scripts/run_notebooks.py [NOTEBOOK ...]     (default: all, in order)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))
from caecodec import fileio


def run_notebook(path: Path, timeout: int = 3600) -> float:
    """Execute ``path`` in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return elapsed


def print_summary() -> None:
    import cae_utils as cu  # imported late: only for its results folder

    files = sorted(cu.RESULTS_DIR.glob("*.json"))
    if not files:
        return
    print(f"\nResults summary ({cu.RESULTS_DIR.relative_to(ROOT)}/):")
    for f in files:
        data = json.loads(f.read_text())
        print(f"  {f.stem}:")
        for key, value in data.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)[:100]
            print(f"    {key}: {value}")


def record_times(times: dict, mode: str) -> None:
    """Merge this run's wall times into results/run_times.json (quick: results/quick/)."""
    import cae_utils as cu

    path = cu.RESULTS_DIR / "run_times.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update({"mode": mode, "cpus": os.cpu_count(), "seconds": {**old.get("seconds", {}), **times}})
    fileio.atomic_write_bytes(path, (json.dumps(old, indent=1, sort_keys=True) + "\n").encode())


def main(argv: list[str]) -> int:
    notebooks = [Path(a).resolve() for a in argv] or sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    mode = "QUICK" if os.environ.get("CAE_QUICK", "") not in ("", "0") else "FULL"
    print(f"Running {len(notebooks)} notebooks in {mode} mode")
    total, times = 0.0, {}
    for nb in notebooks:
        print(f"  {nb.name} ...", end="", flush=True)
        try:
            seconds = run_notebook(nb)
        except CellExecutionError as exc:
            print(" FAILED")
            print(str(exc)[-3000:], file=sys.stderr)
            return 1
        total += seconds
        times[nb.stem] = round(seconds, 1)
        print(f" {seconds:6.1f} s")
        record_times(times, mode)
    print(f"All notebooks ran in {total:.0f} s; figures are in figures/.")
    print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

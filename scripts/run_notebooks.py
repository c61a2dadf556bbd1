"""Execute every notebook in notebooks/ in order, in place, as "Run All" would.

Used by `make run`. Each notebook runs in a fresh kernel with notebooks/ as its
working folder; outputs are stored back into the .ipynb (atomically, so a failed run
never leaves a half-written notebook). It prints one progress line per notebook and, at
the end, a short summary: each notebook's headline (the ``headline`` lines it recorded in
results/<notebook>.json) and where to read more.

The kernel talks to this process over local sockets (IPC) rather than TCP where the
system has them, so Jupyter has no reason to warn about unencrypted TCP connections.

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


def kernel_manager(folder: Path):
    """A kernel manager for one notebook: IPC sockets in ``folder`` on POSIX, TCP elsewhere."""
    from jupyter_client.manager import KernelManager

    if os.name == "posix":
        return KernelManager(kernel_name="python3", transport="ipc", ip=str(folder / "kernel"))
    return KernelManager(kernel_name="python3")


def run_notebook(path: Path, timeout: int = 3600) -> float:
    """Execute ``path`` in place; return the wall time in seconds."""
    import tempfile

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="cae-kernel-") as sockets:
        km = kernel_manager(Path(sockets))
        client = NotebookClient(nb, km=km, timeout=timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            client.execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel()
        elapsed = time.perf_counter() - start
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return elapsed


def headline(name: str, data: dict) -> list[str]:
    """The lines a notebook recorded as its ``headline`` (a list of short sentences, numbers
    included, made from its own measurements)."""
    lines = data.get("headline") or []
    return [lines] if isinstance(lines, str) else [str(line) for line in lines]


def print_summary(names: list[str]) -> None:
    """A dozen readable lines: each notebook's headline, then where to read more."""
    import cae_utils as cu  # imported late: only for its results folder

    print("\nWhat the notebooks found:")
    for name in names:
        path = cu.RESULTS_DIR / f"{name}.json"
        if not path.is_file():
            continue
        lines = headline(name, json.loads(path.read_text()))
        for i, line in enumerate(lines):
            print(f"  {name + ':' if i == 0 else '':<22}{line}")
    print(f"\nMore: the notebooks in notebooks/ (now with their outputs), every figure in "
          f"{cu.FIGURES_DIR.relative_to(ROOT)}/, every number in {cu.RESULTS_DIR.relative_to(ROOT)}/*.json, "
          "and README.md (python scripts/update_readme.py refreshes its tables).")


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
    print(f"All {len(notebooks)} notebooks ran in {total:.0f} s.")
    print_summary([nb.stem for nb in notebooks])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

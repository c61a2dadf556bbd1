"""Run the code a notebook defines, so tests can compare it with the package.

The notebooks teach in code: a model builder, a loss or a coder call is written in a cell.
Where the package holds the same thing, that cell carries the tag ``definition`` (cell
metadata ``"tags": ["definition"]``), and a test executes those cells, in order, in a fresh
namespace, then compares what they define with the package's version. The namespace starts
with the imports every notebook has after its setup cell: ``np``, ``keras``, ``layers``,
``ops`` and ``cu`` (``cae_utils``).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def tagged_cells(notebook: str | Path, tag: str = "definition") -> list[str]:
    """Sources of the code cells of ``notebook`` that carry ``tag``, in notebook order."""
    path = Path(notebook)
    if not path.is_absolute():
        path = NOTEBOOKS / path
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])]


def run_definitions(notebook: str | Path, tag: str = "definition") -> dict:
    """Execute the ``tag`` cells of ``notebook`` and return the namespace they filled.

    Raises AssertionError when the notebook has no such cell, so a test cannot pass by
    finding nothing to compare."""
    import keras
    import numpy as np
    from keras import layers, ops

    import cae_utils as cu

    cells = tagged_cells(notebook, tag)
    assert cells, f"{notebook} has no code cell tagged {tag!r}"
    namespace = {"np": np, "keras": keras, "layers": layers, "ops": ops, "cu": cu,
                 "__name__": f"notebook_{Path(notebook).stem}"}
    for source in cells:
        exec(compile(source, f"<{Path(notebook).name} definition cell>", "exec"), namespace)
    return namespace

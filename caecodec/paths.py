"""Where the codec finds its models and the course finds its data.

* :data:`MODELS_DIR`: the trained models ship inside the package (``caecodec/models``),
  so ``pip install`` gives a working ``cae`` command anywhere.
* :data:`COURSE_ROOT`: the course checkout when the package sits in one (the folder
  holding ``cae_utils.py``), else ``None``.
* :data:`DATA_DIR`: downloads and caches: ``$CAE_DATA_DIR``, else ``data/`` in the course
  checkout, else ``./data``.

Other modules read these as ``paths.MODELS_DIR`` at call time, so a test can point them
elsewhere with ``monkeypatch.setattr(caecodec.paths, "MODELS_DIR", folder)``.
Layer 0: imports nothing of the package.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MODELS_DIR = PACKAGE_DIR / "models"
COURSE_ROOT: Path | None = (PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "cae_utils.py").is_file()
                            else None)
DATA_DIR = Path(os.environ.get("CAE_DATA_DIR") or (COURSE_ROOT or Path.cwd()) / "data")


def shown(path: Path) -> str:
    """``path`` relative to the course checkout when it lies inside it (for messages)."""
    path = Path(path)
    if COURSE_ROOT is not None:
        try:
            return str(path.resolve().relative_to(COURSE_ROOT))
        except ValueError:
            pass
    return str(path)

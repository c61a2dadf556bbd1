"""Files that are never half-written: atomic writes, output checks, JSON cards.

Every file the codec writes (``.cae`` files, decoded PNGs, model cards, results) goes
through :func:`atomic_write_bytes`: a temporary file in the same folder, then
``os.replace``, so a crash never leaves a broken file and a user's file is never lost.
Layer 1: imports only :mod:`caecodec.errors`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .errors import CAEError


def current_umask() -> int:
    """The process umask: from /proc on Linux (no side effect), else by setting it briefly."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader never sees half a file, and a crash leaves the old file intact. With
    ``overwrite=False`` an existing ``path`` is refused with :class:`CAEError`.
    """
    import tempfile

    path = Path(path)
    if not overwrite and path.exists():
        raise CAEError(f"{path} already exists; choose another name or pass --force to replace it.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the usual mode a new file gets.
        os.chmod(tmp, 0o666 & ~current_umask())
        if not overwrite and path.exists():
            raise CAEError(f"{path} already exists; choose another name or pass --force to replace it.")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_output_path(out_path: Path, force: bool) -> None:
    """Refuse early (before any work) an output that exists or cannot be written."""
    if out_path.is_dir():
        raise CAEError(f"Output {out_path} is a folder; give a file name.")
    if out_path.exists() and not force:
        raise CAEError(f"Output {out_path} already exists; choose another name or pass --force.")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir():
        raise CAEError(f"Cannot write {out_path}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise CAEError(f"Cannot write {out_path}: no permission to write in {parent}.")


def write_output(out_path: Path, data: bytes, force: bool) -> None:
    """Write a user-requested output atomically; an OSError becomes one clear :class:`CAEError`."""
    try:
        atomic_write_bytes(out_path, data, overwrite=force)
    except OSError as exc:
        raise CAEError(f"Cannot write {out_path}: {exc.strerror or exc}.") from None


def read_card(model_path: Path) -> dict:
    """The JSON card beside ``model_path`` (``{}`` if there is none)."""
    import json

    card_path = Path(model_path).with_suffix(".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise CAEError(f"The model card {card_path} is damaged ({exc}); restore it or delete it.") from None
    if not isinstance(card, dict):
        raise CAEError(f"The model card {card_path} is damaged (not a JSON object); restore it or delete it.")
    return card


def finite_or_str(obj):
    """``obj`` with every non-finite float replaced by its string ("inf", "nan")."""
    if isinstance(obj, dict):
        return {k: finite_or_str(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_str(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: Path, obj, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented, key-sorted strict JSON (non-finite floats as strings),
    atomically. Returns ``path``."""
    import json

    text = json.dumps(finite_or_str(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(Path(path), (text + "\n").encode(), overwrite=overwrite)
    return Path(path)

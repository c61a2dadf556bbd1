"""Make this Python ready for the course when a notebook is opened on its own.

Colab, Kaggle or a downloaded notebook has no course folder around it. The notebooks' setup
cell (the same in every notebook, written by ``scripts/sync_notebooks.py``) then fetches the
course with git into ``./cae-course`` beside the notebook and calls :func:`install_missing`,
which

1. installs the course package itself, ``pip install --no-deps -e <course>`` (the ``cae``
   command, the shipped models), unless this exact folder is installed already;
2. installs, at the ranges the package declares (``pyproject.toml``), only the libraries that
   this Python lacks or has below the course's minimum;
3. never installs, upgrades or replaces a TensorFlow, Keras or numpy that is already there:
   their installed versions go to pip as constraints. Colab and Kaggle ship them built for
   their GPUs; an installed version the course cannot use is reported, not replaced.

With no TensorFlow at all it picks the wheel for the machine: ``tensorflow[and-cuda]`` on
Linux x86_64 with an NVIDIA driver (``nvidia-smi``), the smaller ``tensorflow-cpu`` on other
Linux x86_64 machines, ``tensorflow`` elsewhere.

Standard library only (``packaging`` comes with pip, and with TensorFlow), because it runs
before anything of the course is installed. Problems raise :class:`SetupError`, shown in a
notebook as one sentence without a traceback.

    python course_env.py [--dry-run]     (the same for the Python that runs it)
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip carries a copy of the same parser
    from pip._vendor import tomli as tomllib
try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # a bare Python: pip carries its own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

PACKAGE = "caecodec"
EXTRAS = ("course",)  # matplotlib and ipywidgets: the notebooks' figures and widgets
TENSORFLOW_NAMES = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel",
                    "tf-nightly", "tf-nightly-cpu")
#: Installed versions of these are kept as they are (pip constraints), never replaced.
KEPT = ("keras", "numpy")


class SetupError(Exception):
    """A setup step failed; Jupyter shows the message alone, as one line."""

    def _render_traceback_(self):
        return [f"SetupError: {self}"]


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_tensorflow() -> tuple[str, str] | None:
    """``(distribution, version)`` of the TensorFlow this Python has, or None."""
    for name in TENSORFLOW_NAMES:
        version = installed_version(name)
        if version:
            return name, version
    return None


def tensorflow_wheel(machine: dict | None = None, nvidia_driver: bool | None = None) -> str:
    """The TensorFlow distribution to install where there is none (see the module doc)."""
    machine = machine or default_environment()
    if nvidia_driver is None:
        nvidia_driver = shutil.which("nvidia-smi") is not None
    if machine["sys_platform"] == "linux" and machine["platform_machine"] == "x86_64":
        return "tensorflow[and-cuda]" if nvidia_driver else "tensorflow-cpu"
    return "tensorflow"


def declared_requirements(root) -> list[str]:
    """The requirement strings of ``root/pyproject.toml``: dependencies and the :data:`EXTRAS`."""
    project = tomllib.loads((Path(root) / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for e in EXTRAS for r in optional.get(e, []))]


def course_requirements(requires: list[str], machine: dict | None = None) -> list[Requirement]:
    """The requirements among ``requires`` whose markers hold on this machine."""
    machine = dict(machine or default_environment())
    machine.setdefault("extra", "")
    return [r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate(machine)]


def plan(requirements: list[Requirement], installed: dict[str, str | None],
         tensorflow: tuple[str, str] | None, tf_wheel: str = "tensorflow-cpu"):
    """What to install: ``(to_install, kept, problems)``.

    ``installed`` maps a distribution name to its installed version (None: absent);
    ``tensorflow`` is :func:`installed_tensorflow`'s answer. ``to_install`` holds requirement
    strings for pip; ``kept`` maps TensorFlow, Keras and numpy to the versions left alone;
    ``problems`` are sentences about kept libraries below the course's minimum.
    """
    to_install, kept, problems = [], {}, []
    for req in requirements:
        name = req.name.lower()
        if name in TENSORFLOW_NAMES:
            if tensorflow is None:
                to_install.append(f"{tf_wheel}{req.specifier}")
                continue
            name, version = tensorflow
        else:
            version = installed.get(name)
        if version is None:
            to_install.append(f"{req.name}{req.specifier}")
        elif name in TENSORFLOW_NAMES or name in KEPT:
            kept[name] = version
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{name} {version} (the course needs {req.name}{req.specifier})")
        elif not req.specifier.contains(version, prereleases=True):
            to_install.append(f"{req.name}{req.specifier}")
    return to_install, kept, problems


def pip_install(args: list[str], what: str) -> None:
    """``python -m pip install -q ARGS``; a failure becomes one :class:`SetupError` line."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SetupError(f"Could not run pip to install {what} ({exc}).") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise SetupError(f"pip could not install {what} ({why[:300]}); check the internet connection "
                         "and run this cell again.")


def editable_locations(name: str = PACKAGE) -> set[Path]:
    """The folders that editable installs of ``name`` point at. (Every distribution of that
    name is read: once the course folder is on ``sys.path``, its own ``caecodec.egg-info``,
    which has no install record, is found first.)"""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    found = set()
    for dist in metadata.distributions(name=name):
        info = json.loads(dist.read_text("direct_url.json") or "{}")
        if info.get("dir_info", {}).get("editable") and info.get("url", "").startswith("file:"):
            found.add(Path(url2pathname(urlparse(info["url"]).path)).resolve())
    return found


def install_missing(root, dry_run: bool = False) -> str:
    """Install the course package from ``root`` and what this Python lacks; return one
    sentence saying what was done. Raises :class:`SetupError` (one line) on failure."""
    root = Path(root).resolve()
    done = []
    if root not in editable_locations():
        if dry_run:
            done.append(f"{PACKAGE} (editable, from {root})")
        else:
            pip_install(["--no-deps", "-e", str(root)], f"the course package from {root}")
            done.append(PACKAGE)
    reqs = course_requirements(declared_requirements(root))
    installed = {r.name.lower(): installed_version(r.name) for r in reqs}
    to_install, kept, problems = plan(reqs, installed, installed_tensorflow(), tensorflow_wheel())
    if problems:
        raise SetupError("This Python has " + ", ".join(problems) + "; the course leaves those "
                         "alone, so use a newer runtime or a fresh virtual environment.")
    if to_install and not dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            constraints = Path(tmp) / "keep.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in kept.items()))
            pip_install([*to_install, "-c", str(constraints)], ", ".join(to_install))
        importlib.invalidate_caches()
    done += to_install
    order = [n for n in TENSORFLOW_NAMES if n in kept] + [n for n in KEPT if n in kept]
    kept_text = ", ".join(f"{n} {kept[n]}" for n in order) or "nothing"
    if dry_run:
        return (f"Dry run for {root}: would install {', '.join(done) or 'nothing (all there)'}; "
                f"would keep {kept_text} as they are.")
    return (f"Course ready in {root}: installed {', '.join(done) or 'nothing (all there)'}; "
            f"kept {kept_text} as they were.")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Install what this Python lacks for the course "
                                             "(never replacing TensorFlow, Keras or numpy).")
    ap.add_argument("--dry-run", action="store_true", help="only say what would be installed")
    args = ap.parse_args(argv)
    try:
        print(install_missing(Path(__file__).resolve().parent, dry_run=args.dry_run))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

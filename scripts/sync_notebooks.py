"""Write the one setup cell and the Colab / Kaggle / Binder badges into every notebook, and
the badges, the "opened alone" line and the tested versions into the README.

    python scripts/sync_notebooks.py [--check]

Everything comes from pyproject.toml, the one place that names the course's repository
(``[project.urls] Repository``, and ``[tool.cae-course] branch``), its tested Pythons (the
``Programming Language :: Python :: 3.x`` classifiers) and its supported version ranges
(``dependencies``). A teacher who forks the course changes the Repository line and runs this
script again. It is idempotent: a second run changes nothing.

* notebooks/NN_*.ipynb and notebooks/app_codec.ipynb: the first code cell is replaced by
  :data:`SETUP_CELL` (only its source; outputs stay until the notebook is run again), and the
  badges are written (or replaced) under the title of the first markdown cell, between
  ``<!-- badges:start -->`` and ``<!-- badges:end -->`` (no cell is added or moved).
* README.md: the text between ``<!-- where:start -->`` and ``<!-- where:end -->``.

With --check nothing is written; the exit status is 1 if a file is out of date.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import quote

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
README_START, README_END = "<!-- where:start -->", "<!-- where:end -->"
BADGE_START, BADGE_END = "<!-- badges:start -->", "<!-- badges:end -->"

#: The setup cell, the same in every notebook. It must work before the course is present,
#: so the fetching lives here; what to install lives in the fetched course_env.py.
SETUP_CELL = '''\
# Setup, the same in every notebook. In the course folder it imports the course's helper; opened
# alone (Colab, Kaggle, a download) it first fetches the course into ./cae-course beside this
# notebook and installs only what this Python lacks (an installed TensorFlow is never replaced).
import os, pathlib, subprocess, sys
COURSE_REPO = os.environ.get("CAE_COURSE_REPO", "{repo}")
class SetupError(Exception):
    def _render_traceback_(self): return [f"SetupError: {{self}}"]  # one line, no traceback
here = pathlib.Path.cwd()
ROOT = next((p for p in (here, *here.parents) if (p / "cae_utils.py").is_file()), None)
if ROOT is None:
    ROOT = here / "cae-course"
    if not (ROOT / "cae_utils.py").is_file():
        print(f"Opened alone: fetching the course from {{COURSE_REPO}} into {{ROOT}}, then installing what this Python lacks...")
        try:
            subprocess.run(["git", "clone", "-q", "--depth", "1", COURSE_REPO, str(ROOT)],
                           check=True, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            why = " ".join(str(getattr(e, "stderr", None) or e).split())[-200:]
            raise SetupError(f"Could not fetch the course from {{COURSE_REPO}} ({{why}}): check the internet "
                             "connection (on Kaggle: Settings > Internet on) and run this cell again.") from None
    sys.path.insert(0, str(ROOT))
    import course_env; print(course_env.install_missing(ROOT))
sys.path.insert(0, str(ROOT))
import numpy as np
import matplotlib.pyplot as plt
import cae_utils as cu
print(cu.mode_banner())'''

BADGES = {
    "colab": ("Open In Colab", "https://colab.research.google.com/assets/colab-badge.svg",
              "https://colab.research.google.com/github/{slug}/blob/{branch}/{path}"),
    "kaggle": ("Open In Kaggle", "https://kaggle.com/static/images/open-in-kaggle.svg",
               "https://kaggle.com/kernels/welcome?src=https://github.com/{slug}/blob/{branch}/{path}"),
    "binder": ("Launch Binder", "https://mybinder.org/badge_logo.svg",
               "https://mybinder.org/v2/gh/{slug}/{branch}?labpath={quoted_path}"),
}
ALONE_LINE = ("Opened on Colab or Kaggle (or downloaded alone): run the first code cell; it fetches "
              "the course and installs what is missing.")


def course_settings(root: Path = ROOT) -> dict:
    """The repository URL and branch, the tested Pythons and the declared ranges."""
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = meta["project"]
    repo = project["urls"]["Repository"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", repo)
    if not match:
        raise SystemExit(f"pyproject.toml: Repository must be a https://github.com/OWNER/NAME URL "
                         f"(Colab, Kaggle and Binder open GitHub notebooks), got {repo!r}")
    pythons = sorted((c.rsplit("::", 1)[1].strip() for c in project.get("classifiers", [])
                      if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)),
                     key=lambda v: int(v.split(".")[1]))
    return {"repo": repo, "slug": match.group(1),
            "branch": meta.get("tool", {}).get("cae-course", {}).get("branch", "main"),
            "pythons": pythons, "dependencies": project["dependencies"]}


def badges(settings: dict, path: str) -> str:
    """Markdown for the three badges opening ``path`` (relative to the repository root)."""
    out = []
    for alt, image, link in BADGES.values():
        url = link.format(slug=settings["slug"], branch=settings["branch"], path=path,
                          quoted_path=quote(path, safe=""))
        out.append(f"[![{alt}]({image})]({url})")
    return " ".join(out)


def setup_cell(settings: dict) -> str:
    return SETUP_CELL.format(repo=settings["repo"])


def notebooks(nb_dir: Path = NB_DIR) -> list[Path]:
    """Every numbered notebook, then the app."""
    found = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    return found + [p for p in [nb_dir / "app_codec.ipynb"] if p.is_file()]


def with_badges(markdown: str, block: str) -> str:
    """``markdown`` (a notebook's first markdown cell) with ``block`` between the badge markers
    right after its title line, replacing an older block."""
    if BADGE_START in markdown and BADGE_END in markdown:
        head, rest = markdown.split(BADGE_START, 1)
        markdown = head.rstrip("\n") + rest.split(BADGE_END, 1)[1]
    title, sep, body = markdown.partition("\n")
    if not title.startswith("#"):
        title, sep, body = "", "", markdown
    parts = [title] if title else []
    return "\n\n".join(parts + [f"{BADGE_START}\n{block}\n{BADGE_END}", body.lstrip("\n")]).rstrip("\n")


def sync_notebook(nb, name: str, settings: dict) -> bool:
    """Put the setup cell and the badges into ``nb`` (in place); True if it changed.

    The badges go into the first markdown cell, under its title, between HTML comments that
    Jupyter does not show, so no cell is added or moved."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "cae_utils" not in code[0].source:
        raise SystemExit(f"{name}: its first code cell is not the setup cell (it does not import "
                         "cae_utils); fix the notebook by hand first.")
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    if not markdown:
        raise SystemExit(f"{name}: no markdown cell for the badges.")
    changed = False
    if code[0].source != setup_cell(settings):
        code[0].source, changed = setup_cell(settings), True
    block = badges(settings, f"notebooks/{name}") + "\n\n*" + ALONE_LINE + "*"
    new = with_badges(markdown[0].source, block)
    if markdown[0].source != new:
        markdown[0].source, changed = new, True
    return changed


def version_ranges(dependencies: list[str]) -> str:
    """"TensorFlow >= 2.16, Keras >= 3.x, ..." from the declared dependencies."""
    names = {"tensorflow": "TensorFlow", "keras": "Keras", "numpy": "numpy", "pillow": "Pillow",
             "scipy": "SciPy", "scikit-image": "scikit-image", "constriction": "constriction",
             "imagecodecs": "imagecodecs"}
    parts = []
    for dep in dependencies:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*([^;]*)", dep)
        name, spec = match.group(1).lower(), match.group(2).strip()
        if name in names and spec:
            parts.append(f"{names[name]} {spec.replace('>=', '≥ ').replace(',<', ', < ')}")
    return ", ".join(parts)


def readme_block(settings: dict) -> str:
    pythons = settings["pythons"]
    tested = f"{pythons[0]}–{pythons[-1]}" if len(pythons) > 1 else pythons[0]
    return "\n".join([
        badges(settings, "notebooks/01_data.ipynb"), "",
        f"**{ALONE_LINE}**", "",
        f"Tested on Python {tested}. The pinned versions in `requirements.txt` are what `make` "
        f"installs; the package declares the ranges that pass the tests: "
        f"{version_ranges(settings['dependencies'])}.",
    ])


def sync_readme(text: str, settings: dict) -> str:
    if README_START not in text or README_END not in text:
        raise SystemExit(f"README.md lacks the {README_START} / {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{readme_block(settings)}\n{README_END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    args = ap.parse_args(argv)
    settings = course_settings()
    stale = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        if sync_notebook(nb, path.name, settings):
            stale.append(path)
            if not args.check:
                tmp = path.with_name(f".{path.name}.tmp")
                nbformat.write(nb, tmp)
                tmp.replace(path)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = sync_readme(text, settings)
    if new != text:
        stale.append(readme)
        if not args.check:
            tmp = readme.with_name(f".{readme.name}.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(readme)
    for path in stale:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    if not stale:
        print("notebooks and README are up to date")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())

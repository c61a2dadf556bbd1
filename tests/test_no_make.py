"""The README's "Without make" commands (Windows, or no make) work as documented.

Each command below is first looked up in the README's table, so the documentation and this
test cannot drift apart, then run with this Python in place of the venv's ``python``: the
codec's command line (encode, decode, info), student copies, one notebook run in quick mode
(on a copy, so the committed notebook is untouched), the test command, a new venv and its
removal, and the modules behind ``lab`` and ``app``. Installing the pinned packages (minutes,
from the network) is left to ``make venv`` and CI.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def documented() -> list[str]:
    """Every command in the README's "Without make" section (the code spans of its table)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Without make\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| ---", "| `make` |"))]
    return [m for cells in rows for m in re.findall(r"`([^`]+)`", cells[2])]


def run_doc(documented, command: str, cwd=ROOT, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``command`` (which must be in the README) with this Python as ``python``."""
    assert command in documented, f"not documented in README.md's Without make: {command}"
    args = shlex.split(command)
    assert args[0] == "python"
    full_env = {**os.environ, "CAE_QUICK": "1", **(env or {})}
    done = subprocess.run([sys.executable, *args[1:]], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_every_make_target_has_a_line(documented):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M)) - {"help", "chromium"}
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Without make\n", 1)[1]
    missing = sorted(t for t in targets if f"| `make {t}` |" not in text and f"| `make {t} " not in text)
    assert not missing, f"make targets without a documented equivalent: {missing}"
    assert len(documented) >= 15


def test_encode_decode_and_info(documented, tmp_path):
    from PIL import Image

    digit = np.zeros((28, 28), np.uint8)
    digit[5:23, 12:16] = 255  # a "1"
    Image.fromarray(digit).save(tmp_path / "digit.png")
    out = run_doc(documented, "python -m caecodec encode digit.png out.cae --quality 3", cwd=tmp_path)
    assert "wrote out.cae" in out.stdout and (tmp_path / "out.cae").stat().st_size < 200
    out = run_doc(documented, "python -m caecodec decode out.cae back.png", cwd=tmp_path)
    assert Image.open(tmp_path / "back.png").size == (28, 28)
    out = run_doc(documented, "python -m caecodec info out.cae", cwd=tmp_path)
    assert "version 1" in out.stdout and "quality 3" in out.stdout


def test_student_copies(documented, tmp_path):
    """The documented ``--out DIR`` form, with a folder of the test's own."""
    assert "python scripts/make_student.py --out DIR" in documented
    done = subprocess.run([sys.executable, "scripts/make_student.py", "--out", str(tmp_path / "student")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    copies = sorted(p.name for p in (tmp_path / "student").glob("*.ipynb"))
    assert copies == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_one_notebook_runs_in_quick_mode(documented, mnist_dir):
    """``python scripts/run_notebooks.py NOTEBOOK`` on a copy inside the course folder (a
    git-ignored .no_make_test_* folder), so the committed notebook keeps its outputs."""
    first = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))[0]
    folder = ROOT / f".no_make_test_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        shutil.copy2(first, folder / first.name)
        command = "python scripts/run_notebooks.py notebooks/01_data.ipynb"
        assert command in documented
        done = subprocess.run([sys.executable, "scripts/run_notebooks.py", str(folder / first.name)], cwd=ROOT,
                              env={**os.environ, "CAE_QUICK": "1", "CAE_MNIST_DIR": str(mnist_dir)},
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "Running 1 notebooks in QUICK mode" in done.stdout and re.search(r"All \d+ notebooks ran in", done.stdout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_test_command(documented):
    """``python -m pytest tests``, narrowed to one small file (the whole suite would run this test again)."""
    assert "python -m pytest tests" in documented and "python -m pytest" in documented
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gpu_switch.py", "-q"], cwd=ROOT,
                          env={**os.environ, "CAE_QUICK": "1"}, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-2000:]


def test_a_new_venv_and_its_removal(documented, tmp_path):
    done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", ".venv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".venv" / "pyvenv.cfg").is_file()
    run_doc(documented, "python -c \"import shutil; shutil.rmtree('.venv')\"", cwd=tmp_path)
    assert not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("module", ["jupyterlab", "voila"])
def test_the_modules_behind_lab_and_app_start(documented, module):
    assert any(c.startswith(f"python -m {module} ") for c in documented)
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and re.match(r"\d+\.\d+", done.stdout.strip()), done.stderr

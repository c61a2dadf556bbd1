"""The student copies of the notebooks (``make student``): no solutions, no outputs, still runnable.

``scripts/make_student.py`` copies every numbered notebook (``notebooks/[0-9][0-9]_*.ipynb``)
with the cells tagged ``solution`` dropped, the code of the cells tagged ``exercise``
replaced by a placeholder, and every output cleared. These tests

* check that each original notebook is classroom-ready: a "You will learn" cell at the top,
  and at least two exercises, each with its statement and a ``<details>`` solution;
* run the script into a temporary folder (its ``--out`` option) and compare every copy
  with its original: nothing of a solution left, no outputs, no nbval markers, exercise
  cells empty, every other cell kept in order;
* check that these checks can fail, on a small notebook broken on purpose;
* (marked ``slow``) execute every student copy top to bottom in quick mode
  (``CAE_QUICK=1``), as a student pressing "Run All" would. ``make test`` runs it; skip it
  locally with ``pytest -m "not slow"``.

The copies are written into a temporary folder *inside* the project (``.student_test_*``,
git-ignored, deleted afterwards): every notebook's setup cell finds the project root by
walking up from its working folder to the folder that holds ``cae_utils.py``.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]


def _load_make_student():
    spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_student = _load_make_student()
SOLUTION_DETAILS = re.compile(r"<details\b[^>]*>\s*<summary\b[^>]*>\s*solution", re.IGNORECASE)


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


# --------------------------------------------------------------------------------------
# The checks, as functions that return a list of problems (empty = fine), so that the
# test at the end can show that each of them catches what it should.
# --------------------------------------------------------------------------------------

def original_problems(nb) -> list[str]:
    """What keeps a teacher's notebook from being classroom-ready (see the module docstring)."""
    problems = []
    cells = nb.cells
    if not any(c.cell_type == "markdown" and "You will learn" in c.source for c in cells[:3]):
        problems.append('no "You will learn" cell at the top (one of the first three cells)')
    exercise_at = [i for i, c in enumerate(cells) if "exercise" in tags(c)]
    if len(exercise_at) < 2:
        problems.append(f"{len(exercise_at)} cell(s) tagged 'exercise'; at least 2 are needed")
    for n, i in enumerate(exercise_at):
        cell = cells[i]
        if cell.cell_type != "code":
            problems.append(f"cell {i} is tagged 'exercise' but is a {cell.cell_type} cell, not code")
        statement = next((c for c in reversed(cells[:i]) if c.cell_type == "markdown"), None)
        if statement is None or tags(statement) or "exercise" not in statement.source.lower():
            problems.append(f"exercise cell {i} has no untagged markdown statement of the exercise before it")
        end = exercise_at[n + 1] if n + 1 < len(exercise_at) else len(cells)
        if not any(c.cell_type == "markdown" and "solution" in tags(c) and SOLUTION_DETAILS.search(c.source)
                   for c in cells[i + 1:end]):
            problems.append(f"exercise cell {i} has no markdown solution "
                            "(tagged 'solution', with <details><summary>Solution</summary>) after it")
    for i, c in enumerate(cells):
        if "solution" in tags(c) and "exercise" in tags(c):
            problems.append(f"cell {i} is tagged both 'solution' and 'exercise'")
    return problems


def student_problems(original, student) -> list[str]:
    """How a student copy differs from what ``make_student`` promises for ``original``."""
    problems = []
    if not student.cells or "Student copy" not in student.cells[0].source:
        problems.append("the first cell is not the 'Student copy' banner")
    body = student.cells[1:]
    for i, c in enumerate(body, start=1):
        if "solution" in tags(c):
            problems.append(f"cell {i} is tagged 'solution'")
        if SOLUTION_DETAILS.search(c.source) or ("<details" in c.source.lower() and "solution" in c.source.lower()):
            problems.append(f"cell {i} holds a <details> block with a solution")
        if "NBVAL" in c.source:
            problems.append(f"cell {i} still carries an nbval marker")
        if c.cell_type == "code":
            if c.get("outputs"):
                problems.append(f"cell {i} has outputs")
            if c.get("execution_count") is not None:
                problems.append(f"cell {i} has an execution count")
            if "exercise" in tags(c) and c.source.strip() != make_student.PLACEHOLDER.strip():
                problems.append(f"exercise cell {i} holds more than the placeholder: {c.source[:60]!r}")
    if "widgets" in student.metadata:
        problems.append("the notebook metadata still holds widget states")
    kept = [c for c in original.cells if "solution" not in tags(c)]
    if len(body) != len(kept):
        problems.append(f"{len(body)} cells after the banner, but the original has {len(kept)} non-solution cells")
    else:
        for i, (o, s) in enumerate(zip(kept, body), start=1):
            if o.get("id") != s.get("id") or o.cell_type != s.cell_type:
                problems.append(f"cell {i} is not the original's cell {o.get('id')} ({o.cell_type})")
            elif "exercise" not in tags(o) and make_student.without_test_markers(o.source) != s.source:
                problems.append(f"cell {i} ({o.get('id')}) changed its source")
    return problems


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_dir():
    """Student copies of all numbered notebooks, written by make_student.py --out."""
    out = Path(tempfile.mkdtemp(prefix=".student_test_", dir=ROOT))
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_student.py"), "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"make_student.py failed:\n{proc.stdout}\n{proc.stderr}"
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------

def test_there_are_numbered_notebooks():
    assert NAMES, f"no notebooks matching [0-9][0-9]_*.ipynb in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("name", NAMES)
def test_original_has_learning_goals_and_exercises(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert original_problems(nb) == []


def test_make_student_writes_a_copy_of_every_notebook(student_dir):
    written = sorted(p.name for p in student_dir.glob("*.ipynb"))
    assert written == NAMES
    assert not list(student_dir.glob(".*.tmp")), "make_student.py left temporary files behind"


@pytest.mark.parametrize("name", NAMES)
def test_student_copy_has_no_solutions_and_no_outputs(name, student_dir):
    original = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    student = nbformat.read(student_dir / name, as_version=4)
    nbformat.validate(student)
    assert student_problems(original, student) == []
    n_exercises = sum("exercise" in tags(c) for c in original.cells)
    assert sum("exercise" in tags(c) for c in student.cells) == n_exercises


def _tiny_teacher_notebook():
    """A small classroom-ready notebook: learning goals, two exercises with solutions."""
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell("# Title"),
             v4.new_markdown_cell("**You will learn**\n\n- one thing\n- another"),
             v4.new_code_cell("x = 1")]
    for n in (1, 2):
        cells += [v4.new_markdown_cell(f"### Exercise {n} (easy): add one"),
                  v4.new_code_cell("# start here", metadata={"tags": ["exercise"]}),
                  v4.new_markdown_cell("<details><summary>Solution</summary>\n\n```python\nx + 1\n```\n\n</details>",
                                       metadata={"tags": ["solution"]}),
                  v4.new_code_cell("x + 1", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})]
    for c in cells:
        if c.cell_type == "code":
            c.execution_count = 1
            c.outputs = [v4.new_output("stream", name="stdout", text="2\n")]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {"state": {}}
    return nb


def _student_of(nb):
    student = make_student.student_copy(copy.deepcopy(nb))
    student.cells.insert(0, nbformat.v4.new_markdown_cell(make_student.BANNER.format(name="tiny.ipynb")))
    return student


def test_the_checks_catch_broken_notebooks():
    teacher = _tiny_teacher_notebook()
    assert original_problems(teacher) == []
    good = _student_of(teacher)
    assert student_problems(teacher, good) == []

    def broken_copy(edit):
        student = copy.deepcopy(good)
        edit(student)
        return student_problems(teacher, student)

    leaked_solution = copy.deepcopy(teacher.cells[5])            # the first markdown solution
    assert broken_copy(lambda s: s.cells.insert(5, leaked_solution))
    assert broken_copy(lambda s: setattr(s.cells[4], "source", teacher.cells[5].source))  # in a statement
    assert broken_copy(lambda s: setattr(s.cells[3], "outputs", teacher.cells[2].outputs))
    assert broken_copy(lambda s: setattr(s.cells[3], "execution_count", 3))
    assert broken_copy(lambda s: setattr(s.cells[5], "source", "x + 1"))       # exercise cell not emptied
    assert broken_copy(lambda s: s.cells.pop(4))                                # a cell lost
    assert broken_copy(lambda s: s.cells.pop(0))                                # no banner
    assert broken_copy(lambda s: s.metadata.update(widgets={"state": {}}))
    assert broken_copy(lambda s: setattr(s.cells[3], "source", "# NBVAL_CHECK_OUTPUT\nx = 1"))

    def broken_teacher(edit):
        nb = copy.deepcopy(teacher)
        edit(nb)
        return original_problems(nb)

    assert broken_teacher(lambda nb: setattr(nb.cells[1], "source", "Goals: ..."))
    assert broken_teacher(lambda nb: nb.cells[4].metadata.pop("tags"))          # only one exercise left
    assert broken_teacher(lambda nb: nb.cells[5].metadata.pop("tags"))          # solution not tagged
    assert broken_teacher(lambda nb: setattr(nb.cells[5], "source", "x + 1"))   # solution without <details>
    assert broken_teacher(lambda nb: nb.cells[3].metadata.update(tags=["solution"]))  # statement hidden


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_student_copy_runs_top_to_bottom_in_quick_mode(name, student_dir, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("CAE_QUICK", "1")        # the kernel inherits this process's environment
    nb = nbformat.read(student_dir / name, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(student_dir)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"student copy of {name} failed in quick mode (run from {student_dir.name}/):\n"
                    f"{str(exc)[-3000:]}")
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), "not every code cell ran"
    assert not [o for c in code_cells for o in c.outputs if o.output_type == "error"]

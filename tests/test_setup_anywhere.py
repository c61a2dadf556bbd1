"""The setup cell that works anywhere (issue 12): in a clone, and in a notebook opened alone.

Fast tests (``make test``):

* every notebook's first code cell is the one setup cell, and the badges in the notebooks and
  the README follow the repository URL in pyproject.toml (``scripts/sync_notebooks.py``);
* what ``course_env`` decides to install on a Colab-like machine, a bare one and a GPU one,
  and that it never installs or replaces TensorFlow, Keras or numpy that are there;
* offline (or without git), the setup cell fails with one sentence and no traceback.

The whole flow (``make test-anywhere``, ``CAE_TEST_ANYWHERE=1``; needs PyPI and several
minutes): a fresh virtual environment on another Python with the core stack preinstalled at
versions other than our pins (``tests/anywhere_stack.txt``), every notebook copied alone into
an empty folder, and the repository URL pointing at a git repository made from this working
tree. Each notebook must then run top to bottom in quick mode. A run without a package index
must fail with one sentence and install nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import course_env  # noqa: E402
import sync_notebooks  # noqa: E402

HEAVY = os.environ.get("CAE_TEST_ANYWHERE", "") not in ("", "0")
heavy = pytest.mark.skipif(not HEAVY, reason="needs PyPI and several minutes: make test-anywhere "
                                              "(CAE_TEST_ANYWHERE=1) runs it")
LINUX = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.12",
         "python_full_version": "3.12.1", "os_name": "posix", "platform_system": "Linux",
         "implementation_name": "cpython", "platform_python_implementation": "CPython",
         "platform_release": "", "platform_version": "", "implementation_version": "3.12.1"}


# --------------------------------------------------------------------------------------
# The one setup cell and the badges (scripts/sync_notebooks.py)
# --------------------------------------------------------------------------------------

def test_notebooks_and_readme_are_in_sync_with_pyproject():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_notebooks.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, ("run `python scripts/sync_notebooks.py`:\n" + done.stdout + done.stderr)


def old_style_notebook() -> nbformat.NotebookNode:
    """A notebook as they were before issue 12: title, then the parent-folder search."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 07 · Something new"),
                nbformat.v4.new_code_cell(
                    "import sys, pathlib\nROOT = next(p for p in [pathlib.Path.cwd(), "
                    "*pathlib.Path.cwd().parents] if (p / \"cae_utils.py\").exists())\n"
                    "sys.path.insert(0, str(ROOT))\nimport cae_utils as cu"),
                nbformat.v4.new_code_cell("x = cu.load_mnist()")]
    return nb


def fork_settings(url="https://github.com/a-teacher/cae-fork"):
    return {**sync_notebooks.course_settings(), "repo": url, "slug": url.split("github.com/")[1]}


def test_sync_writes_the_setup_cell_and_badges_once():
    nb, settings = old_style_notebook(), fork_settings()
    assert sync_notebooks.sync_notebook(nb, "07_new.ipynb", settings) is True
    assert len(nb.cells) == 3 and nb.cells[0].source.startswith("# 07 · Something new\n\n<!-- badges:start -->\n")
    badges = nb.cells[0].source
    assert "colab.research.google.com/github/a-teacher/cae-fork/blob/main/notebooks/07_new.ipynb" in badges
    assert "kaggle.com/kernels/welcome?src=https://github.com/a-teacher/cae-fork/blob/main/notebooks/07_new.ipynb" in badges
    assert "mybinder.org/v2/gh/a-teacher/cae-fork/main?labpath=notebooks%2F07_new.ipynb" in badges
    setup = nb.cells[1].source
    assert setup == sync_notebooks.setup_cell(settings)
    assert 'os.environ.get("CAE_COURSE_REPO", "https://github.com/a-teacher/cae-fork")' in setup
    assert nb.cells[2].source == "x = cu.load_mnist()"  # other cells untouched
    before = nbformat.writes(nb)
    assert sync_notebooks.sync_notebook(nb, "07_new.ipynb", settings) is False  # idempotent
    assert nbformat.writes(nb) == before
    # a changed URL (a fork of the fork) rewrites both, and only those
    assert sync_notebooks.sync_notebook(nb, "07_new.ipynb", fork_settings("https://github.com/b/c")) is True
    assert "github.com/b/c/blob/main" in nb.cells[0].source and '"https://github.com/b/c"' in nb.cells[1].source
    assert nb.cells[0].source.count("<!-- badges:start -->") == 1 and "a-teacher" not in nb.cells[0].source


def test_sync_refuses_a_notebook_whose_first_code_cell_is_not_the_setup_cell():
    nb = old_style_notebook()
    nb.cells.insert(1, nbformat.v4.new_code_cell("print('hello')"))
    with pytest.raises(SystemExit, match="first code cell is not the setup cell"):
        sync_notebooks.sync_notebook(nb, "07_new.ipynb", fork_settings())


def test_the_repository_url_must_be_a_github_url(tmp_path):
    text = (ROOT / "pyproject.toml").read_text()
    url = sync_notebooks.course_settings()["repo"]
    (tmp_path / "pyproject.toml").write_text(text.replace(url, "https://gitlab.com/x/y"))
    with pytest.raises(SystemExit, match="github.com"):
        sync_notebooks.course_settings(tmp_path)


def test_the_readme_names_the_tested_pythons_and_ranges():
    settings = sync_notebooks.course_settings()
    block = sync_notebooks.readme_block(settings)
    assert f"Tested on Python {settings['pythons'][0]}" in block and "TensorFlow ≥ " in block
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert block in readme
    # the first screen: the badges and the two commands come before the first section
    first_screen = readme.split("\n## ", 1)[0]
    assert "Open In Colab" in first_screen and "run the first code cell" in first_screen
    assert "make run" in first_screen and "make test" in first_screen


# --------------------------------------------------------------------------------------
# What course_env installs (pure decisions, no pip)
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def linux_requirements():
    return course_env.course_requirements(course_env.declared_requirements(ROOT), machine=LINUX)


def minimum(reqs, name) -> str:
    spec = next(r.specifier for r in reqs if r.name.lower() == name)
    return next(s.version for s in spec if s.operator == ">=")


def test_requirements_include_the_course_extra_but_not_the_gpu_one(linux_requirements):
    names = {r.name.lower() for r in linux_requirements}
    assert {"keras", "numpy", "pillow", "constriction", "imagecodecs", "matplotlib", "ipywidgets"} <= names
    assert "tensorflow" in names and not any(r.extras for r in linux_requirements)


def test_on_a_colab_like_machine_only_the_missing_libraries_are_installed(linux_requirements):
    installed = {r.name.lower(): None for r in linux_requirements}
    installed.update({"keras": "3.99.0", "numpy": "2.9.0", "matplotlib": "3.99.0",
                      "pillow": "0.1", "scipy": "99.0"})  # Pillow too old: upgraded
    to_install, kept, problems = course_env.plan(linux_requirements, installed, ("tensorflow", "2.99.0"))
    names = {t.split(">")[0].split("=")[0].split("[")[0] for t in to_install}
    assert names == {"pillow", "imagecodecs", "constriction", "scikit-image", "ipywidgets"}
    assert not any(n.startswith(("tensorflow", "keras", "numpy")) for n in to_install)
    assert kept == {"tensorflow": "2.99.0", "keras": "3.99.0", "numpy": "2.9.0"} and not problems


def test_a_kept_library_below_the_minimum_is_reported_never_replaced(linux_requirements):
    installed = {r.name.lower(): "9999.0" for r in linux_requirements}
    installed["keras"] = "2.15.0"
    to_install, kept, problems = course_env.plan(linux_requirements, installed, ("tensorflow-cpu", "2.15.1"))
    assert to_install == []
    assert kept == {"tensorflow-cpu": "2.15.1", "keras": "2.15.0", "numpy": "9999.0"}
    problems = sorted(problems)
    assert len(problems) == 2 and problems[0].startswith("keras 2.15.0 (the course needs keras>=")
    assert problems[1].startswith("tensorflow-cpu 2.15.1 (the course needs tensorflow>=")


@pytest.mark.parametrize("machine, gpu, wheel", [
    (LINUX, False, "tensorflow-cpu"),
    (LINUX, True, "tensorflow[and-cuda]"),
    ({**LINUX, "sys_platform": "darwin", "platform_machine": "arm64"}, False, "tensorflow"),
    ({**LINUX, "sys_platform": "win32", "platform_machine": "AMD64"}, False, "tensorflow"),
])
def test_without_tensorflow_the_wheel_fits_the_machine(linux_requirements, machine, gpu, wheel):
    assert course_env.tensorflow_wheel(machine, nvidia_driver=gpu) == wheel
    to_install, kept, _ = course_env.plan(linux_requirements, {}, None, wheel)
    assert f"{wheel}>={minimum(linux_requirements, 'tensorflow')}" in to_install
    assert kept == {}


def test_the_setup_error_shows_as_one_line():
    assert course_env.SetupError("x y")._render_traceback_() == ["SetupError: x y"]


# --------------------------------------------------------------------------------------
# Running the setup cell in a kernel
# --------------------------------------------------------------------------------------

RUNNER = r'''
import json, pathlib, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
path, kernel = pathlib.Path(sys.argv[1]), sys.argv[2]
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, timeout=1500, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}})
start = time.perf_counter()
try:
    client.execute()
    error = None
except CellExecutionError as exc:
    error = str(exc)[-4000:]
setup = next(c for c in nb.cells if c.cell_type == "code")
print("@@" + json.dumps({"seconds": time.perf_counter() - start, "error": error, "outputs": setup.outputs}))
'''


def run_alone(python, notebook: Path, env: dict, kernel="python3", timeout=3000) -> dict:
    """Run ``notebook`` top to bottom with ``python``'s nbclient in its own folder; return
    ``seconds``, ``error`` (None when it ran through) and the setup cell's ``outputs``."""
    done = subprocess.run([str(python), "-c", RUNNER, str(notebook), kernel], env=env, cwd=notebook.parent,
                          capture_output=True, text=True, timeout=timeout)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("@@")), None)
    assert line is not None, done.stderr[-3000:]
    return json.loads(line[2:])


def stream_text(outputs, name="stdout") -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream" and o["name"] == name)


def error_output(outputs) -> dict | None:
    return next((o for o in outputs if o["output_type"] == "error"), None)


def setup_only_notebook(folder: Path) -> Path:
    """A notebook holding the badges and the setup cell of notebook 01, alone in ``folder``."""
    nb = nbformat.read(ROOT / "notebooks" / "01_data.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"][:1]
    nb.cells[0].outputs = []
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "setup_only.ipynb")
    return folder / "setup_only.ipynb"


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAE_COURSE_REPO")}
    env.update({"CAE_QUICK": "1", "PYTHONDONTWRITEBYTECODE": "1"}, **extra)
    return env


@pytest.mark.parametrize("case", ["unreachable", "no git"])
def test_offline_the_setup_cell_fails_with_one_sentence(tmp_path, case):
    notebook = setup_only_notebook(tmp_path / "alone")
    repo = "https://127.0.0.1:9/nobody/cae-course.git"  # refused at once, on this machine
    env = base_env(CAE_COURSE_REPO=repo)
    if case == "no git":
        bare = tmp_path / "bin"
        bare.mkdir()
        env["PATH"] = str(bare)  # the kernel is started by absolute path; git is not found
    result = run_alone(sys.executable, notebook, env, timeout=300)
    assert result["error"] is not None
    printed = stream_text(result["outputs"])
    assert printed.startswith(f"Opened alone: fetching the course from {repo} into "), printed
    err = error_output(result["outputs"])
    assert err["ename"] == "SetupError"
    assert len(err["traceback"]) == 1 and "Traceback" not in err["traceback"][0]
    line = err["traceback"][0]
    assert line.startswith(f"SetupError: Could not fetch the course from {repo} (")
    assert line.endswith("check the internet connection (on Kaggle: Settings > Internet on) and run this cell again.")
    assert ("No such file or directory: 'git'" if case == "no git" else "unable to access") in line
    assert "\n" not in line.strip()
    assert not (notebook.parent / "cae-course").exists()


# --------------------------------------------------------------------------------------
# The whole flow in a fresh virtual environment (make test-anywhere)
# --------------------------------------------------------------------------------------

def other_python() -> str:
    """The Python for the fresh environment: $CAE_ANYWHERE_PYTHON, else pyenv's 3.13."""
    chosen = os.environ.get("CAE_ANYWHERE_PYTHON")
    if chosen:
        return chosen
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python"), reverse=True):
        return str(candidate)
    pytest.fail("no other Python found: set CAE_ANYWHERE_PYTHON to a Python 3.12 or 3.13")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def pip_versions(python) -> dict[str, str]:
    done = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True,
                          text=True, check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A new venv with tests/anywhere_stack.txt: the core stack at versions unlike our pins."""
    venv = tmp_path_factory.mktemp("anywhere") / "venv"
    start = time.perf_counter()
    subprocess.run([other_python(), "-m", "venv", str(venv)], check=True)
    python = venv_python(venv)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(ROOT / "tests" / "anywhere_stack.txt")], check=True, timeout=1800)
    subprocess.run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "cae-alone"],
                   check=True, capture_output=True)
    print(f"\nfresh environment on {subprocess.check_output([str(python), '-V'], text=True).strip()} "
          f"ready in {time.perf_counter() - start:.0f} s")
    return python


@pytest.fixture(scope="module")
def course_repo(tmp_path_factory) -> str:
    """A git repository holding this working tree (tracked and new files, as they are now),
    as a file:// URL: the "local clone of this repository" the setup cell fetches."""
    src = tmp_path_factory.mktemp("course_repo") / "cae-course"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    git = ["git", "-C", str(src), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True)
    return src.as_uri()


def data_env(course_repo: str, **extra) -> dict:
    shared = ROOT.parent / "shared" / "data"
    return base_env(CAE_COURSE_REPO=course_repo,
                    CAE_MNIST_DIR=os.environ.get("CAE_MNIST_DIR", str(shared / "mnist")),
                    CAE_PHOTO_DIR=os.environ.get("CAE_PHOTO_DIR", str(shared / "kodak-gray256")),
                    **extra)


def copy_alone(notebook: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(notebook, folder / notebook.name)
    return folder / notebook.name


@heavy
def test_without_a_package_index_the_setup_fails_with_one_sentence(fresh_env, course_repo, tmp_path):
    before = pip_versions(fresh_env)
    notebook = copy_alone(ROOT / "notebooks" / "01_data.ipynb", tmp_path / "offline")
    env = data_env(course_repo, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    env.pop("PIP_FIND_LINKS", None)
    result = run_alone(fresh_env, notebook, env, kernel="cae-alone", timeout=600)
    err = error_output(result["outputs"])
    assert err is not None and err["ename"] == "SetupError" and len(err["traceback"]) == 1
    assert err["traceback"][0].startswith("SetupError: pip could not install the course package from ")
    assert err["traceback"][0].endswith("check the internet connection and run this cell again.")
    assert pip_versions(fresh_env) == before  # nothing installed, nothing replaced


def alone_notebooks() -> list[Path]:
    """Whatever numbered notebooks exist now, then the app."""
    return sync_notebooks.notebooks()


TIMES: dict[str, float] = {}


@heavy
@pytest.mark.parametrize("notebook", alone_notebooks(), ids=lambda p: p.stem)
def test_a_notebook_opened_alone_runs_top_to_bottom(fresh_env, course_repo, tmp_path_factory, notebook):
    before = pip_versions(fresh_env)
    tf_name = next(n for n in course_env.TENSORFLOW_NAMES if n in before)
    folder = tmp_path_factory.mktemp(f"alone_{notebook.stem}")
    copied = copy_alone(notebook, folder)
    result = run_alone(fresh_env, copied, data_env(course_repo), kernel="cae-alone")
    TIMES[notebook.stem] = round(result["seconds"], 1)
    assert result["error"] is None, result["error"]
    printed = stream_text(result["outputs"])
    course = folder / "cae-course"
    assert printed.startswith(f"Opened alone: fetching the course from {course_repo} into {course}, "), printed
    assert f"Course ready in {course.resolve()}: installed caecodec" in printed
    kept = ", ".join(f"{n} {before[n]}" for n in (tf_name, "keras", "numpy"))
    assert f"kept {kept} as they were." in printed
    assert "QUICK mode (CAE_QUICK=1)" in printed and "Training runs on the CPU." in printed
    after = pip_versions(fresh_env)
    for name in (tf_name, "keras", "numpy"):
        assert after[name] == before[name], f"{name} was replaced"
    assert [n for n in course_env.TENSORFLOW_NAMES if n in after] == [tf_name], "a second TensorFlow"
    assert (course / "cae_utils.py").is_file()


@heavy
def test_a_second_notebook_beside_the_first_reuses_the_course(fresh_env, course_repo, tmp_path):
    """As on Colab, where every notebook opens in /content: the course is fetched once."""
    first = copy_alone(ROOT / "notebooks" / "app_codec.ipynb", tmp_path / "content")
    run_alone(fresh_env, first, data_env(course_repo), kernel="cae-alone")
    second = copy_alone(sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))[0], tmp_path / "content")
    result = run_alone(fresh_env, second, data_env(course_repo), kernel="cae-alone")
    assert result["error"] is None, result["error"]
    printed = stream_text(result["outputs"])
    assert "Opened alone" not in printed
    assert printed.startswith(f"Course ready in {(tmp_path / 'content' / 'cae-course').resolve()}: "
                              "installed nothing (all there); kept ")


@heavy
def test_report_the_times(fresh_env):
    """Not a check: prints the measured time of each notebook run alone (and writes it to
    results/quick/setup_anywhere_times.json)."""
    python = subprocess.check_output([str(fresh_env), "-V"], text=True).strip()
    versions = pip_versions(fresh_env)
    report = {"python": python, "seconds": TIMES, "cpus": os.cpu_count(),
              "versions": {n: versions.get(n) for n in ("tensorflow", "tensorflow-cpu", "keras", "numpy",
                                                         "pillow", "imagecodecs", "constriction", "scipy",
                                                         "scikit-image", "matplotlib", "ipywidgets")}}
    out = ROOT / "results" / "quick" / "setup_anywhere_times.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + json.dumps(report, indent=1))


def test_the_compat_pins_are_the_declared_minimums():
    """requirements-compat.txt (make test-compat) installs exactly the lower ends that
    pyproject.toml declares, so the declared ranges are the tested ones."""
    from test_environment import parse_requirements

    pins = {}
    for line in parse_requirements((ROOT / "requirements-compat.txt").read_text()):
        spec = line.split(";")[0].strip()
        name, version = spec.split("==")
        pins[name.lower()] = version
    declared = course_env.course_requirements(course_env.declared_requirements(ROOT), machine=LINUX)
    for req in declared:
        name = "tensorflow-cpu" if req.name.lower() == "tensorflow" else req.name.lower()
        assert pins.get(name) == minimum(declared, req.name.lower()), (req, pins.get(name))

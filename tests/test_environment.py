"""The two install routes (pip: requirements.txt, conda: environment.yml) must agree,
every version must be pinned, and git must ignore the venv and downloaded data."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def _normalise(requirement: str) -> str:
    """One requirement string with runs of whitespace collapsed (markers kept)."""
    return re.sub(r"\s+", " ", requirement).strip()


def _strip_comment(line: str) -> str:
    """Drop a trailing ' # comment' (a '#' preceded by whitespace, as in YAML and pip)."""
    return re.sub(r"(^|\s+)#.*$", "", line).rstrip()


def parse_requirements(text: str) -> list[str]:
    reqs = []
    for line in text.splitlines():
        line = _strip_comment(line).strip()
        if line:
            reqs.append(_normalise(line))
    return reqs


def parse_environment_yml(text: str) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip requirements) of an environment.yml, by line logic.

    The pip list is the run of '- ' items indented deeper than the '- pip:' line.
    """
    conda, pip = [], []
    in_deps = in_pip = False
    pip_indent = None
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0:
            in_deps = item == "dependencies:"
            in_pip = False
            continue
        if not in_deps:
            continue
        if in_pip:
            if indent > pip_indent and item.startswith("- "):
                pip.append(_normalise(item[2:]))
                continue
            in_pip = False
        if item == "- pip:":
            in_pip, pip_indent = True, indent
        elif item.startswith("- "):
            conda.append(_normalise(item[2:]))
    return conda, pip


@pytest.fixture(scope="module")
def requirements(project_root) -> list[str]:
    return parse_requirements((project_root / "requirements.txt").read_text())


@pytest.fixture(scope="module")
def environment(project_root) -> tuple[list[str], list[str]]:
    return parse_environment_yml((project_root / "environment.yml").read_text())


def test_parsers_on_a_small_example():
    req = parse_requirements('# c\n\nfoo==1.0   # why\nbar==2; sys_platform == "linux"\n')
    assert req == ["foo==1.0", 'bar==2; sys_platform == "linux"']
    conda, pip = parse_environment_yml(
        "name: x\ndependencies:\n  - python=3.11  # v\n  - pip\n  - pip:\n"
        '    - foo==1.0      # why\n    - bar==2; sys_platform == "linux"  # m\nother: 1\n')
    assert conda == ["python=3.11", "pip"]
    assert pip == ["foo==1.0", 'bar==2; sys_platform == "linux"']


def test_requirements_not_empty(requirements, environment):
    assert len(requirements) >= 5
    assert len(environment[1]) >= 5
    assert len(set(requirements)) == len(requirements), "no duplicate lines"


def test_pip_list_in_environment_yml_equals_requirements_txt(requirements, environment):
    _, pip = environment
    only_req = sorted(set(requirements) - set(pip))
    only_env = sorted(set(pip) - set(requirements))
    assert not only_req and not only_env, (
        f"requirements.txt and environment.yml disagree:\n only in requirements.txt: {only_req}"
        f"\n only in environment.yml: {only_env}")


def test_environment_yml_with_yaml_parser_agrees(project_root, environment):
    yaml = pytest.importorskip("yaml")  # PyYAML is not a course dependency
    data = yaml.safe_load((project_root / "environment.yml").read_text())
    deps = data["dependencies"]
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1
    assert sorted(_normalise(r) for r in pip_lists[0]) == sorted(environment[1])
    assert sorted(_normalise(d) for d in deps if isinstance(d, str)) == sorted(environment[0])


_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!*-]+$")


def test_every_requirement_is_pinned(requirements):
    for req in requirements:
        spec = req.split(";", 1)[0].strip()
        assert _PINNED.match(spec), f"not pinned with '==': {req!r}"


def test_requirements_are_valid_pep508_and_tensorflow_is_chosen_once(requirements):
    packaging_requirements = pytest.importorskip("packaging.requirements")
    parsed = [packaging_requirements.Requirement(r) for r in requirements]
    for req in parsed:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", str(req)
    platforms = [
        {"sys_platform": "linux", "platform_machine": "x86_64"},
        {"sys_platform": "linux", "platform_machine": "aarch64"},
        {"sys_platform": "darwin", "platform_machine": "arm64"},
        {"sys_platform": "win32", "platform_machine": "AMD64"},
    ]
    for env in platforms:
        active = [r for r in parsed if r.marker is None or r.marker.evaluate(env)]
        names = [r.name.lower() for r in active]
        assert len(names) == len(set(names)), f"a package is pinned twice on {env}"
        tf = [n for n in names if n in ("tensorflow", "tensorflow-cpu")]
        assert len(tf) == 1, f"exactly one TensorFlow wheel on {env}, got {tf}"
        assert "keras" in names and "numpy" in names


def test_environment_yml_pins_python_311(environment):
    conda, _ = environment
    pythons = [d for d in conda if re.match(r"python\b", d)]
    assert pythons == ["python=3.11"]


def _gitignore_lines(project_root) -> list[str]:
    text = (project_root / ".gitignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_gitignore_ignores_venv_and_data(project_root):
    lines = _gitignore_lines(project_root)
    assert {".venv", ".venv/", "/.venv", "/.venv/"} & set(lines), ".venv must be ignored"
    assert {"data/*", "/data/*", "data/**", "/data/**"} & set(lines), "data/ contents must be ignored"
    # ... but the folder's README stays tracked (a plain 'data/' would hide it for good)
    assert {"data/", "/data/", "data"}.isdisjoint(lines)
    assert "!data/README.md" in lines or "!/data/README.md" in lines


def test_gitignore_with_git_check_ignore(project_root):
    git = shutil.which("git")
    if git is None or not (project_root / ".git").exists():
        pytest.skip("git or the .git folder is not available")

    def ignored(rel: str) -> bool:
        # read-only; --no-index also answers for files that are tracked or do not exist
        done = subprocess.run([git, "-C", str(project_root), "check-ignore", "-q", "--no-index", rel],
                              capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode == 0

    assert ignored(".venv/bin/python")
    assert ignored("data/mnist/train-images-idx3-ubyte.gz")
    assert ignored("data/mnist.npz")
    assert not ignored("data/README.md")
    assert not ignored("cae_utils.py")
    assert not ignored("tests/test_environment.py")
    assert not ignored("requirements.txt")

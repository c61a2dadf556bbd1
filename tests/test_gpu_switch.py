"""The GPU switch (issue 12): `make venv GPU=1` installs requirements-gpu.txt, whose only
difference from requirements.txt is TensorFlow's CUDA build; `pip install "caecodec[gpu]"`
does the same for the package. No GPU here, so what is tested is what can be: the files,
the commands make would run, and pip's requirement resolution (``pip install --dry-run
--report``), which must pick the CUDA build under the switch and the CPU build without it.

The resolutions download the wheels they look at (this index gives no metadata-only files),
about 3 GB for the CUDA libraries, so they run only in ``make test-anywhere``
(``CAE_TEST_ANYWHERE=1``) and share one pip cache folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_environment import parse_requirements

ROOT = Path(__file__).resolve().parents[1]
HEAVY = os.environ.get("CAE_TEST_ANYWHERE", "") not in ("", "0")
heavy = pytest.mark.skipif(not HEAVY, reason="downloads about 3 GB from PyPI: make test-anywhere "
                                              "(CAE_TEST_ANYWHERE=1) runs it")
CUDA_LIBS = ("nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12")


def read(name: str) -> list[str]:
    return parse_requirements((ROOT / name).read_text())


def test_gpu_requirements_differ_from_the_pins_only_in_tensorflow():
    cpu, gpu = read("requirements.txt"), read("requirements-gpu.txt")
    only_cpu, only_gpu = sorted(set(cpu) - set(gpu)), sorted(set(gpu) - set(cpu))
    assert len(only_cpu) == 1 and only_cpu[0].startswith("tensorflow-cpu=="), only_cpu
    assert len(only_gpu) == 1 and only_gpu[0].startswith("tensorflow[and-cuda]=="), only_gpu
    # same version and the same platform marker
    assert only_gpu[0] == only_cpu[0].replace("tensorflow-cpu==", "tensorflow[and-cuda]==")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("gpu, wanted, unwanted", [
    ("", "-r requirements.txt", "requirements-gpu.txt"),
    ("GPU=1", "-r requirements-gpu.txt", "-r requirements.txt"),
])
def test_make_venv_installs_the_file_the_switch_names(tmp_path, gpu, wanted, unwanted):
    """``make -n`` prints the commands without running them (the venv path is a fresh one)."""
    args = ["make", "-n", "-C", str(ROOT), "venv", f"VENV={tmp_path / 'venv'}"] + ([gpu] if gpu else [])
    printed = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert wanted in printed and unwanted not in printed
    assert ("uninstall --quiet --yes tensorflow-cpu" in printed) == bool(gpu)
    assert ("installed-requirements-gpu" in printed) == bool(gpu)


def test_the_package_extra_names_the_cuda_build():
    from packaging.requirements import Requirement

    sys.path.insert(0, str(ROOT))
    import course_env

    extra = [Requirement(r) for r in course_env.tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]]
    assert [(r.name, r.extras) for r in extra] == [("tensorflow", {"and-cuda"})]
    linux = {"sys_platform": "linux", "platform_machine": "x86_64"}
    assert extra[0].marker.evaluate(linux)
    assert not extra[0].marker.evaluate({"sys_platform": "darwin", "platform_machine": "arm64"})


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pip_cache")


def resolve(pip_cache: Path, tmp_path: Path, *args: str) -> dict[str, str]:
    """What ``pip install ARGS`` would install into an empty environment: {name: version}."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                           "--quiet", "--disable-pip-version-check", "--cache-dir", str(pip_cache),
                           "--report", str(report), *args],
                          capture_output=True, text=True, timeout=3000, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    items = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"] for i in items}


def tf_pin() -> str:
    return next(r for r in read("requirements.txt") if r.startswith("tensorflow-cpu==")).split("==")[1].split(";")[0]


@heavy
def test_pip_resolves_the_gpu_pins_to_tensorflow_with_cuda(pip_cache, tmp_path):
    chosen = resolve(pip_cache, tmp_path, "-r", "requirements-gpu.txt")
    print("\nrequirements-gpu.txt ->", {n: v for n, v in chosen.items() if n.startswith(("tensorflow", "nvidia"))})
    assert chosen["tensorflow"] == tf_pin() and "tensorflow-cpu" not in chosen
    assert all(lib in chosen for lib in CUDA_LIBS)


@heavy
def test_pip_resolves_the_pins_to_the_cpu_build(pip_cache, tmp_path):
    chosen = resolve(pip_cache, tmp_path, "-r", "requirements.txt")
    print("\nrequirements.txt ->", {n: v for n, v in chosen.items() if n.startswith(("tensorflow", "nvidia"))})
    assert chosen["tensorflow-cpu"] == tf_pin() and "tensorflow" not in chosen
    assert not any(n.startswith("nvidia-") for n in chosen)


@heavy
@pytest.mark.parametrize("target, cuda", [(".[gpu]", True), (".", False)])
def test_pip_resolves_the_package_with_and_without_the_gpu_extra(pip_cache, tmp_path, target, cuda):
    chosen = resolve(pip_cache, tmp_path, target)
    print(f"\n{target} ->", {n: v for n, v in chosen.items() if n.startswith(("tensorflow", "nvidia"))})
    assert "tensorflow" in chosen and "tensorflow-cpu" not in chosen and "caecodec" in chosen
    assert all(lib in chosen for lib in CUDA_LIBS) == cuda
    assert any(n.startswith("nvidia-") for n in chosen) == cuda

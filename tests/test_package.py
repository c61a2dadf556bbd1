"""The codec package's shape: layered modules with no import cycle, each of modest size,
and the import limits a user relies on (reading a header needs no Keras; decoding needs
no widgets and no plotting code). Also the `cae` command and `python -m caecodec`."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "caecodec"
MAX_LINES = 520  # "about 500"


def package_modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")}


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports (``from . import x``, ``from .x import y``),
    at module level or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("caecodec"):
            rest = node.module.split(".")[1:]
            found.update(rest[:1] or [a.name for a in node.names])
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, stack):
        if state.get(node) == 1:
            return stack[stack.index(node):] + [node]
        if state.get(node) == 2:
            return None
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            cycle = visit(dep, stack + [node])
            if cycle:
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        cycle = visit(node, [])
        if cycle:
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = {name: imports_of(path) & set(package_modules()) for name, path in package_modules().items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_stays_readable_in_size():
    sizes = {name: len(path.read_text().splitlines()) for name, path in package_modules().items()}
    too_long = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    cu_lines = len((ROOT / "cae_utils.py").read_text().splitlines())
    assert cu_lines <= 600, f"cae_utils.py has {cu_lines} lines; it should be a short table of contents"


def test_the_bytes_layer_imports_no_keras():
    """formats, entropy, fileio, images, classic, bdrate and metrics never import Keras
    or the backend, directly or through another package module."""
    graph = {name: imports_of(path) & set(package_modules()) for name, path in package_modules().items()}

    def reach(name, seen=None):
        seen = set() if seen is None else seen
        for dep in graph[name]:
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    # (mnist imports the backend only inside its Keras-download fallback, so it is not listed)
    for name in ("errors", "paths", "fileio", "formats", "entropy", "photo_context", "metrics", "bdrate", "images",
                 "classic"):
        assert "backend" not in reach(name) | {name}, name
        source = (PACKAGE / f"{name}.py").read_text()
        module_level = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in module_level:
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in ("keras", "tensorflow") for n in names), (name, names)


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter from the project root; it prints one JSON line."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """A v1 (learned codec) and a v2 (photo codec) .cae file made through the command line."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("cae_files")
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(folder / "digit.png")
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(folder / "photo.png")
    for args in (["encode", "digit.png", "digit.cae", "--quality", "2"],
                 ["encode", "photo.png", "photo.cae", "--mode", "photo", "--quality", "2"]):
        proc = subprocess.run([sys.executable, "-m", "caecodec", *args], cwd=folder, capture_output=True,
                              text=True, timeout=300, env={**__import__("os").environ,
                                                           "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
    return folder


def test_reading_a_header_imports_no_keras(digit_files):
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); "
            "from caecodec import cli; "
            f"line = cli.describe_file({str(digit_files / 'digit.cae')!r}); "
            f"line2 = cli.describe_file({str(digit_files / 'photo.cae')!r}); "
            "print(json.dumps({'line': line, 'line2': line2, "
            "'keras': 'keras' in sys.modules, 'tf': 'tensorflow' in sys.modules}))")
    out = run_python(code)
    assert "version 1" in out["line"] and "28x28" in out["line"] and "quality 2" in out["line"]
    assert "version 3" in out["line2"] and "context model" in out["line2"] and "56x40" in out["line2"]
    assert not out["keras"] and not out["tf"]


def test_decoding_imports_no_widgets_and_no_plotting_code(digit_files, tmp_path):
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); "
            "from caecodec.cli import main; "
            f"rc = main(['decode', {str(digit_files / 'digit.cae')!r}, {str(tmp_path / 'a.png')!r}]); "
            f"rc2 = main(['decode', {str(digit_files / 'photo.cae')!r}, {str(tmp_path / 'b.png')!r}]); "
            "print(json.dumps({'rc': [rc, rc2], 'widgets': 'ipywidgets' in sys.modules, "
            "'plots': [m for m in ('caecodec.plots', 'caecodec.rd_plots', 'caecodec.app', 'cae_utils') "
            "if m in sys.modules]}))")
    out = run_python(code)
    assert out["rc"] == [0, 0]
    # (Keras itself imports matplotlib.pyplot when it is installed, so that is not checked.)
    assert not out["widgets"] and out["plots"] == []
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()


def test_cae_info_on_the_command_line(digit_files):
    proc = subprocess.run([sys.executable, "-m", "caecodec", "info", "digit.cae"], cwd=digit_files,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "quality 2" in proc.stdout
    (digit_files / "broken.cae").write_bytes((digit_files / "digit.cae").read_bytes()[:-3] + b"xyz")
    proc = subprocess.run([sys.executable, "-m", "caecodec", "info", "broken.cae"], cwd=digit_files,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "checksum" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_package_ships_its_models():
    models = PACKAGE / "models"
    assert (models / "improved_cae.keras").is_file()
    assert sorted(p.name for p in models.glob("rd_q*.keras"))
    text = (ROOT / "pyproject.toml").read_text()
    assert 'cae = "caecodec.cli:main"' in text and "models/*.keras" in text


def test_importing_the_package_alone_imports_nothing_heavy():
    out = run_python(f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); import caecodec; "
                     "print(json.dumps({'mods': sorted(m for m in sys.modules if m.startswith('caecodec.')),"
                     " 'np': 'numpy' in sys.modules}))")
    assert out["mods"] == []

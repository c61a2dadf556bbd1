"""The prose of the notebooks tells the truth and lets a student look things up.

* Every measured number quoted in a notebook's markdown (a number with a unit, a decimal
  point, a thousands separator or a percent sign) comes from an output of that notebook
  or from the results JSON (results/*.json, benchmarks/results/*.json, the models' cards):
  prose cannot drift away from what the code measured. A prose number with d decimals
  matches a measured value that rounds to it.
* Every named paper and term from :data:`LINKED_TERMS` is linked where a notebook (or the
  README) first names it.
* Committed outputs hold no absolute machine paths.

Each check is a function returning the problems it found; the last tests show that each
catches a notebook broken on purpose.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / "app_codec.ipynb"]

UNITS = r"(?:dB|B\b|bytes?|bits?|bpp|bits? per pixel|%|s\b|seconds?|ms\b|minutes?|min\b|MiB|KiB|GiB|MB|kB|x\b)"
NUMBER = re.compile(r"(?<![\w.])([-+−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+−]?\d+\.\d+|[-+−]?\d+)(?![\w.]*\w)"
                    r"(\s*" + UNITS + r")?")
YEAR = re.compile(r"^(19|20)\d\d$")


def strip_markup(text: str) -> str:
    """Markdown without what is not prose: fenced code, inline code, link targets, HTML
    tags, LaTeX math, and <details> solution blocks (they quote code and its output)."""
    text = re.sub(r"<details>.*?</details>", " ", text, flags=re.S | re.I)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return text


def quoted_numbers(markdown: str) -> list[tuple[str, float, int]]:
    """Measured-looking numbers in prose: ``(as written, value, decimals)``.

    A number counts when it has a unit after it, a decimal point, a thousands separator,
    or is 1,000 or more; years (1900-2099) without a unit and small bare integers
    (counts, section numbers, "28x28") do not.
    """
    found = []
    for m in NUMBER.finditer(strip_markup(markdown)):
        raw, unit = m.group(1), (m.group(2) or "").strip()
        plain = raw.replace(",", "").replace("−", "-")
        value = float(plain)
        decimals = len(plain.split(".")[1]) if "." in plain else 0
        if YEAR.match(plain) and not unit:
            continue
        if not (unit or decimals or "," in raw or abs(value) >= 1000):
            continue
        if unit == "x" and decimals == 0 and abs(value) < 1000:  # "28x28", "8x8" are shapes
            continue
        found.append((raw + (" " + unit if unit else ""), value, decimals))
    return found


def output_numbers(nb) -> list[float]:
    """Every number in the notebook's outputs (text, HTML and Markdown displays)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append(out["text"] if isinstance(out["text"], str) else "".join(out["text"]))
            for key in ("text/plain", "text/markdown", "text/html"):
                data = out.get("data", {}).get(key)
                if data:
                    texts.append(data if isinstance(data, str) else "".join(data))
    return numbers_in_text("\n".join(texts))


def numbers_in_text(text: str) -> list[float]:
    values = []
    for m in re.finditer(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d*\.\d+(?:e[-+]?\d+)?|[-+]?\d+(?:e[-+]?\d+)?", text):
        try:
            values.append(float(m.group(0).replace(",", "")))
        except ValueError:
            pass
    return values


def json_numbers() -> list[float]:
    """Every number in the committed results: the notebooks' and benchmarks' JSON and the
    models' cards."""
    values = []

    def walk(obj):
        if isinstance(obj, bool):
            return
        if isinstance(obj, (int, float)):
            values.append(float(obj))
        elif isinstance(obj, str):
            values.extend(numbers_in_text(obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(k)
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for folder in (ROOT / "results", ROOT / "benchmarks" / "results", ROOT / "caecodec" / "models"):
        for path in sorted(folder.glob("*.json")):
            walk(json.loads(path.read_text()))
    return values


def matches(value: float, decimals: int, measured) -> bool:
    """A prose number matches a measured one that rounds to it (also as a percentage of a
    fraction, and ignoring sign, since prose says "-15.8%" as "15.8% fewer")."""
    target = abs(value)
    for x in measured:
        for candidate in (abs(x), abs(x) * 100):
            if round(candidate, decimals) == round(target, decimals):
                return True
    return False


def unsupported_numbers(nb, measured_elsewhere) -> list[str]:
    """The prose numbers of ``nb`` that no output of it and no results JSON supports."""
    measured = sorted(set(output_numbers(nb)) | set(measured_elsewhere))
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for raw, value, decimals in quoted_numbers(cell.source):
            if not matches(value, decimals, measured):
                problems.append(f"markdown cell {i}: {raw!r} is not in any output or results JSON")
    return problems


#: Named papers and terms that must be linked where first named: (name pattern, what the
#: link must point to, as a regex over the URL).
LINKED_TERMS = {
    r"Ball[ée] et al\.,? 2017": r"arxiv\.org/abs/1611\.01704|openreview",
    r"Ball[ée] et al\.,? 2018": r"arxiv\.org/abs/1802\.01436|openreview",
    r"\bGDN\b": r"arxiv\.org/abs/1511\.06281|1611\.01704",
    r"Bj[øo]ntegaard": r"itu\.int|VCEG|bjontegaard|bd-rate|wikipedia|github",
    r"\bKodak\b": r"r0k\.us|kodak",
    r"\bSSIM\b": r"ece\.uwaterloo|ieee|wikipedia|10\.1109/TIP\.2003\.819861|cns\.nyu",
    r"\bAdam\b": r"arxiv\.org/abs/1412\.6980",
    r"Mentzer et al": r"arxiv\.org/abs/2003\.10184",
    r"PixelCNN": r"arxiv\.org/abs/1601\.06759|arxiv\.org/abs/1606\.05328|arxiv\.org/abs/1701\.05517",
}
LINK = re.compile(r"\[[^\]]*\]\((https?://[^)\s]+)\)|<(https?://[^>\s]+)>|(?<!\()(https?://\S+)")


def paragraphs(markdown: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", markdown) if p.strip()]


def unlinked_terms(markdown_cells: list[str]) -> list[str]:
    """Terms of :data:`LINKED_TERMS` whose first mention has no fitting link in its paragraph."""
    problems = []
    text = [re.sub(r"```.*?```", " ", c, flags=re.S) for c in markdown_cells]
    paras = [p for cell in text for p in paragraphs(cell)]
    for term, target in LINKED_TERMS.items():
        first = next((p for p in paras if re.search(term, re.sub(r"\]\([^)]*\)", "]", p))), None)
        if first is None:
            continue
        urls = [next(g for g in m.groups() if g) for m in LINK.finditer(first)]
        if not any(re.search(target, u, re.I) for u in urls):
            problems.append(f"{term!r} is first named without a link to {target!r}: {first.strip()[:100]!r}")
    return problems


MACHINE_PATH = re.compile(r"(/work/|/root/|/home/[a-z]|/tmp/|/Users/[A-Z]|[A-Z]:\\\\Users)")


def machine_paths(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            blob = json.dumps(out)
            m = MACHINE_PATH.search(blob)
            if m:
                found.append(f"cell {i}: output holds a machine path near {blob[max(0, m.start() - 30):m.end() + 40]!r}")
    return found


@pytest.fixture(scope="module")
def measured_elsewhere():
    return json_numbers()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_was_measured(path, measured_elsewhere):
    nb = nbformat.read(path, as_version=4)
    assert unsupported_numbers(nb, measured_elsewhere) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_named_papers_and_terms_are_linked(path):
    nb = nbformat.read(path, as_version=4)
    assert unlinked_terms([c.source for c in nb.cells if c.cell_type == "markdown"]) == []


def test_the_readme_links_named_papers_and_terms():
    assert unlinked_terms([(ROOT / "README.md").read_text()]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_hold_no_machine_paths(path):
    assert machine_paths(nbformat.read(path, as_version=4)) == []


def test_the_checks_catch_broken_notebooks():
    v4 = nbformat.v4
    code = v4.new_code_cell("print(psnr)")
    code.outputs = [v4.new_output("stream", name="stdout", text="PSNR 26.62 dB, 1,234 bytes, 45% smaller\n")]
    good = v4.new_notebook(cells=[v4.new_markdown_cell("The CAE reaches 26.6 dB with 1,234 bytes, "
                                                       "45% smaller; a 28x28 digit, 3 layers, in 2018."),
                                  code])
    assert unsupported_numbers(good, []) == []
    bad = v4.new_notebook(cells=[v4.new_markdown_cell("The CAE reaches 27.1 dB."), code])
    assert unsupported_numbers(bad, []) == ["markdown cell 0: '27.1 dB' is not in any output or results JSON"]
    assert unsupported_numbers(v4.new_notebook(cells=[v4.new_markdown_cell("It took 12 s."), code]), [])
    assert unsupported_numbers(v4.new_notebook(cells=[v4.new_markdown_cell("It took 12 s."), code]), [12.0]) == []

    assert unlinked_terms(["We use [GDN](https://arxiv.org/abs/1511.06281) layers.\n\nGDN again."]) == []
    assert unlinked_terms(["We use GDN layers.\n\nLater: [GDN](https://arxiv.org/abs/1511.06281)."])
    assert unlinked_terms(["As in Ballé et al. 2018 [paper](https://example.com/x)."])

    leaky = v4.new_code_cell("print(path)")
    leaky.outputs = [v4.new_output("stream", name="stdout", text="wrote /work/main/figures/x.png\n")]
    assert machine_paths(v4.new_notebook(cells=[leaky]))
    assert machine_paths(v4.new_notebook(cells=[code])) == []

"""Notebook 03's training panel (``cu.TrainingPanel``) in JupyterLab, in a real browser.

Open the notebook, clear the stored outputs, run only the cells the panel needs (setup,
data, the panel itself), move the epochs slider with the keyboard, press Train, and check
that the kernel got the new value, that the loss plot is drawn live and that the result
line appears. Screenshot: ``figures/browser_training_panel.png``. The notebook file must
be left exactly as it was (autosave is off in the test's JupyterLab).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "figures"
NOTEBOOK = "notebooks/03_training.ipynb"
RUN_TIMEOUT = 180_000    # ms for one cell (loading MNIST with a busy CPU)
TRAIN_TIMEOUT = 300_000  # ms for the panel's quick-mode training


def _cells_to_run() -> tuple[list[int], int]:
    """(indices of the cells the panel needs, index of the panel cell), from the file, so
    the test follows the notebook if cells are added or moved."""
    cells = json.loads((ROOT / NOTEBOOK).read_text())["cells"]
    source = ["".join(c["source"]) for c in cells]
    panel = next(i for i, s in enumerate(source) if "cu.TrainingPanel(" in s and "display(" in s)
    setup = next(i for i, s in enumerate(source) if "import cae_utils as cu" in s)
    data = next(i for i, s in enumerate(source) if "cu.load_mnist(" in s)
    assert setup < data < panel and cells[panel]["cell_type"] == "code"
    return [setup, data, panel], panel


def _run_cell(page, cell, count: int) -> None:
    """Run one cell as a person does (click into it, Shift+Enter) and wait for its prompt
    to show execution count ``count`` (outputs were cleared, so counts start at 1)."""
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")
    expect(prompt).to_have_text(f"[{count}]:", timeout=RUN_TIMEOUT)
    stderr = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    for i in range(stderr.count()):
        assert "Traceback" not in stderr.nth(i).inner_text(), stderr.nth(i).inner_text()


# Records, while training runs, every text the panel's status line shows and how often a
# new loss-plot image is put into the panel.
WATCH_PANEL_JS = """(panel) => {
  window.__panel = {status: [], images: 0};
  const record = () => {
    for (const el of panel.querySelectorAll('.widget-html-content')) {
      const text = el.innerText.trim();
      if (text && !window.__panel.status.includes(text)) window.__panel.status.push(text);
    }
  };
  new MutationObserver((mutations) => {
    for (const m of mutations)
      for (const node of m.addedNodes)
        if (node.nodeType === 1 && (node.tagName === 'IMG' || node.querySelector('img')))
          window.__panel.images += 1;
    record();
  }).observe(panel, {subtree: true, childList: true, characterData: true});
  record();
}"""


def test_training_panel_slider_train_and_live_plot(jupyter_lab, page):
    notebook_file = ROOT / NOTEBOOK
    original = notebook_file.read_bytes()
    to_run, panel_index = _cells_to_run()
    try:
        page.goto(f"{jupyter_lab.url}/lab/tree/{NOTEBOOK}?token={jupyter_lab.token}")
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
        expect(notebook.locator(".jp-Cell").nth(panel_index)).to_be_attached(timeout=120_000)
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_attached(
            timeout=120_000)

        # Edit > Clear Outputs of All Cells: no stale outputs, execution counts reset.
        page.locator(".lm-MenuBar-item", has_text="Edit").click()
        page.locator(".lm-Menu-item", has_text="Clear Outputs of All Cells").click()
        cells = notebook.locator(".jp-Cell")
        expect(cells.nth(panel_index).locator(".jp-OutputArea-output")).to_have_count(0)

        for count, index in enumerate(to_run, start=1):
            _run_cell(page, cells.nth(index), count)

        cell = cells.nth(panel_index)
        panel = cell.locator(".jp-OutputArea-output .widget-vbox").first
        expect(panel).to_be_visible(timeout=60_000)
        expect(panel).to_contain_text("Choose settings and press Train")
        expect(panel.locator("img")).to_have_count(0)  # no loss plot before training

        # The epochs slider: focus its handle and press the right arrow once (1 -> 2).
        epochs = panel.locator(".widget-slider", has=page.locator("label", has_text="epochs"))
        readout = epochs.locator(".widget-readout")
        expect(readout).to_have_text("1")
        epochs.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(readout).to_have_text("2")

        panel.element_handle().evaluate(WATCH_PANEL_JS)
        panel.get_by_role("button", name="Train").click()
        status = panel.locator(".widget-html-content").first
        expect(status).to_contain_text("Done in", timeout=TRAIN_TIMEOUT)

        seen = page.evaluate("() => window.__panel")
        assert any("Training: 2 epoch(s)" in s for s in seen["status"]), (
            f"the kernel did not train with the slider's 2 epochs; status lines seen: {seen['status']}")
        assert seen["images"] >= 2, f"the loss plot was drawn {seen['images']} time(s), not live"
        plot = panel.locator(".widget-output img")
        expect(plot).to_have_count(1)
        box = plot.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, box
        text = status.inner_text()
        assert re.search(r"Done in \d+ s: test PSNR \d+\.\d+ dB", text), text
        psnr = float(re.search(r"PSNR (\d+\.\d+) dB", text).group(1))
        assert 10 < psnr < 40, text
        assert panel.get_by_role("button", name="Train").is_enabled()

        cell.scroll_into_view_if_needed()
        FIGURES.mkdir(exist_ok=True)
        cell.screenshot(path=str(FIGURES / "browser_training_panel.png"))
    finally:
        page.close()
        if notebook_file.read_bytes() != original:
            notebook_file.write_bytes(original)  # put the course's notebook back, then fail
            pytest.fail(f"{NOTEBOOK} was written by the browser session (autosave?); restored")

"""The classroom codec app (notebooks/app_codec.ipynb) served by Voila, in a real browser.

The page first shows the app's default result (the notebook calls ``app.run()``). The
test moves the quality slider with the keyboard, presses Encode and checks the new
numbers: the .cae size and PSNR, and JPEG, WebP, JPEG XL and JPEG 2000 either at a size
not above the .cae file or with the note that they cannot go that small. Then an uploaded PNG is encoded,
and an uploaded text file gives a clear message instead of a traceback. Screenshot:
``figures/browser_codec_app.png``.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from playwright.sync_api import expect

FIGURES = Path(__file__).resolve().parents[2] / "figures"
LOAD_TIMEOUT = 180_000    # ms: Voila starts a kernel, imports TensorFlow, loads a model
ENCODE_TIMEOUT = 120_000  # ms for one Encode


def _int(text: str) -> int:
    return int(re.sub(r"[^0-9]", "", text))


def _digit_png() -> bytes:
    """A dark "7" drawn on a light 120x90 canvas, as a student's photo of a digit might be."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (90, 120), 235)
    draw = ImageDraw.Draw(img)
    draw.line([(20, 20), (70, 20), (40, 100)], fill=20, width=9)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_codec_app_quality_encode_and_uploads(voila_app, page):
    page.goto(voila_app.url + "/", timeout=LOAD_TIMEOUT)
    app = page.locator(".cae-codec-app")
    expect(app).to_be_visible(timeout=LOAD_TIMEOUT)
    status = app.locator(".widget-html-content").filter(has_text=re.compile("Encod|Cannot|Upload")).first
    expect(app.locator(".cae-app-result")).to_be_visible(timeout=LOAD_TIMEOUT)  # the default run
    expect(app.locator(".cae-app-error")).to_have_count(0)
    first_bytes = _int(app.locator(".cae-app-card[data-codec='cae'] .cae-bytes").inner_text())

    # Quality: focus the slider's handle, two steps to the right.
    quality = app.locator(".widget-slider", has=page.locator("label", has_text="quality"))
    readout = quality.locator(".widget-readout")
    start = int(readout.inner_text())
    quality.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    new_quality = start + 2
    expect(readout).to_have_text(str(new_quality))

    app.get_by_role("button", name="Encode").click()
    expect(status).to_contain_text(f"at quality {new_quality}:", timeout=ENCODE_TIMEOUT)
    result = app.locator(".cae-app-result")
    expect(result).to_be_visible()

    cae_card = result.locator(".cae-app-card[data-codec='cae']")
    cae_bytes = _int(cae_card.locator(".cae-bytes").inner_text())
    assert cae_bytes > first_bytes, (first_bytes, cae_bytes)  # higher quality, bigger file
    assert f"{cae_bytes:,} bytes" in status.inner_text()
    assert re.fullmatch(r"\d+\.\d\d dB", cae_card.locator(".cae-psnr").inner_text())
    expect(cae_card.locator("img")).to_have_count(1)
    expect(result.locator(".cae-app-card[data-codec='original'] img")).to_have_count(1)
    fitted = 0
    for fmt in ("jpeg", "webp", "jxl", "jpeg2000"):
        card = result.locator(f".cae-app-card[data-codec='{fmt}']")
        expect(card).to_have_count(1)
        if card.locator(".cae-bytes").count():
            assert _int(card.locator(".cae-bytes").inner_text()) <= cae_bytes
            assert re.fullmatch(r"\d+\.\d\d dB", card.locator(".cae-psnr").inner_text())
            expect(card.locator("img")).to_have_count(1)
            fitted += 1
        else:
            expect(card.locator(".cae-nofit")).to_contain_text("cannot go this small")
    assert fitted >= 1, "at the higher quality at least one classic codec should fit"
    expect(result.locator("table.cae-app-table tr")).to_have_count(6)  # header, .cae, 4 classic

    FIGURES.mkdir(exist_ok=True)
    page.screenshot(path=str(FIGURES / "browser_codec_app.png"), full_page=True)

    # Upload a drawn digit (a PNG) with the Upload button's file chooser: it is selected
    # and encoded. (The widget's <input type=file> is not in the page; the button opens it.)
    def upload(name: str, mime: str, data: bytes) -> None:
        with page.expect_file_chooser() as chooser:
            app.locator(".widget-upload").click()
        chooser.value.set_files(files=[{"name": name, "mimeType": mime, "buffer": data}])

    upload("my_seven.png", "image/png", _digit_png())
    expect(status).to_contain_text("Uploaded 'my_seven.png'", timeout=ENCODE_TIMEOUT)
    app.get_by_role("button", name="Encode").click()
    expect(status).to_contain_text("your upload 'my_seven.png'", timeout=ENCODE_TIMEOUT)
    expect(app.locator(".cae-app-result")).to_be_visible()

    # Upload something that is not an image: a clear message, no result, no traceback.
    upload("notes.txt", "text/plain", b"these are not pixels\n")
    expect(status).to_contain_text("'notes.txt' is not an image", timeout=ENCODE_TIMEOUT)
    app.get_by_role("button", name="Encode").click()
    expect(app.locator(".cae-app-error")).to_contain_text("is not an image", timeout=ENCODE_TIMEOUT)
    expect(app.locator(".cae-app-result")).to_have_count(0)
    assert "Traceback" not in page.locator("body").inner_text()

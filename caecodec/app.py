"""The classroom codec app: pick or upload an image, choose a mode and a quality,
press Encode (ipywidgets; ``notebooks/app_codec.ipynb``, served by ``make app``).

All the numbers come from :func:`caecodec.matched.compare_at_matched_size`; this module
only builds widgets and HTML, so ``tests/test_app.py`` checks the numbers without a
browser.
"""
from __future__ import annotations

import numpy as np

from . import photo_codec
from .digit_codec import available_qualities
from .errors import CAEError
from .images import image_from_bytes
from .matched import compare_at_matched_size, photo_mode_problem
from .mnist import load_mnist_u8
from .photo_codec import PHOTO_TRAINING_IMAGES

#: The app's picker: MNIST test digits (by index) and photos shipped inside scikit-image.
APP_MNIST_DIGITS = (0, 1, 2, 3, 4, 7)
APP_SAMPLE_PHOTOS = ("camera", "astronaut", "coffee", "coins")
#: Default digit quality: about 130 bytes per digit, where WebP fits under it and JPEG does not.
APP_DEFAULT_DIGIT_QUALITY = 9
_APP_SAMPLES: dict = {}


def app_sample_image(key: str) -> tuple[np.ndarray, str]:
    """A built-in picture of the app: ``"mnist:<test index>"`` or ``"photo:<skimage name>"``.

    Returns ``(uint8 (H, W), description)``. MNIST comes from
    :func:`caecodec.mnist.load_mnist_u8` (so ``$CAE_MNIST_DIR`` or ``data/mnist`` is used as everywhere else); the photos
    are scikit-image's bundled samples, converted to gray (no download).
    """
    if key in _APP_SAMPLES:
        return _APP_SAMPLES[key]
    kind, _, name = key.partition(":")
    if kind == "mnist":
        index = int(name)
        (_, _), (x_test, y_test) = load_mnist_u8()
        if not 0 <= index < len(x_test):
            raise CAEError(f"There is no MNIST test digit #{index}.")
        image = np.asarray(x_test[index], np.uint8)
        sample = (image, f"MNIST test digit #{index} (a {int(y_test[index])})")
    elif kind == "photo" and name in APP_SAMPLE_PHOTOS:
        import skimage.data
        from PIL import Image

        rgb_or_gray = np.asarray(getattr(skimage.data, name)())
        img = Image.fromarray(rgb_or_gray)
        image = np.asarray(img.convert("L"), dtype=np.uint8)  # ITU-R 601 luma, as uploads
        sample = (image, f"the '{name}' photo (scikit-image, in gray)")
    else:
        raise CAEError(f"Unknown sample image {key!r}.")
    _APP_SAMPLES[key] = sample
    return sample


def app_qualities(mode: str) -> list[int]:
    """The qualities the app offers in ``mode`` ("digit" or "photo"); empty if none."""
    if mode == "digit":
        return available_qualities()
    if mode == "photo":
        return [] if photo_mode_problem() else sorted(int(q) for q in photo_codec.photo_qualities())
    raise CAEError(f"Unknown mode {mode!r}; choose 'digit' or 'photo'.")


_APP_NAMES = {"cae": "CAE (.cae)", "jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL",
              "jpeg2000": "JPEG 2000"}
#: What each format's setting is called (JPEG 2000's is OpenJPEG's level, a target PSNR).
_SETTING_NAMES = {"jpeg2000": "level"}


def _png_data_uri(image_u8: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_u8, np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_db(psnr: float) -> str:
    return "lossless" if not np.isfinite(psnr) else f"{psnr:.2f} dB"


def app_result_html(result: dict) -> str:
    """The app's result panel as HTML: four images side by side and a table of numbers."""
    import html

    h, w = result["height"], result["width"]
    show_w = 168 if max(h, w) <= 64 else min(w, 240)  # digits enlarged 6x; photos side by side
    pixelated = "image-rendering:pixelated;" if max(h, w) <= 64 else ""
    style = f"width:{show_w}px;{pixelated}border:1px solid #bbb;display:block"

    def card(key: str, title: str, body: str, image=None) -> str:
        img = f"<img src='{_png_data_uri(image)}' style='{style}' alt='{html.escape(title)}'>" if image is not None else (
            f"<div style='width:{show_w}px;height:{round(show_w * h / w)}px;border:1px dashed #bbb;"
            "display:flex;align-items:center;justify-content:center;color:#777;text-align:center;"
            "padding:6px;box-sizing:border-box'>no file this small</div>")
        return (f"<div class='cae-app-card' data-codec='{key}' style='margin:0 14px 8px 0'>"
                f"<div style='font-weight:bold'>{html.escape(title)}</div>{img}"
                f"<div style='font-size:90%;line-height:1.35'>{body}</div></div>")

    cae = result["cae"]
    cards = [card("original", f"original {w}x{h}",
                  f"raw 8-bit pixels: {result['raw_bytes']:,} bytes", result["original"])]
    rows = []
    for key, r in [("cae", cae), *result["classic"].items()]:
        name = _APP_NAMES.get(key, key)
        if r["fits"]:
            ssim = "" if r["ssim"] is None else f" &middot; SSIM {r['ssim']:.3f}"
            body = (f"<span class='cae-bytes'>{r['bytes']:,} bytes</span> &middot; {r['bpp']:.3f} bpp<br>"
                    f"PSNR <span class='cae-psnr'>{_fmt_db(r['psnr_db'])}</span>{ssim}<br>"
                    f"{_SETTING_NAMES.get(key, 'quality')} {r['quality']}")
            cards.append(card(key, name, body, r["decoded"]))
            ssim_cell = "" if r["ssim"] is None else f"{r['ssim']:.3f}"
            rows.append(f"<tr><td>{name}</td><td>{r['quality']}</td><td>{r['bytes']:,}</td>"
                        f"<td>{r['bpp']:.3f}</td><td>{_fmt_db(r['psnr_db'])}</td><td>{ssim_cell}</td></tr>")
        else:
            body = (f"<span class='cae-nofit'>{name} cannot go this small</span>: its smallest file "
                    f"is {r['smallest_bytes']:,} bytes (quality {r['smallest_quality']}), the .cae "
                    f"file {r['target_bytes']:,} bytes.")
            cards.append(card(key, name, body))
            rows.append(f"<tr><td>{name}</td><td colspan='5'>cannot go this small (smallest file "
                        f"{r['smallest_bytes']:,} bytes)</td></tr>")
    table = ("<style>.cae-app-table td,.cae-app-table th{padding:2px 10px;text-align:right}"
             ".cae-app-table td:first-child,.cae-app-table th:first-child{text-align:left}</style>"
             "<table class='cae-app-table' style='border-collapse:collapse;margin-top:4px'>"
             "<tr><th style='text-align:left'>codec</th><th>setting</th><th>bytes</th>"
             "<th>bits/pixel</th><th>PSNR</th><th>SSIM</th></tr>" + "".join(rows) + "</table>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"])
    names = " and ".join(", ".join(_APP_NAMES.get(k, k) for k in result["classic"]).rsplit(", ", 1))
    explain = (f"{names} are shown at the <b>largest file that is not bigger than the .cae "
               "file</b> (binary search on their quality setting; for JPEG 2000 on OpenJPEG's "
               "level, a target PSNR in dB). PSNR and SSIM are measured against the original "
               "shown on the left.")
    return (f"<div class='cae-app-result'><div style='display:flex;flex-wrap:wrap'>{''.join(cards)}</div>"
            f"{table}<p style='margin:6px 0'>{explain}</p>"
            + (f"<ul style='margin:0'>{notes}</ul>" if notes else "") + "</div>")


def _app_error(message: str) -> str:
    import html

    return f"<span class='cae-app-error' style='color:#b00'><b>Cannot encode:</b> {html.escape(message)}</span>"


class CodecApp:
    """The classroom codec app: pick or upload an image, choose mode and quality, press
    **Encode**; see the reconstruction and JPEG, WebP, JPEG XL and JPEG 2000 at a matched size.

    ``app.widget`` is the box to display (JupyterLab, or Voila via ``make app``);
    :meth:`run` does what the Encode button does, so a headless run shows a result with
    the default settings. Problems (a file that is not an image, photo mode without photo
    models...) end up as a message in ``app.status``, never as a traceback.
    """

    UPLOAD = "upload"

    def __init__(self, mode: str = "digit", quality: int | None = None, source: str | None = None):
        import ipywidgets as w

        self.result: dict | None = None
        self.upload_name: str | None = None
        self.upload_image: np.ndarray | None = None
        self.upload_problem: str | None = None
        options = ([(f"MNIST test digit #{i}", f"mnist:{i}") for i in APP_MNIST_DIGITS]
                   + [(f"photo: {name} (scikit-image)", f"photo:{name}") for name in APP_SAMPLE_PHOTOS]
                   + [("your upload (Upload button)", self.UPLOAD)])
        self.source = w.Dropdown(options=options, value=source or options[0][1], description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.mode = w.ToggleButtons(options=[("digit 28x28", "digit"), ("photo, any size", "photo")],
                                    value="digit", tooltips=["any image -> a 28x28 MNIST-like digit",
                                                             "a grayscale photo of any size"])
        self.mode_note = w.HTML()
        self.quality = w.SelectionSlider(options=[0], value=0, description="quality",
                                         continuous_update=False)
        self.button = w.Button(description="Encode", button_style="primary", icon="compress")
        self.status = w.HTML(value="Choose an image, the mode and the quality, then press <b>Encode</b>.")
        self.output = w.HTML()
        for control in (self.source, self.quality):
            control.style = {"description_width": "70px"}
        self.mode.style.button_width = "125px"
        # ToggleButtons puts its description above the buttons; a label of our own sits beside.
        mode_label = w.HTML("<div style='width:70px;text-align:right;padding-right:8px'>mode</div>")
        self.source.layout.width = "340px"
        self.quality.layout.width = "340px"
        self._photo_problem = photo_mode_problem()
        if self._photo_problem:
            self.mode.disabled = True
            self.mode_note.value = f"<i style='color:#777'>{self._photo_problem}</i>"
        elif mode == "photo" or (source or "").startswith("photo:"):
            self.mode.value = "photo"
        if mode == "photo" and self._photo_problem:
            self.status.value = _app_error(self._photo_problem)
        self._set_qualities(quality)
        self.mode.observe(lambda _change: self._set_qualities(), names="value")
        self.source.observe(self._on_source, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.button.on_click(lambda _button: self.run())
        self.widget = w.VBox([w.HBox([self.source, self.upload]),
                              w.HBox([mode_label, self.mode, self.mode_note]),
                              w.HBox([self.quality, self.button]), self.status, self.output],
                             layout=w.Layout(padding="4px"))
        self.widget.add_class("cae-codec-app")

    # -- widget callbacks ----------------------------------------------------------------
    def _set_qualities(self, wanted: int | None = None) -> None:
        qualities = app_qualities(self.mode.value) or [0]
        if wanted is None:
            current = self.quality.value
            default = APP_DEFAULT_DIGIT_QUALITY if self.mode.value == "digit" else qualities[len(qualities) // 2]
            wanted = current if current in qualities and current != 0 else default
        if wanted not in qualities:
            wanted = qualities[len(qualities) // 2]
        self.quality.options = qualities
        self.quality.value = wanted
        self.quality.disabled = qualities == [0]

    def _on_source(self, change) -> None:
        new = change["new"]
        if not self._photo_problem:
            if new.startswith("photo:"):
                self.mode.value = "photo"
            elif new.startswith("mnist:"):
                self.mode.value = "digit"

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        first = files[0]
        self.load_upload(first.get("name") or "the uploaded file", bytes(first.get("content", b"")))

    def load_upload(self, name: str, data: bytes) -> None:
        """Take an uploaded file (as the Upload button does): check it and select it."""
        self.upload_name, self.upload_image, self.upload_problem = name, None, None
        try:
            self.upload_image = image_from_bytes(data, name=repr(name))
        except CAEError as exc:
            self.upload_problem = str(exc)
        self.source.value = self.UPLOAD
        if self.upload_problem:
            self.status.value = _app_error(self.upload_problem)
            self.output.value = ""
        else:
            h, w = self.upload_image.shape
            self.status.value = (f"Uploaded {name!r} ({len(data):,} bytes, {w}x{h}). "
                                 "Press <b>Encode</b>.")

    # -- the work ------------------------------------------------------------------------
    def current_image(self) -> tuple[np.ndarray, str]:
        """The chosen picture as ``uint8 (H, W)`` and its description; :class:`CAEError` if none."""
        if self.source.value == self.UPLOAD:
            if self.upload_problem:
                raise CAEError(self.upload_problem)
            if self.upload_image is None:
                raise CAEError("No image uploaded yet: press 'Upload image' first, or pick an image.")
            return self.upload_image, f"your upload {self.upload_name!r}"
        return app_sample_image(self.source.value)

    def run(self) -> dict | None:
        """Encode with the current settings (as the Encode button does); the result dict
        of :func:`compare_at_matched_size` plus ``source`` and ``seconds``, or None after
        showing what went wrong."""
        import time

        self.button.disabled = True
        self.status.value = "Encoding..."
        start = time.perf_counter()
        try:
            image, described = self.current_image()
            if self.mode.value == "photo" and self._photo_problem:
                raise CAEError(self._photo_problem)
            result = compare_at_matched_size(image, self.quality.value, self.mode.value)
        except CAEError as exc:
            self.result, self.output.value = None, ""
            self.status.value = _app_error(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001  (the app shows every failure as a message)
            self.result, self.output.value = None, ""
            self.status.value = _app_error(f"unexpected {type(exc).__name__}: {exc}")
            return None
        finally:
            self.button.disabled = False
        result["source"], result["seconds"] = described, time.perf_counter() - start
        name = self.source.value.partition(":")[2]
        if (self.mode.value == "photo" and self.source.value.startswith("photo:")
                and name in PHOTO_TRAINING_IMAGES):
            result["notes"].append(f"'{name}' is one of the photo codec's training images, so the "
                                   "CAE has seen it: upload a photo of your own for a fair comparison.")
        self.result = result
        cae = result["cae"]
        self.status.value = (f"Encoded {described} in {self.mode.value} mode at quality "
                             f"{result['quality']}: the .cae file is <b>{cae['bytes']:,} bytes</b> "
                             f"({cae['bpp']:.3f} bits per pixel), PSNR <b>{_fmt_db(cae['psnr_db'])}</b> "
                             f"({result['seconds']:.1f} s).")
        self.output.value = app_result_html(result)
        return result

"""The classroom codec app (caecodec.app and caecodec.matched, notebooks/app_codec.ipynb),
without a browser: the matched-size search (JPEG, WebP, JPEG XL and JPEG 2000), the
numbers the app shows against the codecs called directly, uploads good and bad, and
photo mode with and without a photo codec. (tests/browser/ drives the same app in
Chromium.)"""
from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cae_utils as cu
from caecodec import app as codec_app, classic, digit_codec, images, matched, metrics as cmetrics, photo_codec


@pytest.fixture(autouse=True)
def fresh_samples(monkeypatch):
    """Every test loads the app's sample images anew (the cache is module-wide)."""
    monkeypatch.setattr(codec_app, "_APP_SAMPLES", {})


@pytest.fixture
def real_mnist(monkeypatch, mnist_dir):
    monkeypatch.setenv("CAE_MNIST_DIR", str(mnist_dir))
    return mnist_dir


@pytest.fixture(scope="module")
def camera_crop() -> np.ndarray:
    image, _ = codec_app.app_sample_image("photo:camera")
    return image[100:228, 200:328].copy()  # 128x128: the man's head and the camera


def seven(size=(90, 120), ink=20, paper=235) -> np.ndarray:
    """A dark "7" drawn on light paper, like a photo of a handwritten digit."""
    img = Image.new("L", size, paper)
    ImageDraw.Draw(img).line([(20, 20), (70, 20), (40, 100)], fill=ink, width=9)
    return np.asarray(img)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def upload_dict(name: str, data: bytes, mime: str = "image/png") -> dict:
    """One entry of ipywidgets 8's FileUpload.value, as the browser sends it."""
    return {"name": name, "type": mime, "size": len(data), "content": memoryview(data),
            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}


class FakePhotoCodec:
    """Stands in for photo_codec.load_photo_codec(q): a whole-file codec (JPEG inside) with the photo
    codec's interface, so the app's photo plumbing is tested whatever models ship."""

    def __init__(self, quality: int):
        self.quality = quality
        self.calls = 0

    def compress(self, image_u8_2d: np.ndarray) -> bytes:
        self.calls += 1
        return classic.classic_encode(image_u8_2d, "jpeg", 10 * self.quality)

    def decompress(self, data: bytes) -> np.ndarray:
        return classic.classic_decode(data)


@pytest.fixture
def fake_photo_codec(monkeypatch):
    codecs = {}

    def load(quality):
        return codecs.setdefault(quality, FakePhotoCodec(quality))

    monkeypatch.setattr(photo_codec, "load_photo_codec", load)
    monkeypatch.setattr(photo_codec, "photo_qualities", lambda: [2, 4])
    return codecs


# --------------------------------------------------------------------------------------
# The matched-size search
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "webp", "jxl", "jpeg2000"])
@pytest.mark.parametrize("which", ["digit", "photo"])
def test_matched_size_fits_and_the_next_quality_does_not(fmt, which, camera_crop):
    image = seven() if which == "digit" else camera_crop
    if which == "digit":
        image, _ = matched.app_digit(image)
    low, high = matched.APP_CLASSIC_QUALITIES[fmt]
    smallest = len(classic.classic_encode(image, fmt, low))
    largest = len(classic.classic_encode(image, fmt, high))
    assert largest > smallest, (fmt, smallest, largest)  # the setting changes the size
    for target in np.linspace(smallest, largest - 1, 7).astype(int):
        r = matched.classic_at_matched_size(image, fmt, int(target))
        assert r is not None and r["fits"] and r["format"] == fmt
        assert r["bytes"] <= target
        assert r["next_quality"] == r["quality"] + 1
        assert len(classic.classic_encode(image, fmt, r["next_quality"])) == r["next_bytes"] > target
        # The file is the real one, decoded as a reader would decode it.
        assert r["data"] == classic.classic_encode(image, fmt, r["quality"]) and len(r["data"]) == r["bytes"]
        assert np.array_equal(r["decoded"], classic.classic_decode(r["data"]))
        mse = np.mean((image / 255.0 - r["decoded"] / 255.0) ** 2)
        assert r["mse"] == pytest.approx(mse) and r["psnr_db"] == pytest.approx(cu.psnr_from_mse(mse))
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / image.size)
        assert 0 < r["ssim"] <= 1
        assert r["files_tried"] <= 2 + int(np.ceil(np.log2(high - low)))  # a binary search


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "jxl", "jpeg2000"])
def test_matched_size_below_the_smallest_file_and_above_the_largest(fmt, camera_crop):
    low, high = matched.APP_CLASSIC_QUALITIES[fmt]
    smallest = len(classic.classic_encode(camera_crop, fmt, low))
    assert matched.classic_at_matched_size(camera_crop, fmt, smallest - 1) is None
    assert matched.classic_at_matched_size(camera_crop, fmt, smallest)["quality"] >= low
    top = matched.classic_at_matched_size(camera_crop, fmt, 10**9)
    assert top["quality"] == high and top["next_quality"] is None and top["next_bytes"] is None


def test_matched_size_refuses_other_formats_and_bad_images(camera_crop):
    with pytest.raises(cu.CAEError, match="png"):
        matched.classic_at_matched_size(camera_crop, "png", 1000)
    with pytest.raises(cu.CAEError, match="2-D uint8"):
        matched.classic_at_matched_size(camera_crop.astype(np.float32), "jpeg", 1000)


# --------------------------------------------------------------------------------------
# The app, digit mode
# --------------------------------------------------------------------------------------

def test_default_run_shows_what_the_codec_really_does(real_mnist):
    app = codec_app.CodecApp()
    assert app.source.value == "mnist:0" and app.mode.value == "digit"
    assert app.quality.value == codec_app.APP_DEFAULT_DIGIT_QUALITY
    assert list(app.quality.options) == digit_codec.available_qualities()
    result = app.run()
    assert result is not None and app.result is result

    # The same digit straight through the codec: same bytes, same reconstruction.
    (_, _), (x_test, y_test) = cu.load_mnist(real_mnist, quick=True)
    digit = cu.to_uint8_images(x_test[0])
    codec = digit_codec.load_codec(codec_app.APP_DEFAULT_DIGIT_QUALITY)
    files = codec.compress(cu.to_float_images(digit[None]))
    decoded = cu.to_uint8_images(codec.decompress(files))[0]
    cae = result["cae"]
    assert np.array_equal(result["original"], digit)
    assert cae["data"] == files[0] and cae["bytes"] == len(files[0])
    assert np.array_equal(cae["decoded"], decoded)
    metrics = cmetrics.rd_metrics(digit[None], decoded[None])
    assert cae["psnr_db"] == pytest.approx(metrics["psnr_db"])
    assert cae["ssim"] == pytest.approx(metrics["ssim"])
    assert cae["bpp"] == pytest.approx(cae["bytes"] * 8 / 784)
    assert result["raw_bytes"] == 784 and result["source"] == f"MNIST test digit #0 (a {y_test[0]})"

    # Classic codecs: a file no bigger than the .cae one, or the smallest they can make.
    for fmt, r in result["classic"].items():
        if r["fits"]:
            assert r["bytes"] <= cae["bytes"] < r["next_bytes"]
        else:
            assert r["smallest_bytes"] > cae["bytes"]
            assert r["smallest_bytes"] == len(classic.classic_encode(digit, fmt, r["smallest_quality"]))

    # ... and the page says it.
    assert f"<b>{cae['bytes']:,} bytes</b>" in app.status.value
    assert f"{cae['psnr_db']:.2f} dB" in app.status.value
    html = app.output.value
    assert list(result["classic"]) == list(matched.APP_FORMATS) == ["jpeg", "webp", "jxl", "jpeg2000"]
    for key in ("original", "cae", *matched.APP_FORMATS):
        assert f"data-codec='{key}'" in html
    for r in [cae, *result["classic"].values()]:
        assert (f"{r['bytes']:,} bytes" if r["fits"] else "cannot go this small") in html
    assert "cae-app-error" not in app.status.value
    assert not app.button.disabled


def test_higher_quality_gives_a_bigger_file_and_higher_psnr(real_mnist):
    app = codec_app.CodecApp()
    low, high = digit_codec.available_qualities()[0], digit_codec.available_qualities()[-1]
    app.quality.value = low
    small = app.run()
    app.quality.value = high
    big = app.run()
    assert small["quality"] == low and big["quality"] == high
    assert big["cae"]["bytes"] > small["cae"]["bytes"]
    assert big["cae"]["psnr_db"] > small["cae"]["psnr_db"]


def test_a_photo_of_a_digit_is_made_mnist_like_first():
    image = seven()
    digit, note = matched.app_digit(image)
    assert digit.shape == (28, 28) and digit.dtype == np.uint8 and "image_to_digit" in note
    expected = cu.to_uint8_images(images.image_to_digit(Image.fromarray(image)))
    assert np.array_equal(digit, expected)
    assert digit[0].max() == 0 and digit.max() == 255  # white ink on black, centred
    ready = digit.copy()
    same, note = matched.app_digit(ready)
    assert np.array_equal(same, ready) and "used as it is" in note


def test_upload_of_a_png_is_selected_and_encoded():
    app = codec_app.CodecApp(source="photo:camera" if matched.photo_mode_problem() else "mnist:0")
    data = png_bytes(seven())
    app.upload.value = (upload_dict("my_seven.png", data),)
    assert app.source.value == app.UPLOAD
    assert "Uploaded 'my_seven.png'" in app.status.value and "90x120" in app.status.value
    app.mode.value = "digit"
    result = app.run()
    assert result is not None and result["source"] == "your upload 'my_seven.png'"
    digit, _ = matched.app_digit(seven())
    assert np.array_equal(result["original"], digit)
    assert result["cae"]["data"] == digit_codec.load_codec(app.quality.value).compress(
        cu.to_float_images(digit[None]))[0]


def test_colour_and_transparent_uploads_become_gray():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200                  # red ...
    rgba[5:15, 5:25, 3] = 255           # ... opaque in the middle, transparent around it
    gray = images.image_from_bytes(png_bytes(rgba, "RGBA"))
    assert gray.shape == (20, 30) and gray.dtype == np.uint8
    assert gray[0, 0] == 255            # transparent -> white paper
    assert gray[10, 10] == round(0.299 * 200)  # red -> its luma


BAD_UPLOADS = [
    ("empty.png", b"", r"is empty \(0 bytes\)"),
    ("notes.txt", b"these are not pixels\n", "is not an image"),
    ("cut.png", png_bytes(seven())[:60], "damaged or truncated"),
    ("fake.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 40, "not an image|damaged or truncated"),
]


@pytest.mark.parametrize("name,data,message", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_give_a_clear_message_not_a_traceback(name, data, message):
    import re

    app = codec_app.CodecApp()
    app.upload.value = (upload_dict(name, data),)  # the widget's observer must not raise
    assert app.source.value == app.UPLOAD
    assert "Cannot encode" in app.status.value and re.search(message, app.status.value)
    assert f"&#x27;{name}&#x27;" in app.status.value  # names the file (HTML-escaped quotes)
    assert app.run() is None and app.result is None
    assert re.search(message, app.status.value) and app.output.value == ""
    assert not app.button.disabled
    with pytest.raises(cu.CAEError, match=message):
        images.image_from_bytes(data, name)


def test_upload_choice_without_an_upload_says_what_to_do():
    app = codec_app.CodecApp()
    app.source.value = app.UPLOAD
    assert app.run() is None
    assert "No image uploaded yet" in app.status.value


def test_an_unexpected_failure_is_shown_not_raised(monkeypatch):
    app = codec_app.CodecApp(source="photo:coins")

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(codec_app, "compare_at_matched_size", broken)
    assert app.run() is None
    assert "unexpected RuntimeError: the disk is on fire" in app.status.value


def test_mnist_missing_is_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("CAE_MNIST_DIR", str(tmp_path / "nowhere"))
    app = codec_app.CodecApp()
    assert app.run() is None
    assert "does not exist" in app.status.value


# --------------------------------------------------------------------------------------
# Photo mode
# --------------------------------------------------------------------------------------

def test_photo_mode_is_switched_off_when_the_models_cannot_be_listed(monkeypatch, camera_crop):
    def broken():
        raise OSError("models folder unreadable")

    monkeypatch.setattr(photo_codec, "photo_qualities", broken)
    assert "listing the photo models failed" in matched.photo_mode_problem()
    app = codec_app.CodecApp(mode="photo")
    assert app.mode.disabled and app.mode.value == "digit"
    assert "not available" in app.mode_note.value and "not available" in app.status.value
    app.source.value = "photo:camera"
    assert app.mode.value == "digit"  # stays in the mode that works
    with pytest.raises(cu.CAEError, match="not available"):
        matched.compare_at_matched_size(camera_crop, 3, "photo")
    assert codec_app.app_qualities("photo") == []


def test_photo_mode_is_switched_off_without_photo_models(monkeypatch):
    monkeypatch.setattr(photo_codec, "load_photo_codec", lambda q: None)
    monkeypatch.setattr(photo_codec, "photo_qualities", lambda: [])
    assert "no photo models" in matched.photo_mode_problem()
    assert codec_app.CodecApp().mode.disabled


def test_photo_mode_with_a_photo_codec(fake_photo_codec):
    app = codec_app.CodecApp()
    assert not app.mode.disabled and app.mode_note.value == ""
    app.source.value = "photo:coins"  # picking a photo switches to photo mode
    assert app.mode.value == "photo" and list(app.quality.options) == [2, 4]
    app.quality.value = 4
    result = app.run()
    assert result is not None, app.status.value
    image, _ = codec_app.app_sample_image("photo:coins")
    assert np.array_equal(result["original"], image) and result["raw_bytes"] == image.size
    expected = FakePhotoCodec(4).compress(image)
    assert result["cae"]["data"] == expected and result["cae"]["bytes"] == len(expected)
    assert np.array_equal(result["cae"]["decoded"], classic.classic_decode(expected))
    for r in result["classic"].values():
        assert r["bytes"] <= result["cae"]["bytes"] if r["fits"] else r["smallest_bytes"] > result["cae"]["bytes"]
    assert "photo mode at quality 4" in app.status.value
    if "coins" in getattr(cu, "PHOTO_TRAINING_IMAGES", ()):
        assert any("training images" in n for n in result["notes"])
    app.source.value = "mnist:1"  # and a digit switches back
    assert app.mode.value == "digit"


def test_big_photos_are_scaled_down_and_tiny_ones_have_no_ssim(fake_photo_codec):
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 256, (30, 50)), np.ones((50, 30))).astype(np.uint8)[:, :1400]
    result = matched.compare_at_matched_size(big, 2, "photo")
    assert result["height"] == matched.APP_MAX_SIDE and result["width"] == round(1400 * matched.APP_MAX_SIDE / 1500)
    assert any("scaled down from 1400x1500" in n for n in result["notes"])
    tiny = matched.compare_at_matched_size(np.full((5, 6), 128, np.uint8), 2, "photo")
    assert tiny["cae"]["ssim"] is None and "<td></td>" in codec_app.app_result_html(tiny)


def test_photo_mode_with_the_shipped_photo_codec(camera_crop):
    if matched.photo_mode_problem():
        pytest.skip(matched.photo_mode_problem())
    quality = photo_codec.photo_qualities()[0]
    result = matched.compare_at_matched_size(camera_crop, quality, "photo")
    codec = photo_codec.load_photo_codec(quality)
    data = codec.compress(camera_crop)
    assert result["cae"]["data"] == data
    assert np.array_equal(result["cae"]["decoded"], codec.decompress(data))
    assert result["cae"]["decoded"].shape == camera_crop.shape
    # JPEG XL and JPEG 2000 sit beside JPEG and WebP, each at the largest file that fits.
    html = codec_app.app_result_html(result)
    for fmt in matched.APP_FORMATS:
        r = result["classic"][fmt]
        if r["fits"]:
            assert r["bytes"] <= len(data) < r["next_bytes"] or r["next_quality"] is None
            assert r["data"] == classic.classic_encode(camera_crop, fmt, r["quality"])
        else:
            assert r["smallest_bytes"] > len(data)
    j2k = result["classic"]["jpeg2000"]
    if j2k["fits"]:
        assert f"level {j2k['quality']}" in html and "JPEG 2000" in html
    assert "JPEG XL" in html


def test_unknown_mode_and_sample():
    with pytest.raises(cu.CAEError, match="Unknown mode"):
        matched.compare_at_matched_size(seven(), 3, "video")
    with pytest.raises(cu.CAEError, match="Unknown sample"):
        codec_app.app_sample_image("photo:not_a_photo")


# --------------------------------------------------------------------------------------
# The notebook and how it is run
# --------------------------------------------------------------------------------------

def test_app_notebook_is_tiny_and_unnumbered(project_root):
    path = project_root / "notebooks" / "app_codec.ipynb"
    nb = json.loads(path.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert not path.name[:2].isdigit()  # student-copy tooling only takes NN_*.ipynb
    assert len(code) <= 3 and any("cu.app.CodecApp()" in c and "display(app.widget)" in c for c in code)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    # Stored outputs (scripts/run_notebooks.py runs it headless) hold no error and no path
    # of the machine that ran it.
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "/work/" not in json.dumps(outputs) and "/home/" not in json.dumps(outputs)
    intro = "".join(nb["cells"][0]["source"])
    assert "switched off" not in intro and "JPEG XL" in intro and "JPEG 2000" in intro


def test_make_targets_and_pins(project_root):
    makefile = (project_root / "Makefile").read_text()
    assert "\napp:" in makefile and "voila notebooks/app_codec.ipynb" in makefile
    assert "\ntest-browser:" in makefile and "tests/browser" in makefile
    requirements = (project_root / "requirements.txt").read_text()
    assert "\nvoila==" in requirements and "\nplaywright==" in requirements
    assert "make test-browser" in (project_root / ".ci" / "run").read_text()

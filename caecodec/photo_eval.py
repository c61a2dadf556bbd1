"""Evaluating the photo codec on a folder of photos, against the classic codecs.

Notebook 06 and ``benchmarks/photo_rate_distortion.py`` share it. PSNR on photos is the
mean of the per-photo PSNR, as Kodak results are usually reported.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from . import paths
from .bdrate import bd_compare
from .classic import avif_supported, classic_decode, classic_encode
from .codec_training import photo_training_images
from .digit_codec import available_qualities, load_codec
from .errors import CAEError
from .fileio import read_card
from .formats import unpack_v1
from .images import IMAGE_SUFFIXES, photo_to_gray_u8
from .metrics import photo_metrics
from .photo_codec import (
    PHOTO_HALO,
    PhotoCodec,
    decode_tiled,
    encode_tiled,
    load_photo_codec,
    pad_to_multiple,
    photo_model_path,
    photo_qualities,
)


def photo_eval_folder() -> Path | None:
    """The folder of evaluation photos: ``$CAE_PHOTO_DIR`` if set, else ``data/photos``
    if it holds images, else the Kodak copy in ``../shared/data/kodak-gray256`` beside the
    project if present; ``None`` if there is none. (Never train on these photos.)"""
    env = os.environ.get("CAE_PHOTO_DIR")
    if env:
        return Path(env)
    for folder in (paths.DATA_DIR / "photos", (paths.COURSE_ROOT or Path.cwd()).parent / "shared" / "data" / "kodak-gray256"):
        if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            return folder
    return None


def load_photo_folder(folder, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every image in ``folder`` (sorted by name) as grayscale ``uint8`` ``(H, W)``,
    keyed by file name. Colour is converted to luma. :class:`CAEError` if the folder is
    missing or holds no image; files that are not images are reported by name."""
    if folder is None:
        raise CAEError("No folder of evaluation photos: set CAE_PHOTO_DIR to a folder of images "
                       "or put some in data/photos/.")
    folder = Path(folder)
    if not folder.is_dir():
        raise CAEError(f"The photo folder {folder} does not exist; set CAE_PHOTO_DIR to a folder "
                       "of images.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CAEError(f"The photo folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return {p.name: photo_to_gray_u8(p) for p in files[:limit]}


#: Stand-ins for a course folder opened without the Kodak photos: photographs that ship
#: inside scikit-image and are NOT among the training photos (a test checks it).
SUBSTITUTE_PHOTOS = ("motorcycle_left", "motorcycle_right", "cell")


def substitute_photos() -> dict[str, np.ndarray]:
    """:data:`SUBSTITUTE_PHOTOS` as grayscale ``uint8`` ``(H, W)``: the two views of
    scikit-image's stereo motorcycle (741x500, colour converted to luma) and its cell
    micrograph (550x660). No download needed."""
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    return {"motorcycle_left": photo_to_gray_u8(left), "motorcycle_right": photo_to_gray_u8(right),
            "cell": photo_to_gray_u8(skimage.data.cell())}


def evaluation_photos(limit: int | None = None) -> tuple[dict[str, np.ndarray], str | None]:
    """The evaluation photos and where they came from: ``(photos, folder)`` with the folder
    of :func:`photo_eval_folder` shown relative to the course, or, when there is none (a
    notebook opened without ``../shared``), ``(substitute_photos(), None)``."""
    folder = photo_eval_folder()
    if folder is None:
        return dict(list(substitute_photos().items())[:limit]), None
    return load_photo_folder(folder, limit), os.path.relpath(folder, paths.COURSE_ROOT or Path.cwd())


def _photo_summary(codec: str, setting, per_image: list[dict], folder=None) -> dict:
    """Means over images: ``bpp``, ``psnr_db`` (mean of per-image PSNR, the usual way to
    report Kodak results) and ``ssim``; the per-image rows are kept too."""
    keys = ("bytes", "bpp", "psnr_db", "ssim", "mse")
    out = {"codec": codec, "setting": setting, "images": len(per_image),
           **{k: float(np.mean([r[k] for r in per_image])) for k in keys},
           "per_image": per_image}
    if folder is not None:  # relative to the course, so that no machine's path is recorded
        out["folder"] = os.path.relpath(folder, paths.COURSE_ROOT or Path.cwd())
    if per_image and "estimated_bpp" in per_image[0]:
        out["estimated_bpp"] = float(np.mean([r["estimated_bpp"] for r in per_image]))
    return out


def measure_photo_codec(codec: PhotoCodec, images: dict, folder=None) -> dict:
    """Encode and decode every image through real ``.cae`` bytes; see :func:`_photo_summary`."""
    rows = []
    for name, img in images.items():
        data = codec.compress(img)
        dec = codec.decompress(data)
        est = codec.estimate_image_bits(codec.symbols_of(img)) / img.size
        rows.append({"name": name, "bytes": len(data), "bpp": 8.0 * len(data) / img.size,
                     "estimated_bpp": est, **photo_metrics(img, dec)})
    return _photo_summary("cae", codec.quality, rows, folder or photo_eval_folder())


def measure_photo_classic(images: dict, fmt: str, quality: int | None) -> dict:
    """The same measurement for a classic codec (:func:`classic_encode`) at ``quality``."""
    rows = []
    for name, img in images.items():
        data = classic_encode(img, fmt, quality)
        rows.append({"name": name, "bytes": len(data), "bpp": 8.0 * len(data) / img.size,
                     **photo_metrics(img, classic_decode(data))})
    return _photo_summary(fmt, quality, rows)


#: Setting sweeps for the classic codecs on photos; they cover about 0.05 to 2 bpp. JPEG XL
#: (libjxl, effort 7) by quality; JPEG 2000 (OpenJPEG) by level, a target PSNR in dB.
PHOTO_CLASSIC_SWEEPS = {"jpeg": (2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 90),
                        "webp": (0, 5, 10, 20, 30, 40, 50, 60, 75, 85, 90),
                        "avif": (0, 10, 20, 30, 40, 50, 60, 70, 80),
                        "jxl": (0, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90),
                        "jpeg2000": (22, 24, 26, 28, 30, 32, 34, 36, 38, 40)}
#: The classic codecs the photo codec is compared with, in the tables' order.
PHOTO_RIVALS = ("jpeg", "webp", "avif", "jxl", "jpeg2000")
#: Bjontegaard deltas on photos are computed over this range of bits per pixel.
PHOTO_BD_RANGE_BPP = (0.1, 1.0)
#: The quality of the large-image test (notebook 06 and the benchmark use the same).
LARGE_IMAGE_QUALITY = 3
#: The speed test's image size (width, height): a Kodak photo's full size.
SPEED_TEST_SIZE = (768, 512)


def _summary_row(result: dict) -> dict:
    """A rate-distortion row without its per-image details (for tables and JSON)."""
    return {k: v for k, v in result.items() if k != "per_image"}


def photo_rate_distortion(images: dict, qualities=None, sweeps=None, with_avif: bool = True,
                          keep_per_image: bool = False) -> list[dict]:
    """The photo codec at every shipped quality and the classic codecs over their quality
    sweeps, all on the same ``images`` (``{name: (H, W) uint8}``), in one run.

    Returns one row per (codec, setting): ``codec``, ``setting``, ``images``, mean
    ``bytes``, ``bpp``, ``psnr_db`` (mean of per-image PSNR), ``ssim``, and for the CAE
    ``estimated_bpp``; with ``keep_per_image`` also ``per_image``.
    """
    sweeps = dict(PHOTO_CLASSIC_SWEEPS if sweeps is None else sweeps)
    if not with_avif or not avif_supported():
        sweeps.pop("avif", None)
    rows = []
    for q in (photo_qualities() if qualities is None else qualities):
        rows.append(measure_photo_codec(load_photo_codec(q), images))
    for fmt, settings in sweeps.items():
        rows.extend(measure_photo_classic(images, fmt, s) for s in settings)
    return rows if keep_per_image else [_summary_row(r) for r in rows]


def photo_bd_table(rows, a: str = "cae", against=PHOTO_RIVALS,
                   bpp_range=PHOTO_BD_RANGE_BPP, metric: str = "psnr_db") -> dict:
    """BD-rate (and BD-PSNR) of codec ``a`` against each other codec on photos.

    Only the points whose mean rate lies within ``bpp_range`` are used, for both codecs,
    so the delta describes that range of rates. Returns ``{codec: bd_compare dict +
    "points": (n_a, n_b)}`` for each codec present in ``rows``."""
    lo, hi = bpp_range

    def points(codec):
        sel = [r for r in rows if r["codec"] == codec and lo <= r["bpp"] <= hi]
        return np.array([r["bpp"] for r in sel]), np.array([r[metric] for r in sel])

    ra, pa = points(a)
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        rb, pb = points(b)
        method = "cubic" if min(len(ra), len(rb)) >= 4 else "pchip"
        out[b] = {**bd_compare(ra, pa, rb, pb, method), "points": (len(ra), len(rb)),
                  "bpp_range": (lo, hi), "metric": metric}
    return out


PHOTO_CODEC_NAMES = {"cae": "the photo CAE", "jpeg": "JPEG", "webp": "WebP", "avif": "AVIF",
                     "jxl": "JPEG XL", "jpeg2000": "JPEG 2000"}


def photo_bd_lines(bd: dict) -> list[str]:
    """One readable line per codec from :func:`photo_bd_table`'s result."""
    lines = []
    for codec, d in bd.items():
        lo, hi = d["bpp_range"]
        if d["bd_rate_percent"] is None:
            lines.append(f"against {codec}: no BD-rate ({d['reason']})")
            continue
        more = "fewer" if d["bd_rate_percent"] < 0 else "more"
        lines.append(f"against {PHOTO_CODEC_NAMES.get(codec, codec)}: BD-rate {d['bd_rate_percent']:+.1f}% "
                     f"(the CAE needs {abs(d['bd_rate_percent']):.1f}% {more} bits for the same "
                     f"{'PSNR' if d['metric'] == 'psnr_db' else 'SSIM'}), "
                     + ("BD-PSNR " if d["metric"] == "psnr_db" else "BD-SSIM ")
                     + ((f"{d['bd_psnr_db']:+.2f} dB" if d["metric"] == "psnr_db" else f"{d['bd_psnr_db']:+.4f}")
                        if d["bd_psnr_db"] is not None else "n/a")
                     + f"; points in {lo}-{hi} bpp: {d['points'][0]} CAE, {d['points'][1]} {codec}")
    return lines


def digit_codec_on_photo(image_u8: np.ndarray, quality: int) -> dict:
    """The MNIST-trained digit codec forced onto a photo: the photo is cut into 28x28
    tiles (edges repeated), each tile is coded as if it were a digit, and the tiles are
    put back together. Counts the payload bytes of every tile plus one 9-byte header.
    Returns ``{"bytes", "bpp", "decoded", **photo_metrics}``. (This is limitation 2 of
    the 2018 project: a model trained only on digits, shown on real photos.)"""
    codec = load_codec(quality)
    h, w = image_u8.shape
    padded = np.pad(image_u8, ((0, -h % 28), (0, -w % 28)), mode="edge")
    th, tw = padded.shape[0] // 28, padded.shape[1] // 28
    tiles = padded.reshape(th, 28, tw, 28).transpose(0, 2, 1, 3).reshape(-1, 28, 28, 1)
    files = codec.compress(tiles.astype(np.float32) / 255.0)
    payload = sum(len(unpack_v1(f)[4]) for f in files)
    dec = np.round(np.clip(codec.decompress(files)[..., 0], 0, 1) * 255).astype(np.uint8)
    dec = dec.reshape(th, tw, 28, 28).transpose(0, 2, 1, 3).reshape(th * 28, tw * 28)[:h, :w]
    size = payload + 9
    return {"bytes": size, "bpp": 8.0 * size / image_u8.size, "decoded": dec,
            **photo_metrics(image_u8, dec)}


def digit_codec_on_photos(images: dict, qualities=None) -> list[dict]:
    """:func:`digit_codec_on_photo` on every photo, at every digit quality (default: all
    shipped): one row per quality with the mean ``bytes``, ``bpp``, ``psnr_db`` and
    ``ssim``, codec ``"mnist_cae_tiles"``, in the layout of :func:`photo_rate_distortion`."""
    rows = []
    for q in (available_qualities() if qualities is None else qualities):
        per = [digit_codec_on_photo(img, q) for img in images.values()]
        rows.append({"codec": "mnist_cae_tiles", "setting": q,
                     **{k: float(np.mean([r[k] for r in per])) for k in ("bytes", "bpp", "psnr_db", "ssim")}})
    return rows


def cli_peak_memory(args: list[str], cwd=None, timeout: float = 1800) -> dict:
    """Run the command line (``cae <args>``) in a fresh process and measure it: wall
    ``seconds``, ``peak_rss_mib`` (the process's peak resident memory,
    :func:`caecodec.machine.peak_rss_mib`, TensorFlow included) and ``returncode``."""
    import json
    import subprocess
    import time

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from caecodec.cli import main; from caecodec.machine import peak_rss_mib; "
            "rc = main(sys.argv[2:]); print('@@' + json.dumps({'rc': rc, 'mib': peak_rss_mib()}))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(paths.PACKAGE_DIR.parent), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    line = next((l for l in proc.stdout.splitlines() if l.startswith("@@")), None)
    if line is None:
        raise CAEError(f"The measured command failed: {proc.stderr.strip()[-300:]}")
    info = json.loads(line[2:])
    return {"seconds": seconds, "peak_rss_mib": info["mib"], "returncode": info["rc"],
            "stdout": "\n".join(l for l in proc.stdout.splitlines() if not l.startswith("@@"))}


def large_test_image(size: int = 4096, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 photo mosaic for the large-image test: scikit-image's
    photos, resized to 1024x1024 tiles and laid side by side (with mirror flips so that
    neighbours differ)."""
    from PIL import Image

    photos = list(photo_training_images(("astronaut", "camera", "coffee", "rocket", "coins",
                                         "moon", "clock", "brick")).values())
    tile = min(1024, size)
    rng = np.random.default_rng(seed)
    out = np.empty((size, size), np.uint8)
    for r in range(0, size, tile):
        for c in range(0, size, tile):
            src = photos[rng.integers(len(photos))]
            t = np.asarray(Image.fromarray(src).resize((tile, tile), Image.LANCZOS))
            if rng.random() < 0.5:
                t = t[:, ::-1]
            out[r:r + tile, c:c + tile] = t[:size - r, :size - c]
    return out


def seam_demo(codec: PhotoCodec, image_u8: np.ndarray, tile: int = 64) -> dict:
    """Decode ``image_u8`` three ways with the same model: whole (one tile), in
    ``tile``-pixel tiles with the halo, and in tiles without it (each tile coded on its
    own, as naive tiling would). Returns the three images, their PSNRs and the largest
    pixel difference of each tiled version from the whole one."""
    padded = pad_to_multiple(image_u8).astype(np.float32) / 255.0
    h, w = image_u8.shape
    out = {}
    for name, t, halo in (("whole", 1 << 20, PHOTO_HALO), ("tiles_with_halo", tile, PHOTO_HALO),
                          ("tiles_no_halo", tile, 0)):
        sym = codec.quantize(encode_tiled(codec.encoder, padded, t, halo))
        img = decode_tiled(codec.decoder, codec.dequantize(sym), t, halo)[:h, :w]
        out[name] = {"image": img, "bits": codec.estimate_image_bits(sym),
                     **photo_metrics(image_u8, img)}
    for name in ("tiles_with_halo", "tiles_no_halo"):
        out[name]["max_diff_from_whole"] = int(np.abs(out[name]["image"].astype(int)
                                                      - out["whole"]["image"]).max())
    return out


def photo_card_rows() -> list[dict]:
    """One row per shipped photo quality, from its card: lambda, and each stage of its
    training with its wall time (``stages``: ``[{"stage", "seconds", ...}]``; the
    network's training stages carry ``steps``), the total, and the test metrics the card
    records (measured on the evaluation photos through real bytes)."""
    rows = []
    for q in photo_qualities():
        card = read_card(photo_model_path(q))
        # A stage without a quality (older cards) belongs to this card's quality.
        stages = [{"stage": s.get("stage", "train network"),
                   "seconds": s.get("train_seconds", s.get("seconds")), **s, "quality": s.get("quality", q)}
                  for s in card.get("lineage", [])]
        rows.append({"quality": q, "lambda": card.get("lambda"), "stages": stages,
                     "steps": sum(s.get("steps", 0) for s in stages),
                     "total_train_seconds": card.get("total_train_seconds"),
                     "parameters": card.get("parameters"), **{f"test_{k}": v for k, v in card.get("test", {}).items()
                                                               if k in ("bpp", "psnr_db", "ssim")}})
    return rows


def coding_variants(quality: int) -> dict:
    """The shipped photo codec ``quality`` with its entropy coding built up step by step,
    as ``{name: PhotoCodec}``. Encoder and decoder are the same, so are the decoded
    pixels; only the bits differ: the factorized prior alone (one table per channel),
    plus DC prediction (``.cae`` version 2), and the context model (version 3, the shipped
    codec)."""
    from .photo_codec import _read_tables

    base = load_photo_codec(quality)
    tables = _read_tables(photo_model_path(quality).with_suffix(".npz"))
    plain = {k: tables[k] for k in ("medians", "offsets", "pmfs", "sizes")}
    out = {"factorized prior": PhotoCodec(base.encoder, base.decoder, plain, quality, base.fingerprint)}
    if "dc_pmf" in tables:
        out["+ DC prediction (v2)"] = PhotoCodec(base.encoder, base.decoder, {**plain, "dc_pmf": tables["dc_pmf"]},
                                                 quality, base.fingerprint)
    if base.context is not None:
        out["context model (v3)"] = base
    return out


def speed_test_image(size=SPEED_TEST_SIZE) -> np.ndarray:
    """A photo the codec never saw in training, at ``size`` (width, height): the left view
    of scikit-image's stereo motorcycle pair, in gray, resized. ``uint8`` ``(H, W)``."""
    import skimage.data
    from PIL import Image

    left = skimage.data.stereo_motorcycle()[0]
    return np.asarray(Image.fromarray(left).convert("L").resize(tuple(size), Image.LANCZOS), np.uint8)


def speed_test(quality: int, image: np.ndarray | None = None, repeats: int = 3) -> dict:
    """Encode and decode one photo (default :func:`speed_test_image`) in this process,
    timing each call after the model is loaded (start-up is not counted). The first call
    also traces TensorFlow's graph, so it is reported on its own; ``encode_seconds`` and
    ``decode_seconds`` are the medians of ``repeats`` more calls."""
    import time

    image = speed_test_image() if image is None else image
    codec = load_photo_codec(quality)
    times = []
    for _ in range(1 + int(repeats)):
        t0 = time.perf_counter()
        data = codec.compress(image)
        t1 = time.perf_counter()
        decoded = codec.decompress(data)
        times.append((t1 - t0, time.perf_counter() - t1))
    enc, dec = (float(np.median([t[i] for t in times[1:]])) for i in (0, 1))
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "quality": int(quality),
            "bytes": len(data), "bpp": 8.0 * len(data) / image.size, **photo_metrics(image, decoded),
            "first_encode_seconds": times[0][0], "first_decode_seconds": times[0][1],
            "encode_seconds": enc, "decode_seconds": dec, "encode_plus_decode_seconds": enc + dec,
            "repeats": int(repeats)}

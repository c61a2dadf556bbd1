"""The digit comparison: every codec on the same digits, through real bytes.

Notebook 05 and ``benchmarks/rate_distortion.py`` share it: the learned codec (in memory,
and through the files a user gets: PNG -> ``cae encode`` -> .cae -> ``cae decode`` -> PNG),
the float latent, PNG, WebP, JPEG, AVIF, JPEG XL, JPEG 2000, JPEG-LS and PCA, each as mean
whole-file bytes, PSNR, SSIM and a classifier's accuracy on the decoded digits; then
BD-rates, matched sizes and the bars. Codecs measured on fewer digits (the slow AVIF and
JPEG XL encoders) are compared with the learned codec on the same first digits.
Conventions: ``images_u8`` are ``uint8`` ``(N, 28, 28)``; "bytes" always means whole
files, headers included; PSNR is of the mean MSE over the images.
"""
from __future__ import annotations

import numpy as np

from .bdrate import bd_compare, matched_size_table, pareto_rows
from .classic import (
    AVIF_QUALITIES,
    JPEG2000_LEVELS,
    JPEG_QUALITIES,
    JXL_QUALITIES,
    WEBP_QUALITIES,
    avif_supported,
    classic_decode,
    classic_encode,
)
from .digit_codec import available_qualities, load_codec
from .errors import CAEError
from .formats import pack_float_latent, unpack_float_latent, unpack_v1
from .images import PIXELS_PER_DIGIT, to_float_images, u8_batch
from .metrics import psnr_from_mse, rd_metrics, ssim_per_image
from .modelio import decode_latents, encode_digits, load_model, model_fingerprint
from .pca import PCACodec

#: Classifier accuracy from which decoded digits count as "readable".
READABLE_ACCURACY = 0.95
#: The lossless formats of the comparison (one row each).
LOSSLESS_FORMATS = ("png", "webp_lossless", "jxl_lossless", "jpegls")
#: The classic lossy codecs the learned codec is matched against, and its linear baseline.
RIVALS = ("webp", "jxl", "jpeg", "jpeg2000", "avif", "pca")
#: File sizes (bytes) at which codecs are compared: against every rival, and against PCA
#: down to the smallest readable files.
MATCHED_SIZES = (60, 80, 100, 120, 150, 200, 250)
PCA_MATCHED_SIZES = (25, 30, 40, 50) + MATCHED_SIZES


def rd_result(codec: str, setting, sizes, originals_u8: np.ndarray, decoded_u8: np.ndarray,
              classifier=None, labels=None, **extra) -> dict:
    """One point of a rate-distortion curve, in the form every ``measure_*`` function returns.

    ``sizes``: whole-file bytes per image ``(N,)``. Returns a dict with ``codec``,
    ``setting``, ``images``, ``mean_bytes``, ``bpp`` (bits per pixel = bytes x 8 / 784),
    ``mse``, ``psnr_db``, ``ssim``, ``background_level`` (mean decoded value, 0..255, of the
    pixels that are exactly 0 in the original: faint haze that PSNR barely sees and SSIM
    punishes), ``accuracy`` (the classifier's, on the decoded digits; None without a
    classifier), ``sizes`` (the array) and ``decoded`` (uint8 ``(N, 28, 28)``), plus
    ``extra``. :func:`rd_summary` strips the two arrays.
    """
    sizes = np.asarray(sizes, np.int64)
    decoded_u8 = u8_batch(decoded_u8)
    originals_u8 = u8_batch(originals_u8)
    mean_bytes = float(sizes.mean())
    black = np.asarray(originals_u8) == 0
    correct = (classifier_correct(classifier, decoded_u8, labels) if classifier is not None else None)
    errors = ((originals_u8.astype(np.float64) - decoded_u8) / 255.0) ** 2
    row = {"codec": codec, "setting": setting, "images": int(len(sizes)), "mean_bytes": mean_bytes,
           "bpp": mean_bytes * 8 / PIXELS_PER_DIGIT, **rd_metrics(originals_u8, decoded_u8),
           "background_level": float(decoded_u8[black].mean()) if black.any() else 0.0,
           "accuracy": None if correct is None else float(correct.mean())}
    return {**row, **extra, "sizes": sizes, "decoded": decoded_u8,
            "errors": errors.reshape(len(sizes), -1).mean(axis=1),
            "ssims": ssim_per_image(originals_u8, decoded_u8), "correct": correct}


#: The per-image arrays of a :func:`rd_result` (dropped by :func:`rd_summary`).
ARRAYS = ("sizes", "decoded", "kept", "errors", "ssims", "correct")


def rd_summary(result: dict) -> dict:
    """A :func:`rd_result` without its per-image arrays (:data:`ARRAYS`): JSON-ready."""
    return {k: v for k, v in result.items() if k not in ARRAYS}


def first_images(row: dict, n: int) -> dict:
    """``row`` measured on its first ``n`` images only (from its per-image arrays)."""
    if row["images"] <= n:
        return row
    sizes, errors = row["sizes"][:n], row["errors"][:n]
    mean_bytes, mse = float(sizes.mean()), float(errors.mean())
    out = {**row, "images": int(n), "mean_bytes": mean_bytes, "bpp": mean_bytes * 8 / PIXELS_PER_DIGIT,
           "mse": mse, "psnr_db": psnr_from_mse(mse), "ssim": float(row["ssims"][:n].mean()),
           "sizes": sizes, "errors": errors, "ssims": row["ssims"][:n]}
    if row.get("correct") is not None:
        out["correct"] = row["correct"][:n]
        out["accuracy"] = float(out["correct"].mean())
    return out


def measure_classic(images_u8: np.ndarray, fmt: str, quality: int | None = None,
                    classifier=None, labels=None) -> dict:
    """Encode and decode every image with a classic format; a :func:`rd_result` dict.

    ``images_u8``: ``uint8`` ``(N, 28, 28)``. Returns mean whole-file bytes, bpp, PSNR,
    SSIM (and classifier accuracy with ``classifier`` and ``labels``), the per-image sizes
    and the decoded images (``uint8`` ``(N, 28, 28)``).
    """
    images_u8 = u8_batch(images_u8)
    files = [classic_encode(img, fmt, quality) for img in images_u8]
    decoded = np.stack([classic_decode(f) for f in files])
    return rd_result(fmt, quality, [len(f) for f in files], images_u8, decoded, classifier, labels)


def measure_learned(codec, images_u8: np.ndarray, classifier=None, labels=None) -> dict:
    """Real bytes through a :class:`LearnedCodec`: compress, decompress, measure.

    Besides the :func:`rd_result` fields it returns, per image on average, the header
    bytes (7 for 28x28), the range-coded ``payload_bytes``, the model's own estimate
    ``estimated_payload_bytes`` (``-sum log2 p`` of the symbols / 8) and
    ``gap_bytes`` = payload - estimate: what the range coder adds (its 32-bit words).
    """
    images_u8 = u8_batch(images_u8)
    x = to_float_images(images_u8)
    files = codec.compress(x)
    decoded = codec.decompress(files)
    payload = np.array([len(unpack_v1(f)[4]) for f in files], np.float64)
    sizes = np.array([len(f) for f in files])
    estimate = codec.estimate_bits(codec.quantize(encode_digits(codec.encoder, x))) / 8.0
    return rd_result("cae", codec.quality, sizes, images_u8, decoded, classifier, labels,
                     header_bytes=float((sizes - payload).mean()), payload_bytes=float(payload.mean()),
                     estimated_payload_bytes=float(estimate.mean()),
                     gap_bytes=float((payload - estimate).mean()))


def measure_float_latent(images_u8: np.ndarray, model_path=None, classifier=None, labels=None) -> dict:
    """The 2018-style float latent as a ``.cae`` v0 file (notebook 04): 524 bytes per digit.

    Uses the shipped improved CAE (or ``model_path``): 128 float32 numbers (512 bytes of
    payload) plus 12 bytes of header and CRC, decoded back through the file.
    """
    images_u8 = u8_batch(images_u8)
    _, encoder, decoder, _ = load_model(model_path)
    fp = model_fingerprint(encoder)
    files = [pack_float_latent(z, fp) for z in encode_digits(encoder, to_float_images(images_u8))]
    size = int(np.prod(decoder.input_shape[1:]))
    latents = np.stack([unpack_float_latent(f, fp, size) for f in files])
    return rd_result("float_latent_v0", "float32", [len(f) for f in files], images_u8,
                     decode_latents(decoder, latents), classifier, labels)


def measure_pca(codec: PCACodec, images_u8: np.ndarray, classifier=None, labels=None) -> dict:
    """Real bytes through a :class:`PCACodec`; a :func:`rd_result` dict (setting ``"k=.., step=.."``)."""
    images_u8 = u8_batch(images_u8)
    files = codec.compress(images_u8)
    estimate = codec.estimate_bits(codec.quantize(images_u8)) / 8.0
    return rd_result("pca", f"k={codec.k}, step={codec.step:g}", [len(f) for f in files], images_u8,
                     codec.decompress(files), classifier, labels, k=codec.k, step=codec.step,
                     estimated_payload_bytes=float(estimate.mean()))


def classifier_correct(model, images, labels) -> np.ndarray:
    """Which of ``images`` (uint8 ``(N, 28, 28)`` or float ``(N, 28, 28, 1)`` in [0, 1])
    ``model`` labels correctly: bool ``(N,)``."""
    images = np.asarray(images)
    x = to_float_images(images) if images.dtype == np.uint8 else images.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    probs = model.predict(x, batch_size=1000, verbose=0)
    return np.argmax(probs, axis=1) == np.asarray(labels)


def classifier_accuracy(model, images, labels) -> float:
    """Share of ``images`` that ``model`` labels correctly, in [0, 1] (see :func:`classifier_correct`)."""
    return float(np.mean(classifier_correct(model, images, labels)))


def save_digit_pngs(images_u8: np.ndarray, folder) -> list:
    """Each digit (uint8 ``(N, 28, 28)``) as a grayscale PNG ``folder/00000.png``...; the paths."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(len(images_u8))]
    for path, img in zip(paths, u8_batch(images_u8)):
        Image.fromarray(img, mode="L").save(path)
    return paths


def run_cli(*args, fresh_process: bool = True) -> None:
    """``cae ARGS``: by default as ``python -m caecodec ARGS`` in a fresh Python process (the
    user's command line); else the same ``cli.main`` in this process, its printout
    swallowed. :class:`CAEError` with its last stderr line if it fails."""
    import contextlib
    import io
    import os
    import subprocess
    import sys

    from . import paths

    args = [str(a) for a in args]
    if not fresh_process:
        from .cli import main

        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = main(args)
        stderr = err.getvalue()
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.PACKAGE_DIR.parent),
                                                            os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "caecodec", *args], capture_output=True,
                              text=True, env=env)
        status, stderr = proc.returncode, proc.stderr
    if status != 0:
        raise CAEError(f"cae {args[0]} failed: {(stderr.strip().splitlines() or ['?'])[-1]}")


def measure_learned_files(quality: int, png_folder, work_folder, images_u8: np.ndarray,
                          classifier=None, labels=None, fresh_process: bool = True) -> dict:
    """The learned codec through the files a user gets, with the real command line.

    ``png_folder`` holds ``images_u8`` as PNGs (:func:`save_digit_pngs`, in name order);
    ``cae encode png_folder work/q<N>_cae --quality N`` and ``cae decode`` of that folder
    run as fresh processes (or, ``fresh_process=False``, through the same ``cli.main`` in
    this process). The sizes are those of the ``.cae`` files, the decoded digits
    those of the PNGs written. Returns a :func:`rd_result` dict (codec ``"cae"``,
    ``route="files"``, with ``payload_bytes`` and ``header_bytes`` read from the files).
    """
    from pathlib import Path

    from PIL import Image

    work = Path(work_folder)
    cae_dir, out_dir = work / f"q{quality}_cae", work / f"q{quality}_png"
    run_cli("encode", png_folder, cae_dir, "--quality", quality, "--force", fresh_process=fresh_process)
    run_cli("decode", cae_dir, out_dir, "--force", fresh_process=fresh_process)
    names = sorted(p.stem for p in Path(png_folder).glob("*.png"))
    datas = [(cae_dir / f"{n}.cae").read_bytes() for n in names]
    decoded = np.stack([np.asarray(Image.open(out_dir / f"{n}.png").convert("L")) for n in names])
    payload = np.array([len(unpack_v1(d)[4]) for d in datas], np.float64)
    sizes = np.array([len(d) for d in datas])
    return rd_result("cae", quality, sizes, images_u8, decoded, classifier, labels, route="files",
                     header_bytes=float((sizes - payload).mean()), payload_bytes=float(payload.mean()))


def rate_distortion_rows(images_u8: np.ndarray, labels=None, classifier=None, *, qualities=None,
                         pca_codecs=(), jpeg_qualities=JPEG_QUALITIES, webp_qualities=WEBP_QUALITIES,
                         avif_qualities=AVIF_QUALITIES, avif_images: int | None = 500,
                         jxl_qualities=JXL_QUALITIES, jxl_images: int | None = 1000,
                         jpeg2000_levels=JPEG2000_LEVELS, files_folder=None, keep=(),
                         progress=None) -> list[dict]:
    """Measure every codec on the same digits: the learned codec (each quality), the float
    latent (v0), the lossless formats (:data:`LOSSLESS_FORMATS`), JPEG, WebP, AVIF, JPEG XL
    and JPEG 2000 sweeps and the given PCA codecs.

    ``images_u8``: uint8 ``(N, 28, 28)``; ``labels`` and ``classifier`` add accuracy.
    AVIF and JPEG XL encode slowly (tens of milliseconds a digit), so they run on the first
    ``avif_images`` / ``jxl_images`` digits only (None: all); their rows say how many.
    With ``files_folder`` the learned codec's rows (codec ``"cae"``) are measured through
    files with the command line (:func:`measure_learned_files`; the digits are saved as
    PNGs there first), and its in-memory rows are kept beside them as ``"cae_memory"``.
    ``keep``: indices of digits whose decoded images are kept in each row as ``"kept"``
    (uint8 ``(len(keep), 28, 28)``); the full decoded arrays are dropped to save memory,
    the per-image sizes, errors and classifier verdicts stay. ``progress``: called with
    each finished row. Returns the rows (:func:`rd_result` dicts) in a fixed order.
    """
    import time
    from pathlib import Path

    images_u8 = u8_batch(images_u8)
    qualities = available_qualities() if qualities is None else list(qualities)
    memory_name = "cae" if files_folder is None else "cae_memory"

    def learned(q):
        row = measure_learned(load_codec(q), images_u8, classifier, labels)
        row["codec"], row["route"] = memory_name, "memory"
        return row

    jobs = [lambda q=q: learned(q) for q in qualities]
    if files_folder is not None:
        pngs = Path(files_folder) / "png"

        def save_pngs():  # first of all: the digits as the PNG files a user would have
            save_digit_pngs(images_u8, pngs)

        jobs.insert(0, save_pngs)
        jobs += [lambda q=q: measure_learned_files(q, pngs, files_folder, images_u8, classifier, labels)
                 for q in qualities]
    jobs.append(lambda: measure_float_latent(images_u8, None, classifier, labels))
    jobs += [lambda fmt=fmt: measure_classic(images_u8, fmt, None, classifier, labels) for fmt in LOSSLESS_FORMATS]

    def sweep(fmt, settings, n=None):
        n = len(images_u8) if n is None else min(int(n), len(images_u8))
        sub_labels = None if labels is None else np.asarray(labels)[:n]
        return [lambda q=q: measure_classic(images_u8[:n], fmt, q, classifier, sub_labels) for q in settings]

    jobs += sweep("jpeg", jpeg_qualities) + sweep("webp", webp_qualities)
    jobs += sweep("jxl", jxl_qualities, jxl_images) + sweep("jpeg2000", jpeg2000_levels)
    if avif_qualities and avif_supported():
        jobs += sweep("avif", avif_qualities, avif_images)
    jobs += [lambda c=c: measure_pca(c, images_u8, classifier, labels) for c in pca_codecs]
    keep = np.asarray(keep, np.int64)
    rows = []
    for job in jobs:
        t0 = time.perf_counter()
        row = job()
        if row is None:  # saving the PNGs
            continue
        row["seconds"] = time.perf_counter() - t0
        row["kept"] = row["decoded"][keep[keep < len(row["decoded"])]]
        del row["decoded"]
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def codec_throughput(codec, images: np.ndarray, warmup: int = 64) -> dict:
    """Wall time to compress and then decompress ``images`` in one batch through ``codec``.

    ``images``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8). Includes the neural networks
    and the range coding of every file, excludes model loading; a ``warmup`` batch runs
    first so that TensorFlow's one-off graph tracing is not counted. Returns
    ``{"images", "encode_seconds", "decode_seconds", "seconds", "images_per_second"}``.
    """
    import time

    x = np.asarray(images)
    x = to_float_images(x) if x.dtype == np.uint8 else x.astype(np.float32)
    if warmup:
        codec.decompress(codec.compress(x[:warmup]))
    t0 = time.perf_counter()
    files = codec.compress(x)
    t1 = time.perf_counter()
    codec.decompress(files)
    t2 = time.perf_counter()
    return {"images": int(len(x)), "encode_seconds": t1 - t0, "decode_seconds": t2 - t1,
            "seconds": t2 - t0, "images_per_second": len(x) / (t2 - t0)}


def smallest_row(rows, codec: str, min_accuracy: float | None = None) -> dict | None:
    """The row of ``codec`` with the fewest mean bytes, optionally among those whose classifier
    accuracy is at least ``min_accuracy``; None if there is none."""
    mine = [r for r in rows if r["codec"] == codec
            and (min_accuracy is None or (r.get("accuracy") is not None and r["accuracy"] >= min_accuracy))]
    return min(mine, key=lambda r: r["mean_bytes"]) if mine else None


def same_digits(rows, a: str, b: str) -> list[dict]:
    """The rows of codecs ``a`` and ``b``, with ``a``'s restricted to the first digits ``b``
    was measured on when ``b`` saw fewer (AVIF, JPEG XL): both on the same digits."""
    n = min((r["images"] for r in rows if r["codec"] == b), default=0)
    return ([first_images(r, n) for r in rows if r["codec"] == a]
            + [r for r in rows if r["codec"] == b])


def bd_table(rows, a: str = "cae", against=RIVALS) -> dict:
    """Bjontegaard deltas of codec ``a`` against each codec in ``against`` (those present),
    each pair on the same digits (:func:`same_digits`).

    Every curve is first reduced to its Pareto front (PSNR against mean bytes). Returns
    ``{other: bd_compare(...) plus "pchip": the same with a monotone piecewise-cubic fit,
    and "images": the number of digits compared}``; the cubic is the standard headline,
    the piecewise fit a check on it. Where the byte ranges do not overlap, the BD-rate is
    still given (it only needs overlapping PSNR ranges) but ``reason`` says so.
    """
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        pair = same_digits(rows, a, b)

        def front(c, pair=pair):
            pts = pareto_rows([r for r in pair if np.isfinite(r["psnr_db"])], c)
            return [r["mean_bytes"] for r in pts], [r["psnr_db"] for r in pts]

        (ra, pa), (rb, pb) = front(a), front(b)
        res = bd_compare(ra, pa, rb, pb, "cubic")
        res["pchip"] = {k: bd_compare(ra, pa, rb, pb, "pchip")[k] for k in ("bd_rate_percent", "bd_psnr_db")}
        res["images"] = min(r["images"] for r in pair)
        out[b] = res
    return out


def matched_tables(rows, a: str = "cae", against=RIVALS) -> dict:
    """PSNR at matched sizes of ``a`` against each codec in ``against`` (those present), on
    the same digits: :data:`PCA_MATCHED_SIZES` against PCA, :data:`MATCHED_SIZES` against
    the others. Returns ``{other: matched_size_table(...)}``; each entry also gets
    ``images`` (the digits compared)."""
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        pair = same_digits(rows, a, b)
        table = matched_size_table(pair, PCA_MATCHED_SIZES if b == "pca" else MATCHED_SIZES, a, b)
        n = min(r["images"] for r in pair)
        out[b] = [{**m, "images": n} for m in table]
    return out


def files_vs_memory(rows) -> list[dict]:
    """For each quality measured both ways: mean bytes and PSNR through files (``"cae"``,
    route ``"files"``) and in memory (``"cae_memory"``), and the PSNR difference."""
    memory = {r["setting"]: r for r in rows if r["codec"] == "cae_memory"}
    out = []
    for r in rows:
        if r["codec"] == "cae" and r.get("route") == "files" and r["setting"] in memory:
            m = memory[r["setting"]]
            out.append({"quality": r["setting"], "images": r["images"], "bytes_files": r["mean_bytes"],
                        "bytes_memory": m["mean_bytes"], "psnr_files_db": r["psnr_db"],
                        "psnr_memory_db": m["psnr_db"], "psnr_difference_db": r["psnr_db"] - m["psnr_db"]})
    return out


def rd_bars(rows, bd: dict, matched: dict, throughput: dict | None = None,
            full_test_images: int = 10_000) -> list[dict]:
    """Check the learned codec against the course issues' bars, from measured numbers.

    ``matched``: :func:`matched_tables`. The bars: (1) at every size from 60 to 250 B the
    CAE beats WebP, JPEG XL, JPEG, JPEG 2000 and AVIF; (2) from 25 to 250 B it beats PCA
    (same coder, same header); (3) readable digits (classifier accuracy >=
    :data:`READABLE_ACCURACY`) at 25 B or less; (4) through files, each quality's PSNR
    within 0.1 dB of the in-memory figure (when both were measured); (5) BD-rate against
    WebP <= -30 % and against JPEG <= -70 %; (6) encode + decode of ``full_test_images``
    digits in <= 30 s at every quality (``throughput``: quality -> :func:`codec_throughput`;
    measured on fewer images, the time is scaled up and marked as a projection).

    Returns one dict per bar: ``bar`` (text), ``met`` (True/False), ``evidence`` (text).
    """
    bars = []
    classic = [c for c in RIVALS if c != "pca" and c in matched]
    losses = [f"{c} at {m['bytes']} B" for c in classic for m in matched[c] if m["winner"] != "cae"]
    bars.append({"bar": "CAE PSNR beats " + ", ".join(classic) + " at every matched size (60-250 B)",
                 "met": bool(classic) and not losses,
                 "evidence": "CAE wins at all sizes" if not losses else "CAE loses or ties: " + "; ".join(losses)})
    pca = matched.get("pca", [])
    losses = [m for m in pca if m["winner"] != "cae"]
    bars.append({"bar": f"CAE PSNR beats PCA at every matched size ({PCA_MATCHED_SIZES[0]}-{PCA_MATCHED_SIZES[-1]} B)",
                 "met": bool(pca) and not losses,
                 "evidence": ("CAE wins at all sizes" if pca and not losses else
                              "not measured" if not pca else "CAE loses or ties at " + ", ".join(
                                  f"{m['bytes']} B ({m['note'] or 'PSNR %.2f vs %.2f dB' % (m['psnr_cae'], m['psnr_pca'])})"
                                  for m in losses))})
    readable = smallest_row(rows, "cae", READABLE_ACCURACY)
    bars.append({"bar": f"readable digits (accuracy >= {READABLE_ACCURACY:.0%}) at 25 B or less",
                 "met": readable is not None and readable["mean_bytes"] <= 25.0,
                 "evidence": ("no CAE quality reaches the accuracy" if readable is None else
                              f"smallest readable CAE quality q{readable['setting']}: {readable['mean_bytes']:.1f} B "
                              f"at {readable['accuracy']:.1%}")})
    check = files_vs_memory(rows)
    if check:
        worst = max(check, key=lambda c: abs(c["psnr_difference_db"]))
        bars.append({"bar": "through files, each quality within 0.1 dB of the in-memory PSNR",
                     "met": abs(worst["psnr_difference_db"]) <= 0.1,
                     "evidence": f"largest difference {worst['psnr_difference_db']:+.3f} dB (q{worst['quality']}, "
                                 f"{worst['images']:,} digits)"})
    for other, limit in (("webp", -30.0), ("jpeg", -70.0)):
        res = bd.get(other, {})
        value = res.get("bd_rate_percent")
        bars.append({"bar": f"BD-rate vs {other.upper()} <= {limit:.0f} %",
                     "met": value is not None and value <= limit,
                     "evidence": (f"{value:+.1f} % over {res['psnr_overlap_db'][0]:.1f}-"
                                  f"{res['psnr_overlap_db'][1]:.1f} dB" if value is not None
                                  else f"no value: {res.get('reason', 'not measured')}")})
    if throughput:
        worst_q = max(throughput, key=lambda q: throughput[q]["seconds"] / throughput[q]["images"])
        t = throughput[worst_q]
        projected = t["seconds"] * full_test_images / t["images"]
        how = ("measured" if t["images"] == full_test_images
               else f"projected from {t['images']} digits")
        bars.append({"bar": f"encode + decode of {full_test_images:,} digits <= 30 s",
                     "met": projected <= 30.0,
                     "evidence": f"slowest quality q{worst_q}: {projected:.1f} s ({how})"})
    return bars


def rd_table_text(rows) -> str:
    """The measured rows as a plain-text table (one line per codec setting)."""
    head = (f"{'codec':<16}{'setting':>13}{'digits':>7}{'bytes':>8}{'bpp':>6}{'PSNR dB':>9}"
            f"{'SSIM':>7}{'acc %':>7}{'est. payload':>13}{'gap B':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        est = r.get("estimated_payload_bytes")
        gap = r.get("gap_bytes")
        lines.append(
            f"{r['codec']:<16}{str(r['setting']):>13}{r['images']:>7}{r['mean_bytes']:>8.1f}"
            f"{r['bpp']:>6.2f}{r['psnr_db']:>9.2f}{r['ssim']:>7.3f}"
            f"{(100 * r['accuracy']) if r.get('accuracy') is not None else float('nan'):>7.1f}"
            f"{est if est is not None else float('nan'):>13.1f}{gap if gap is not None else float('nan'):>7.1f}")
    return "\n".join(lines).replace(" nan", "   -")

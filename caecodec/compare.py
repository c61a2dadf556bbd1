"""The digit comparison: every codec on the same digits, through real bytes.

Notebook 05 and ``benchmarks/rate_distortion.py`` share it: the learned codec, the float
latent, PNG, WebP, JPEG, AVIF and PCA, each as mean whole-file bytes, PSNR, SSIM and a
classifier's accuracy on the decoded digits; then BD-rates, matched sizes and the bars.
Conventions: ``images_u8`` are ``uint8`` ``(N, 28, 28)``; "bytes" always means whole
files, headers included; PSNR is of the mean MSE over the images.
"""
from __future__ import annotations

import numpy as np

from .bdrate import bd_compare, pareto_rows
from .classic import (
    AVIF_QUALITIES,
    JPEG_QUALITIES,
    WEBP_QUALITIES,
    avif_supported,
    classic_decode,
    classic_encode,
)
from .digit_codec import available_qualities, load_codec
from .formats import pack_float_latent, unpack_float_latent, unpack_v1
from .images import PIXELS_PER_DIGIT, to_float_images, u8_batch
from .metrics import rd_metrics
from .modelio import decode_latents, encode_digits, load_model, model_fingerprint
from .pca import PCACodec

#: Classifier accuracy from which decoded digits count as "readable".
READABLE_ACCURACY = 0.95


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
    mean_bytes = float(sizes.mean())
    black = np.asarray(originals_u8) == 0
    row = {"codec": codec, "setting": setting, "images": int(len(sizes)), "mean_bytes": mean_bytes,
           "bpp": mean_bytes * 8 / PIXELS_PER_DIGIT, **rd_metrics(originals_u8, decoded_u8),
           "background_level": float(decoded_u8[black].mean()) if black.any() else 0.0,
           "accuracy": (classifier_accuracy(classifier, decoded_u8, labels)
                        if classifier is not None else None)}
    return {**row, **extra, "sizes": sizes, "decoded": decoded_u8}


def rd_summary(result: dict) -> dict:
    """A :func:`rd_result` without its arrays (``sizes``, ``decoded``, ``kept``): JSON-ready."""
    return {k: v for k, v in result.items() if k not in ("sizes", "decoded", "kept")}


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


def classifier_accuracy(model, images, labels) -> float:
    """Share of ``images`` (uint8 ``(N, 28, 28)`` or float ``(N, 28, 28, 1)`` in [0, 1]) that
    ``model`` labels correctly, in [0, 1]."""
    images = np.asarray(images)
    x = to_float_images(images) if images.dtype == np.uint8 else images.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    probs = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))


def rate_distortion_rows(images_u8: np.ndarray, labels=None, classifier=None, *, qualities=None,
                         pca_codecs=(), jpeg_qualities=JPEG_QUALITIES, webp_qualities=WEBP_QUALITIES,
                         avif_qualities=AVIF_QUALITIES, avif_images: int | None = 500, keep=(),
                         progress=None) -> list[dict]:
    """Measure every codec on the same digits: the learned codec (each quality), the float
    latent (v0), PNG, WebP lossless, JPEG, WebP, AVIF sweeps and the given PCA codecs.

    ``images_u8``: uint8 ``(N, 28, 28)``; ``labels`` and ``classifier`` add accuracy.
    AVIF encodes slowly (about 40 ms a digit), so it runs on the first ``avif_images``
    digits only (None: all); its rows say how many. ``keep``: indices of digits whose
    decoded images are kept in each row as ``"kept"`` (uint8 ``(len(keep), 28, 28)``);
    the full decoded arrays are dropped to save memory, the per-image ``sizes`` stay.
    ``progress``: called with each finished row (e.g. to print it). Returns the rows
    (:func:`rd_result` dicts) in a fixed order.
    """
    import time

    images_u8 = u8_batch(images_u8)
    qualities = available_qualities() if qualities is None else list(qualities)
    jobs = [(f"cae q{q}", lambda q=q: measure_learned(load_codec(q), images_u8, classifier, labels))
            for q in qualities]
    jobs.append(("float latent", lambda: measure_float_latent(images_u8, None, classifier, labels)))
    jobs += [(fmt, lambda fmt=fmt: measure_classic(images_u8, fmt, None, classifier, labels))
             for fmt in ("png", "webp_lossless")]
    for fmt, sweep in (("jpeg", jpeg_qualities), ("webp", webp_qualities)):
        jobs += [(f"{fmt} q{q}", lambda fmt=fmt, q=q: measure_classic(images_u8, fmt, q, classifier, labels))
                 for q in sweep]
    if avif_qualities and avif_supported():
        n = len(images_u8) if avif_images is None else min(int(avif_images), len(images_u8))
        sub_labels = None if labels is None else np.asarray(labels)[:n]
        jobs += [(f"avif q{q}", lambda q=q, n=n, sl=sub_labels:
                  measure_classic(images_u8[:n], "avif", q, classifier, sl)) for q in avif_qualities]
    jobs += [(f"pca k{c.k}", lambda c=c: measure_pca(c, images_u8, classifier, labels)) for c in pca_codecs]
    keep = np.asarray(keep, np.int64)
    rows = []
    for _, job in jobs:
        t0 = time.perf_counter()
        row = job()
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


def bd_table(rows, a: str = "cae", against=("webp", "jpeg", "pca", "avif")) -> dict:
    """Bjontegaard deltas of codec ``a`` against each codec in ``against`` (those present).

    Every curve is first reduced to its Pareto front (PSNR against mean bytes). Returns
    ``{other: bd_compare(...) plus "pchip": the same with a monotone piecewise-cubic fit}``;
    the cubic is the standard headline, the piecewise fit a check on it.
    """
    def front(c):
        pts = pareto_rows([r for r in rows if np.isfinite(r["psnr_db"])], c)
        return [r["mean_bytes"] for r in pts], [r["psnr_db"] for r in pts]

    ra, pa = front(a)
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        rb, pb = front(b)
        res = bd_compare(ra, pa, rb, pb, "cubic")
        res["pchip"] = {k: bd_compare(ra, pa, rb, pb, "pchip")[k] for k in ("bd_rate_percent", "bd_psnr_db")}
        out[b] = res
    return out


def rd_bars(rows, bd: dict, matched: list[dict], throughput: dict | None = None,
            full_test_images: int = 10_000) -> list[dict]:
    """Check the learned codec against the course issue's four bars, from measured numbers.

    1. at every size in ``matched`` (:func:`matched_size_table` against WebP) the CAE wins;
    2. BD-rate against WebP <= -30 % and against JPEG <= -70 % (from ``bd``, :func:`bd_table`);
    3. readable digits (classifier accuracy >= :data:`READABLE_ACCURACY`) at fewer mean
       bytes than WebP's smallest file;
    4. encode + decode of ``full_test_images`` digits in <= 30 s at every quality
       (``throughput``: quality -> :func:`codec_throughput`; measured on fewer images,
       the time is scaled up and marked as a projection).

    Returns one dict per bar: ``bar`` (text), ``met`` (True/False), ``evidence`` (text).
    """
    bars = []
    losses = [m for m in matched if m["winner"] != "cae"]
    bars.append({"bar": "CAE PSNR beats WebP at every matched size "
                        f"({matched[0]['bytes']}-{matched[-1]['bytes']} B)" if matched else "matched sizes",
                 "met": bool(matched) and not losses,
                 "evidence": ("CAE wins at all sizes" if not losses else "CAE loses or ties at "
                              + ", ".join(f"{m['bytes']} B" for m in losses))})
    for other, limit in (("webp", -30.0), ("jpeg", -70.0)):
        res = bd.get(other, {})
        value = res.get("bd_rate_percent")
        bars.append({"bar": f"BD-rate vs {other.upper()} <= {limit:.0f} %",
                     "met": value is not None and value <= limit,
                     "evidence": (f"{value:+.1f} % over {res['psnr_overlap_db'][0]:.1f}-"
                                  f"{res['psnr_overlap_db'][1]:.1f} dB" if value is not None
                                  else f"no value: {res.get('reason', 'not measured')}")})
    readable, webp_min = smallest_row(rows, "cae", READABLE_ACCURACY), smallest_row(rows, "webp")
    if readable is None or webp_min is None:
        bars.append({"bar": "readable digits below WebP's smallest file", "met": False,
                     "evidence": "no CAE quality reaches the accuracy" if readable is None
                                 else "WebP not measured"})
    else:
        bars.append({"bar": f"readable digits (accuracy >= {READABLE_ACCURACY:.0%}) at fewer bytes "
                            "than WebP's smallest file",
                     "met": readable["mean_bytes"] < webp_min["mean_bytes"],
                     "evidence": (f"CAE q{readable['setting']}: {readable['mean_bytes']:.1f} B at "
                                  f"{readable['accuracy']:.1%}; WebP q{webp_min['setting']}: "
                                  f"{webp_min['mean_bytes']:.1f} B at {webp_min['accuracy']:.1%}")})
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

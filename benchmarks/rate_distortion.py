"""Rate-distortion benchmark: the learned codec against classic codecs, in real bytes.

    python benchmarks/rate_distortion.py [--quick] [--cli-repeats 5] [--out PATH]

On the MNIST test set (all 10,000 digits; quick mode, ``--quick`` or ``CAE_QUICK=1``: the
first 500) it measures, with whole-file bytes (headers included):

* the learned codec (``.cae`` v1) at every shipped quality **through the files a user
  gets**: the test digits saved as PNGs, ``cae encode FOLDER OUT --quality N`` and
  ``cae decode`` run as fresh processes (``python -m caecodec``), sizes of the ``.cae``
  files and PSNR of the decoded PNGs; beside it the same codec on arrays in memory
  (``cae_memory``), with the model's own estimate of the payload;
* the float latent of notebook 04 (``.cae`` v0, 524 bytes);
* PNG, WebP lossless, JPEG XL lossless and JPEG-LS; JPEG, WebP, JPEG XL, JPEG 2000 and
  AVIF quality sweeps (AVIF on the first 500 digits, JPEG XL on the first 2,000; quick
  mode 100: they encode at tens of milliseconds a digit);
* a PCA transform coder with the same range coder and header (several settings; the
  Pareto front is what counts).

From these: Bjontegaard deltas of the learned codec (through files) against each codec,
on the same digits; PSNR at matched sizes (60-250 B; against PCA from 25 B); the smallest
readable file size (classifier accuracy >= 95 %); batch throughput of compress +
decompress per quality; the median wall time of single-file command-line encode and
decode (``python cae_utils.py encode ... --quality 3``, a fresh Python process each time);
and the issues' bars, met or not. Every number comes from ``caecodec.compare``, the same
functions notebook 05 uses.

Prints a readable report and writes JSON to ``benchmarks/results/rate_distortion.json``
(quick: ``benchmarks/results/quick/rate_distortion.json``), atomically.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on 2000 training / 500 test digits (same as CAE_QUICK=1)")
    parser.add_argument("--cli-repeats", type=int, default=5,
                        help="repeats of the command-line encode and decode timing (median)")
    parser.add_argument("--cli-quality", type=int, default=3, help="quality for the CLI timing")
    parser.add_argument("--classifier-epochs", type=int, default=None,
                        help="digit classifier epochs (default 3; quick mode 12, as in notebook 05)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: see above)")
    return parser.parse_args(argv)


ARGS = _parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None and ARGS.quick:
    os.environ["CAE_QUICK"] = "1"  # before cae_utils is imported: it reads quick mode once

sys.path.insert(0, str(HERE.parent))
import numpy as np  # noqa: E402

import cae_utils as cu  # noqa: E402
from caecodec import bdrate, classic, codec_training, compare, digit_codec, fileio, machine, modelio, pca as pca_codec  # noqa: E402


def _atomic_write(path: Path, text: str) -> None:
    """Write the JSON report atomically (cae_utils' writer: temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_bytes(path, text.encode())


def cli_timing(digit_u8: np.ndarray, quality: int, repeats: int) -> dict:
    """Median wall time of ``python cae_utils.py encode|decode`` on one digit PNG.

    Each run is a fresh process, so the time includes starting Python, importing
    TensorFlow and loading the model: what a user waits for at the command line.
    """
    from PIL import Image

    script = cu.ROOT / "cae_utils.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    times = {"encode": [], "decode": []}
    with tempfile.TemporaryDirectory(prefix="cae_rd_cli_") as tmp:
        tmp = Path(tmp)
        png, cae, out = tmp / "digit.png", tmp / "digit.cae", tmp / "back.png"
        Image.fromarray(digit_u8, mode="L").save(png)
        for _ in range(repeats):
            for cmd, args in (("encode", [png, cae, "--quality", str(quality)]), ("decode", [cae, out])):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, str(script), cmd, *map(str, args), "--force"],
                               check=True, capture_output=True, env=env)
                times[cmd].append(time.perf_counter() - t0)
        size = cae.stat().st_size
    return {"quality": quality, "repeats": repeats, "file_bytes": size,
            "encode_median_seconds": statistics.median(times["encode"]),
            "decode_median_seconds": statistics.median(times["decode"]),
            "encode_seconds": times["encode"], "decode_seconds": times["decode"]}


def _extra_versions() -> dict:
    """Versions of the libraries this benchmark adds to modelio.library_versions()'s list."""
    from importlib.metadata import version

    return {name: version(name) for name in ("constriction", "scikit-image", "scipy")}


def _fmt(value, spec: str, missing: str = "-") -> str:
    """``value`` formatted with ``spec``, or ``missing`` padded to the spec's width."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return f"{missing:>{width}}" if value is None else format(value, spec)


def main(args) -> int:
    started = time.time()
    out = Path(args.out) if args.out else HERE / "results" / ("quick" if cu.QUICK else "") / "rate_distortion.json"
    (x_train, y_train), (x_test, y_test) = cu.load_mnist()
    x_test_u8 = cu.to_uint8_images(x_test)
    qualities = digit_codec.available_qualities()
    missing = sorted(set(digit_codec.QUALITY_LAMBDAS) - set(qualities))
    load_before = machine.load_average()  # None on Windows
    print(f"{cu.mode_banner()}\nLearned-codec qualities found: {qualities}"
          + (f" (MISSING: {missing})" if missing else ""), flush=True)

    epochs = args.classifier_epochs or (12 if cu.QUICK else 3)
    t0 = time.perf_counter()
    classifier = codec_training.train_digit_classifier(x_train, y_train, epochs=epochs)
    clean_accuracy = compare.classifier_accuracy(classifier, x_test_u8, y_test)
    classifier_seconds = time.perf_counter() - t0
    print(f"digit classifier: {epochs} epochs on {len(x_train):,} digits in {classifier_seconds:.0f} s; "
          f"{clean_accuracy:.2%} on the clean test digits", flush=True)

    t0 = time.perf_counter()
    pca = pca_codec.fit_pca(x_train)
    pca_codecs = [pca_codec.PCACodec(pca, k, step) for k, step in pca_codec.PCA_SETTINGS]
    print(f"PCA fitted and {len(pca_codecs)} code-table sets built in {time.perf_counter() - t0:.0f} s",
          flush=True)

    avif_images, jxl_images = (100, 100) if cu.QUICK else (500, 2000)
    print(f"\nMeasuring every codec on {len(x_test_u8):,} test digits (AVIF: first {avif_images}, "
          f"JPEG XL: first {jxl_images}); the learned codec through files with the command line:", flush=True)
    with tempfile.TemporaryDirectory(prefix="cae_rd_files_") as files_folder:
        rows = compare.rate_distortion_rows(
            x_test_u8, y_test, classifier, qualities=qualities, pca_codecs=pca_codecs,
            avif_images=avif_images, jxl_images=jxl_images, files_folder=files_folder,
            progress=lambda r: print(f"  {r['codec']:<17} {str(r['setting']):>13}: {r['mean_bytes']:7.1f} B "
                                     f"{r['psnr_db']:6.2f} dB ({r['seconds']:.1f} s)", flush=True))
    print("\n" + compare.rd_table_text(rows))

    check = compare.files_vs_memory(rows)
    print("\nThrough files (PNG -> cae encode -> .cae -> cae decode -> PNG) against in memory:")
    for c in check:
        print(f"  q{c['quality']:<3} files {c['bytes_files']:6.1f} B {c['psnr_files_db']:6.2f} dB | memory "
              f"{c['bytes_memory']:6.1f} B {c['psnr_memory_db']:6.2f} dB | difference {c['psnr_difference_db']:+.3f} dB")

    bd = compare.bd_table(rows, "cae")
    print("\nBjontegaard deltas of the learned codec (through files; cubic fit; pchip check in brackets):")
    for other, res in bd.items():
        ov = res["psnr_overlap_db"]
        print(f"  vs {other:<8} BD-rate {_fmt(res['bd_rate_percent'], '+7.1f')} % "
              f"[{_fmt(res['pchip']['bd_rate_percent'], '+.1f')}]  BD-PSNR {_fmt(res['bd_psnr_db'], '+6.2f')} dB "
              f"[{_fmt(res['pchip']['bd_psnr_db'], '+.2f')}]  "
              + (f"over {ov[0]:.1f}-{ov[1]:.1f} dB" if ov else "") + f", {res['images']:,} digits"
              + (f" ({res['reason']})" if res["reason"] else ""))

    matched = compare.matched_tables(rows, "cae")
    print("\nPSNR at matched sizes (interpolated along each codec's measured points; CAE minus rival):")
    for other, table in matched.items():
        print(f"  vs {other} ({table[0]['images']:,} digits):")
        for m in table:
            print(f"    {m['bytes']:>4} B: CAE {_fmt(m['psnr_cae'], '6.2f')} dB, {other} "
                  f"{_fmt(m['psnr_' + other], '6.2f')} dB, difference {_fmt(m['difference_db'], '+6.2f')} dB, "
                  f"winner {m['winner']}  {m['note']}")

    readable = {c: compare.smallest_row(rows, c, compare.READABLE_ACCURACY)
                for c in ("cae", "webp", "jpeg", "jxl", "pca")}
    webp_min = compare.smallest_row(rows, "webp")
    print(f"\nSmallest readable files (classifier accuracy >= {compare.READABLE_ACCURACY:.0%}; clean digits "
          f"{clean_accuracy:.2%}):")
    for c, r in readable.items():
        print(f"  {c:<5} " + (f"{r['setting']!s:>13}: {r['mean_bytes']:.1f} B at {r['accuracy']:.1%}"
                              if r else "none of the measured settings"))
    print(f"  WebP's smallest file: q{webp_min['setting']}, {webp_min['mean_bytes']:.1f} B at "
          f"{webp_min['accuracy']:.1%}")

    print(f"\nThroughput: compress + decompress of all {len(x_test):,} test digits in one batch:")
    throughput = {}
    for q in qualities:
        throughput[q] = compare.codec_throughput(digit_codec.load_codec(q), x_test)
        t = throughput[q]
        print(f"  q{q}: {t['seconds']:6.2f} s ({t['encode_seconds']:.2f} encode + {t['decode_seconds']:.2f} "
              f"decode) = {t['images_per_second']:,.0f} digits/s", flush=True)

    cli = None
    if args.cli_repeats > 0 and args.cli_quality in qualities:
        cli = cli_timing(x_test_u8[0], args.cli_quality, args.cli_repeats)
        print(f"\nCommand line, one digit, quality {cli['quality']} ({cli['file_bytes']} B file), median of "
              f"{cli['repeats']}: encode {cli['encode_median_seconds']:.2f} s, decode "
              f"{cli['decode_median_seconds']:.2f} s (each a fresh Python process: mostly importing "
              "TensorFlow and loading the model)")

    bars = compare.rd_bars(rows, bd, matched, throughput, full_test_images=10_000)
    print("\nThe issue's bars:")
    for b in bars:
        print(f"  [{'MET ' if b['met'] else 'MISS'}] {b['bar']}: {b['evidence']}")

    report = {
        "what": "Rate-distortion of the learned codec against classic codecs on MNIST test digits; "
                "whole-file bytes, PSNR of the mean MSE (peak 1.0), mean SSIM (7x7 window)",
        "mode": "quick" if cu.QUICK else "full",
        "test_images": int(len(x_test)), "train_images": int(len(x_train)),
        "qualities": qualities, "missing_qualities": missing,
        "classifier": {"epochs": epochs, "clean_test_accuracy": clean_accuracy,
                       "seconds": round(classifier_seconds, 1), "parameters": int(classifier.count_params())},
        "avif_images": avif_images if classic.avif_supported() else None,
        "jxl_images": jxl_images,
        "learned_codec_route": "through files: PNG -> python -m caecodec encode FOLDER -> .cae -> decode -> PNG "
                               "(codec 'cae'); in memory: codec 'cae_memory'",
        "files_vs_memory": check,
        "classic_settings": classic.CLASSIC_FORMATS,
        "pca_settings": [list(s) for s in pca_codec.PCA_SETTINGS],
        "rows": [compare.rd_summary(r) for r in rows],
        "pca_pareto_settings": [r["setting"] for r in bdrate.pareto_rows(rows, "pca")],
        "bd": bd,
        "matched_sizes": matched,
        "quality_lambdas": {str(q): digit_codec.QUALITY_LAMBDAS[q] for q in qualities},
        "smallest_readable": {c: (compare.rd_summary(r) if r else None) for c, r in readable.items()},
        "webp_smallest_file": compare.rd_summary(webp_min),
        "throughput": {str(q): t for q, t in throughput.items()},
        "cli": cli,
        "bars": bars,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_total": round(time.time() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.machine(),
                    "load_average_1min_before": load_before,
                    "load_average_1min_after": machine.load_average()},
        "versions": {**modelio.library_versions(), **_extra_versions()},
        "note": ("Times are wall-clock on a shared machine; the load averages show how busy it was. "
                 "Bytes and quality do not depend on the load."),
        "produced_by": "benchmarks/rate_distortion.py",
    }
    _atomic_write(out, json.dumps(fileio.finite_or_str(report), indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out} "
          f"in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

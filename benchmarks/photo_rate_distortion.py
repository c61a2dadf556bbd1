"""Photo benchmark: the photo codec against JPEG, WebP, AVIF, JPEG XL and JPEG 2000 on photos.

    python benchmarks/photo_rate_distortion.py [--quick] [--folder DIR] [--large 4096] [--out PATH]

On every image of the evaluation folder (``--folder``, else ``$CAE_PHOTO_DIR``, else
``data/photos``, else the 20 grayscale Kodak photos in ``../shared/data/kodak-gray256``;
quick mode: the first 4), with whole-file bytes (headers included), in one run:

* the photo codec (``.cae`` v3) at every shipped quality: bits per pixel, PSNR (mean of
  the per-image PSNR), SSIM, and the model's own rate estimate;
* JPEG (optimized Huffman tables), WebP, AVIF, JPEG XL (libjxl, effort 7) and JPEG 2000
  (OpenJPEG) over setting sweeps;
* Bjontegaard deltas of the photo codec against each, over 0.1 to 1 bits per pixel,
  for PSNR and for SSIM, and the PSNR range they cover;
* what each step of the entropy coding buys: the same pixels coded with the factorized
  prior alone, with DC prediction (.cae v2) and with the context model (v3, shipped);
* speed: encoding plus decoding a 768x512 photo in this process, model loading excluded
  (the first call, which also traces TensorFlow's graph, reported on its own);
* training time per stage, from the models' cards;
* the MNIST-trained digit codec forced onto the same photos (28x28 tiles): the 2018
  project's limitation 2, measured;
* a large image (``--large``, default 4096; quick mode 1024) at
  ``photo_eval.LARGE_IMAGE_QUALITY``: encode and decode through the command line in fresh
  processes, with wall time and peak resident memory, and a check that the decoded PNG has
  exactly the original size;
* the issue's goals, each with the measured value and whether it is met.

Prints a report and writes JSON to ``benchmarks/results/photo_rate_distortion.json``
(quick: ``benchmarks/results/quick/photo_rate_distortion.json``), atomically.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 photos, a 1024x1024 large image")
    parser.add_argument("--folder", default=None, help="folder of evaluation photos")
    parser.add_argument("--large", type=int, default=None, help="side of the large test image")
    parser.add_argument("--large-quality", type=int, default=None,
                        help="quality of the large-image test (default photo_eval.LARGE_IMAGE_QUALITY)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: see above)")
    return parser.parse_args(argv)


ARGS = _parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None and ARGS.quick:
    os.environ["CAE_QUICK"] = "1"  # before cae_utils is imported: it reads quick mode once

sys.path.insert(0, str(HERE.parent))
import cae_utils as cu  # noqa: E402
from caecodec import fileio, metrics, modelio, photo_codec, photo_eval
import numpy as np  # noqa: E402


def large_image_check(side: int, quality: int) -> dict:
    """Encode and decode a ``side`` x ``side`` photo mosaic through the command line."""
    from PIL import Image

    image = photo_eval.large_test_image(side)
    with tempfile.TemporaryDirectory() as tmp:
        src, cae, back = Path(tmp) / "large.png", Path(tmp) / "large.cae", Path(tmp) / "back.png"
        Image.fromarray(image).save(src)
        enc = photo_eval.cli_peak_memory(["encode", src, cae, "--mode", "photo", "--quality", quality])
        dec = photo_eval.cli_peak_memory(["decode", cae, back])
        decoded = np.asarray(Image.open(back))
        size = cae.stat().st_size
    return {"side": side, "quality": quality, "bytes": size, "bpp": 8.0 * size / image.size,
            "encode_seconds": enc["seconds"], "encode_peak_rss_mib": enc["peak_rss_mib"],
            "decode_seconds": dec["seconds"], "decode_peak_rss_mib": dec["peak_rss_mib"],
            "returncodes": [enc["returncode"], dec["returncode"]],
            "decoded_shape": list(decoded.shape), "exact_size": list(decoded.shape) == [side, side],
            **{k: v for k, v in metrics.photo_metrics(image, decoded).items()}}


def coding_steps(images: dict, rows: list[dict]) -> dict:
    """For every quality: mean bpp of the same symbols coded each way (same pixels), and
    the BD-rate (PSNR) against JPEG and WebP of each way's curve."""
    per_variant: dict = {}
    for q in photo_codec.photo_qualities():
        for name, codec in photo_eval.coding_variants(q).items():
            r = photo_eval.measure_photo_codec(codec, images)
            per_variant.setdefault(name, []).append({"quality": q, "bpp": r["bpp"], "psnr_db": r["psnr_db"],
                                                     "ssim": r["ssim"]})
    classic = [r for r in rows if r["codec"] != "cae"]
    out = {}
    for name, pts in per_variant.items():
        cae = [{"codec": "cae", "setting": p["quality"], **p} for p in pts]
        bd = photo_eval.photo_bd_table(cae + classic, against=("jpeg", "webp"))
        out[name] = {"points": pts, "bd_rate_percent": {k: v["bd_rate_percent"] for k, v in bd.items()}}
    return out


GOALS = [  # (name, metric, against, bar): BD-rate <= bar percent
    ("BD-rate (PSNR) against WebP <= 0%", "psnr_db", "webp", 0.0),
    ("BD-rate (PSNR) against JPEG <= -30%", "psnr_db", "jpeg", -30.0),
    ("BD-rate (SSIM) against JPEG <= 0%", "ssim", "jpeg", 0.0),
    ("moonshot: BD-rate (PSNR) against AVIF <= 0%", "psnr_db", "avif", 0.0),
]


def goal_rows(bd: dict, large: dict, speed: dict) -> list[dict]:
    """The issue's goals, each with the measured value and whether it is met."""
    out = []
    for name, metric, codec, bar in GOALS:
        v = bd[metric].get(codec, {}).get("bd_rate_percent")
        out.append({"goal": name, "measured": None if v is None else f"{v:+.1f}%",
                    "met": v is not None and v <= bar})
    peak = max(large["encode_peak_rss_mib"], large["decode_peak_rss_mib"])
    out.append({"goal": f"{large['side']}x{large['side']} encodes and decodes within 4 GiB",
                "measured": f"peak {peak:,.0f} MiB, exact size: {large['exact_size']}",
                "met": peak <= 4096 and large["exact_size"] and large["returncodes"] == [0, 0]})
    total = speed["encode_plus_decode_seconds"]
    out.append({"goal": f"encode + decode of a {speed['width']}x{speed['height']} photo <= 5 s (2 cores)",
                "measured": f"{total:.2f} s ({speed['encode_seconds']:.2f} + {speed['decode_seconds']:.2f} s)",
                "met": total <= 5.0})
    return out


def main() -> int:
    args = ARGS or _parse_args([])
    folder = Path(args.folder) if args.folder else photo_eval.photo_eval_folder()
    images = photo_eval.load_photo_folder(folder, limit=4 if cu.QUICK else None)
    print(f"{len(images)} photos from {folder}; photo qualities {photo_codec.photo_qualities()}", flush=True)
    t0 = time.perf_counter()
    rows = photo_eval.photo_rate_distortion(images, keep_per_image=False)
    rd_seconds = time.perf_counter() - t0
    bd = {m: photo_eval.photo_bd_table(rows, metric=m) for m in ("psnr_db", "ssim")}
    digit = photo_eval.digit_codec_on_photos(images)
    steps = coding_steps(images, rows)
    speed = photo_eval.speed_test(args.large_quality or photo_eval.LARGE_IMAGE_QUALITY)
    large = large_image_check(args.large or (1024 if cu.QUICK else 4096),
                              args.large_quality or photo_eval.LARGE_IMAGE_QUALITY)
    goals = goal_rows(bd, large, speed)

    print("\ncodec     setting    bpp     PSNR    SSIM")
    for r in rows + digit:
        print(f"{r['codec']:<16}{str(r['setting']):>4} {r['bpp']:7.3f} {r['psnr_db']:7.2f} {r['ssim']:7.3f}")
    for metric, table in bd.items():
        for codec, d in table.items():
            val = d["bd_rate_percent"]
            print(f"BD-rate ({metric}) against {codec}, {d['bpp_range'][0]}-{d['bpp_range'][1]} bpp: "
                  + (f"{val:+.1f}%" if val is not None else f"n/a ({d['reason']})")
                  + f"  [{d['points'][0]} and {d['points'][1]} points]")
    for name, d in steps.items():
        print(f"coding: {name:22} bpp " + " ".join(f"q{p['quality']} {p['bpp']:.4f}" for p in d["points"])
              + "; BD-rate " + ", ".join(f"{k} {v:+.1f}%" for k, v in d["bd_rate_percent"].items() if v is not None))
    print(f"speed, {speed['width']}x{speed['height']} q{speed['quality']}: encode {speed['encode_seconds']:.2f} s, "
          f"decode {speed['decode_seconds']:.2f} s (first calls {speed['first_encode_seconds']:.2f} s and "
          f"{speed['first_decode_seconds']:.2f} s)")
    print(f"large image {large['side']}x{large['side']}: {large['bytes']:,} B ({large['bpp']:.3f} bpp), "
          f"{large['psnr_db']:.2f} dB; encode {large['encode_seconds']:.1f} s, peak "
          f"{large['encode_peak_rss_mib']:.0f} MiB; decode {large['decode_seconds']:.1f} s, peak "
          f"{large['decode_peak_rss_mib']:.0f} MiB; exact size: {large['exact_size']}")

    result = {
        "benchmark": "photo_rate_distortion", "quick": cu.QUICK,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": modelio.library_versions(), "folder": os.path.relpath(folder, HERE.parent),
        "images": len(images),
        "image_names": list(images), "rd_seconds": rd_seconds, "rows": rows,
        "bd": bd, "mnist_codec_on_photos": digit, "large_image": large, "speed": speed,
        "coding_steps": steps, "goals": goals,
        "photo_models": {q: {"total_train_seconds": r["total_train_seconds"], "stages": r["stages"],
                             "parameters": r["parameters"]} for q, r in
                         ((r["quality"], r) for r in photo_eval.photo_card_rows())},
    }
    for g in goals:
        print(f"goal: {g['goal']}: {g['measured']} -> {'met' if g['met'] else 'NOT met'}")
    out = Path(args.out) if args.out else (HERE / "results" / ("quick" if cu.QUICK else "") /
                                            "photo_rate_distortion.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_bytes(out, (json.dumps(fileio.finite_or_str(result), indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the lossless digit codec on the 10,000 MNIST test digits; write JSON.

    python benchmarks/lossless.py [--images N] [--user-path N]

Measures, and writes to benchmarks/results/lossless.json:

* the learned codec (the shipped caecodec/models/lossless.keras): mean file bytes and bits
  per pixel, headers included; how many digits decode bit-exactly; the model's estimate;
  encode and decode times for all digits at once (wall clock and CPU; the machine is
  shared, so the 1-minute load average is recorded too);
* the user's path: digits written as PNG files, ``cae encode --lossless`` and ``cae decode``
  in-process (caecodec.files), the decoded PNGs compared with the originals and the .cae
  bytes with the batch run's;
* PNG, WebP lossless, JPEG XL lossless (effort 9), JPEG-LS and JPEG 2000 reversible on the
  same digits, each decoded and checked;
* where the bits go (per level and per kind of pixel), the model's size and training time
  (from its card), and the issue's goals, each with met / not met.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from caecodec import fileio, files, lossless, lossless_eval, machine  # noqa: E402
from caecodec.mnist import load_mnist_u8  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "lossless.json"


def user_path(codec, x_u8: np.ndarray, batch_files: list[bytes]) -> dict:
    """PNG file -> .cae (encode --lossless) -> PNG, through caecodec.files, digit by digit."""
    from PIL import Image

    exact = same_bytes = 0
    sizes = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, digit in enumerate(x_u8):
            png, cae, back = tmp / f"{i}.png", tmp / f"{i}.cae", tmp / f"{i}.out.png"
            Image.fromarray(digit, mode="L").save(png)
            info = files.encode_image_file(png, cae, lossless=True)
            files.decode_cae_file(cae, back)
            with Image.open(back) as img:
                exact += int(img.mode == "L" and np.array_equal(np.asarray(img), digit))
            data = cae.read_bytes()
            same_bytes += int(data == batch_files[i])
            sizes.append(info["bytes"])
            for p in (png, cae, back):
                p.unlink()
    return {"images": int(len(x_u8)), "mean_bytes": float(np.mean(sizes)), "bit_exact_png": exact,
            "same_bytes_as_batch": same_bytes, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000, help="test digits (default: all 10,000)")
    ap.add_argument("--user-path", type=int, default=10_000,
                    help="digits also sent through image files one by one (default: all)")
    args = ap.parse_args(argv)
    (train_u8, _), (test_u8, labels) = load_mnist_u8()
    x = test_u8[:args.images]
    codec = lossless.load_lossless_codec()
    card = codec.card
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "test_images": int(len(x)), "cpus": os.cpu_count(), "load_average_start": machine.load_average(),
              "model": "caecodec/models/lossless.keras", "fingerprint": codec.fingerprint.hex()}

    c0 = time.process_time()
    row = lossless_eval.learned_lossless_row(codec, x)
    cpu = time.process_time() - c0
    row["cpu_seconds"] = round(cpu, 1)
    print(f"learned: {row['mean_bytes']:.2f} B ({row['bpp']:.3f} bpp), {row['bit_exact']:,}/{len(x):,} "
          f"bit-exact, encode {row['encode_seconds']:.1f} s + decode {row['decode_seconds']:.1f} s "
          f"(CPU {cpu:.1f} s; load average {machine.load_average()})", flush=True)
    learned_files = row.pop("files")
    estimates = row.pop("estimates")
    sizes = row["sizes"]
    header = 8
    row["coder_gap_bytes"] = float((sizes - header - estimates).mean())
    classic = lossless_eval.classic_lossless_rows(x)
    for r in classic:
        print(f"{r['label']:28s} {r['mean_bytes']:7.2f} B  {r['bpp']:.3f} bpp  exact {r['bit_exact']:,}", flush=True)
    bits = codec.pixel_bits(x)
    result["where_bits_go"] = {"levels": lossless_eval.bits_by_level(bits),
                               "classes": lossless_eval.bits_by_class(bits, x)}
    result["baselines_bits_per_digit"] = {
        "raw_8_bits": 784 * 8.0, "zero_order_histogram": lossless_eval.zero_order_bits(x, train_u8),
        "positional_histograms": lossless_eval.positional_bits(x, train_u8),
        "learned_model": float(bits.sum(axis=(1, 2)).mean())}
    result["per_class_mean_bytes"] = {str(d): float(sizes[labels[:len(x)] == d].mean()) for d in range(10)}
    n_user = min(args.user_path, len(x))
    if n_user:
        result["user_path"] = user_path(codec, x[:n_user], learned_files[:n_user])
        print(f"user path on {n_user:,} digits: {result['user_path']}", flush=True)

    rows = [row] + classic
    result["rows"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "sizes"}
                      for r in rows]
    jxl = next(r for r in classic if r["codec"] == "jxl_lossless")
    model_files = {p.name: p.stat().st_size for p in (lossless.lossless_model_path(),
                                                      lossless.lossless_model_path().with_suffix(".npz"))}
    train = next((s for s in card.get("stages", []) if s.get("stage") == "train"), {})
    total_s = row["encode_seconds"] + row["decode_seconds"]
    result["model"] = {"files": model_files, "total_bytes": int(sum(model_files.values())),
                       "train_seconds": train.get("seconds"), "train_steps": train.get("steps"),
                       "train_load_average": train.get("load_average")}
    result["goals"] = [
        {"goal": "bit-exact on all test digits", "met": row["bit_exact"] == len(x),
         "measured": f"{row['bit_exact']:,} of {len(x):,}"},
        {"goal": "mean file at most 115 B, headers included", "met": row["mean_bytes"] <= 115,
         "measured": f"{row['mean_bytes']:.2f} B ({row['bpp']:.3f} bpp); JPEG XL lossless "
                     f"{jxl['mean_bytes']:.2f} B, {100 * (1 - row['mean_bytes'] / jxl['mean_bytes']):.1f}% smaller"},
        {"goal": "moonshot: 1 bit per pixel (98 B) or less", "met": row["mean_bytes"] <= 98,
         "measured": f"{row['mean_bytes']:.2f} B"},
        {"goal": "encode + decode of the test digits in 120 s or less on 2 cores", "met": total_s <= 120,
         "measured": f"{total_s:.1f} s wall ({row['encode_seconds']:.1f} + {row['decode_seconds']:.1f}), "
                     f"{cpu:.1f} s CPU; load average {result['load_average_start']} at the start "
                     "(shared machine)"},
        {"goal": "training in 45 minutes or less, one command", "met": bool(train) and train["seconds"] <= 45 * 60,
         "measured": (f"{train['seconds'] / 60:.1f} min, {train['steps']:,} steps (scripts/train_lossless.py; "
                      f"load average {train.get('load_average')})") if train else "no card"},
        {"goal": "model at most 2 MB, with its JSON card", "met": sum(model_files.values()) <= 2_000_000,
         "measured": ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in model_files.items())},
    ]
    result["load_average_end"] = machine.load_average()
    fileio.write_json(OUT, result)
    print(f"wrote {OUT.relative_to(ROOT)}")
    for g in result["goals"]:
        print(f"  [{'met' if g['met'] else 'NOT met'}] {g['goal']}: {g['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

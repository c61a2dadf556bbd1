"""Train the lossless digit codec's model and ship it: one command, every stage in its card.

    python scripts/train_lossless.py                 # 40 minutes of training, then export
    python scripts/train_lossless.py --steps 4000    # a fixed number of steps instead
    python scripts/train_lossless.py --out /tmp/x.keras --minutes 2   # a trial elsewhere

Stages, each recorded in the model's JSON card (``caecodec/models/lossless.json``):

1. ``train``: the Keras model (caecodec.lossless_model) on the 60,000 MNIST training
   digits, Adam with warm-up and cosine decay, loss = bits per digit. By default the run
   has a wall-clock budget (--minutes), so it never takes longer on a busy machine; the
   card records the steps it got.
2. ``quantize``: the weights become the integer network (caecodec.lossless_net); its bits
   on the test digits are compared with the float model's.
3. ``evaluate``: all 10,000 test digits through real files: bytes, bits per pixel, how
   many decode bit-exactly, and the encode and decode times.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from caecodec import lossless, lossless_model, lossless_net, machine, modelio  # noqa: E402
from caecodec.images import to_float_images  # noqa: E402
from caecodec.mnist import load_mnist_u8  # noqa: E402


def evaluate(codec, x_test_u8: np.ndarray) -> dict:
    """Real bytes of every test digit, and whether each decodes exactly."""
    t0, c0 = time.perf_counter(), time.process_time()
    files = codec.compress(x_test_u8)
    t1, c1 = time.perf_counter(), time.process_time()
    back = codec.decompress(files)
    t2, c2 = time.perf_counter(), time.process_time()
    sizes = np.array([len(f) for f in files])
    return {"images": int(len(x_test_u8)), "mean_bytes": round(float(sizes.mean()), 3),
            "bits_per_pixel": round(float(8 * sizes.mean() / 784), 4),
            "bit_exact": int(np.all(back == x_test_u8, axis=(1, 2)).sum()),
            "encode_seconds": round(t1 - t0, 1), "decode_seconds": round(t2 - t1, 1),
            "encode_cpu_seconds": round(c1 - c0, 1), "decode_cpu_seconds": round(c2 - c1, 1),
            "load_average": machine.load_average()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=40.0, help="training budget (wall clock)")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--out", default=str(lossless.lossless_model_path()))
    ap.add_argument("--force", action="store_true", help="replace an existing model")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out} exists; pass --force to replace it", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    (x_train_u8, _), (x_test_u8, _) = load_mnist_u8()
    x_train = to_float_images(x_train_u8)
    arch = dict(lossless_model.DEFAULT_ARCH)
    trainer, _ = lossless_model.build_lossless_model(**arch)
    stages = []

    load0 = machine.load_average()
    budget = None if args.steps else args.minutes * 60
    r = lossless_model.train_lossless(trainer, x_train, steps=args.steps, seconds=budget,
                                      batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      verbose=2)
    stages.append({"stage": "train", "seconds": round(r["seconds"], 1), "steps": r["steps"],
                   "images_seen": r["images"], "epochs_seen": round(r["images"] / len(x_train), 2),
                   "budget_minutes": None if args.steps else args.minutes,
                   "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                   "optimizer": "adam, warm-up 300 steps, cosine decay to 0",
                   "final_train_bits": round(float(r["history"]["loss"][-1]), 2),
                   "load_average": [load0, machine.load_average()]})
    print(f"trained {r['steps']} steps ({r['images']:,} digits) in {r['seconds']:.0f} s", flush=True)

    t0 = time.perf_counter()
    q = lossless_net.quantize_network(lossless_model.network_weights(trainer))
    codec = lossless.LosslessCodec(q, arch["kernel"])
    sample = x_test_u8[:2000]
    float_bits = modelio.run_model(trainer, to_float_images(sample)).astype(np.float64)
    int_bits = codec.estimate_bits(sample)
    stages.append({"stage": "quantize", "seconds": round(time.perf_counter() - t0, 1),
                   "test_digits": len(sample),
                   "float_model_bytes": round(float(float_bits.mean() / 8), 3),
                   "integer_model_bytes": round(float(int_bits.mean() / 8), 3),
                   "max_difference_bits": round(float(np.abs(int_bits - float_bits).max()), 3)})
    print(f"quantized: {float_bits.mean() / 8:.2f} B (float) -> {int_bits.mean() / 8:.2f} B "
          "(integer network), on 2,000 test digits", flush=True)

    card = {"data": f"MNIST: {len(x_train):,} training digits; tested on {len(x_test_u8):,} test digits",
            "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
            "levels": [lv._asdict() for lv in lossless_net.LEVELS],
            "fingerprint_int": codec.fingerprint.hex(), "stages": stages,
            "produced_by": "scripts/train_lossless.py"}
    modelio.save_model(trainer, out, card, overwrite=args.force)
    lossless.save_integer_network(q, arch["kernel"], out)
    codec = lossless.load_lossless_codec(out)

    t0 = time.perf_counter()
    test = evaluate(codec, x_test_u8)
    test["estimated_payload_bytes"] = round(float(codec.estimate_bits(x_test_u8).mean() / 8), 3)
    stages.append({"stage": "evaluate", "seconds": round(time.perf_counter() - t0, 1), **test})
    sizes = {p.suffix: p.stat().st_size for p in (out, out.with_suffix(".npz"))}
    modelio.update_model_card(out, stages=stages, test=test, file_bytes=sizes,
                              total_seconds=round(time.perf_counter() - t_start, 1))
    print(f"test: {test['mean_bytes']:.2f} B per digit ({test['bits_per_pixel']:.3f} bpp), "
          f"{test['bit_exact']:,}/{test['images']:,} bit-exact, encode {test['encode_seconds']} s, "
          f"decode {test['decode_seconds']} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the learned codec's quality levels and save them as the shipped models.

    python scripts/train_codecs.py --qualities 6 5 4 --epochs 6 [--init-from 6] [--force]

Each quality is a rate-distortion CAE (models.build_rd_cae) trained with
codec_training.train_rd_cae for bits/784 + lambda * MSE_255 (lambda from
digit_codec.QUALITY_LAMBDAS) on the 60,000 MNIST training images. With --chain, each
quality after the first starts from the weights of the one before it (fine-tuning to
a new lambda is much faster than training from scratch). Metrics on the 10,000 test
images, measured through real bytes, go into each model's JSON card.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cae_utils as cu  # noqa: E402
from caecodec import codec_training, digit_codec, modelio, models


def evaluate(quality: int, x_test: np.ndarray) -> dict:
    """Real-bytes metrics of the saved codec ``quality`` on ``x_test``."""
    modelio.CODEC_CACHE.clear()
    codec = digit_codec.load_codec(quality)
    files = codec.compress(x_test)
    rec = codec.decompress(files)
    sizes = np.array([len(f) for f in files])
    est = codec.estimate_bits(codec.quantize(modelio.encode_digits(codec.encoder, x_test))) / 8
    m = cu.reconstruction_metrics(x_test, rec)
    return {"mean_bytes": float(sizes.mean()), "estimated_payload_bytes": float(est.mean()),
            "psnr_db": m["psnr_db"], "mse": m["mse"], "images": len(x_test)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", type=int, nargs="+", required=True)
    ap.add_argument("--epochs", type=int, default=6, help="epochs for the first quality")
    ap.add_argument("--chain-epochs", type=int, default=3, help="epochs for each later quality")
    ap.add_argument("--chain", action="store_true", help="warm-start each quality from the previous")
    ap.add_argument("--init-from", type=int, default=None, help="warm-start the first from this quality")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    (x_train, _), (x_test, _) = cu.load_mnist()
    previous, previous_lineage = None, []
    if args.init_from is not None:
        previous, _, _, init_card = modelio.load_model(digit_codec.rd_model_path(args.init_from))
        previous_lineage = init_card.get("lineage", [])
    for i, q in enumerate(args.qualities):
        lam = digit_codec.QUALITY_LAMBDAS[q]
        trainer, enc, dec, prior = models.build_rd_cae(args.channels, args.width)
        epochs = args.epochs
        if previous is not None:
            trainer.set_weights(previous.get_weights())
            epochs = args.chain_epochs
        t0 = time.perf_counter()
        r = codec_training.train_rd_cae(trainer, x_train, lam, epochs=epochs, batch_size=args.batch_size,
                            verbose=2)
        card = {"data": f"MNIST: {len(x_train)} training images; metrics on {len(x_test)} test images",
                "lambda": lam, "epochs": epochs, "batch_size": args.batch_size,
                "optimizer": "adam 1e-3, warm-up + cosine decay", "channels": args.channels,
                "width": args.width, "train_seconds": round(r["seconds"], 1),
                "warm_start_from": (args.qualities[i - 1] if i else args.init_from) if previous is not None else None,
                "produced_by": "scripts/train_codecs.py"}
        # Every training stage this model's weights went through, oldest first.
        card["lineage"] = previous_lineage + [{
            "quality": q, "lambda": lam, "epochs": epochs, "train_seconds": card["train_seconds"],
            "warm_start_from": card["warm_start_from"]}]
        card["total_epochs"] = sum(stage["epochs"] for stage in card["lineage"])
        card["total_train_seconds"] = round(sum(stage["train_seconds"] for stage in card["lineage"]), 1)
        digit_codec.save_codec(trainer, enc, dec, prior, q, card, overwrite=args.force)
        card["test"] = evaluate(q, x_test)
        path = modelio.update_model_card(digit_codec.rd_model_path(q), test=card["test"])
        print(f"quality {q} (lambda {lam}): {card['test']['mean_bytes']:.1f} B, "
              f"{card['test']['psnr_db']:.2f} dB, trained {r['seconds']:.0f} s "
              f"({time.perf_counter() - t0:.0f} s with evaluation) -> {path}", flush=True)
        if args.chain:
            previous, previous_lineage = trainer, card["lineage"]
        elif args.init_from is None:
            previous, previous_lineage = None, []
    return 0


if __name__ == "__main__":
    sys.exit(main())

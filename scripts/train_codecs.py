"""Train the learned digit codec's quality levels and save them as the shipped models.

    python scripts/train_codecs.py --ladder [--work DIR]
    python scripts/train_codecs.py --qualities 6 5 4 --epochs 6 [--chain] [--init-from 6] [--force]

Each quality is a rate-distortion CAE (``models.build_rd_cae``) trained with
``codec_training.train_rd_cae`` for ``bits/784 + lambda * MSE_255`` (lambda from
``digit_codec.QUALITY_LAMBDAS``) on the 60,000 MNIST training images, and code tables
counted per latent value on those images (``digit_codec.digit_code_tables``). Metrics on
the 10,000 test images, measured through real bytes, go into each model's JSON card,
with every training stage the weights went through (``lineage``).

``--ladder`` is the one command that made the shipped models from the previous ones
(see ``LADDER``): each new lambda is fine-tuned from the model of a neighbouring lambda
(found by the ``lambda`` in the cards), stage by stage; finished stages are kept in
``--work`` so an interrupted run resumes; at the end every quality is renumbered by
lambda, re-tabled, evaluated and saved. ``--qualities`` trains from scratch (or chained,
or from ``--init-from``) as before.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cae_utils as cu  # noqa: E402
from caecodec import codec_training, digit_codec, modelio, models, paths  # noqa: E402

#: The stages of ``--ladder``, in order: (name, lambda, start from, epochs, peak learning
#: rate). A start is an earlier stage's name, or "lambda=X": the shipped model of that
#: lambda (found by its card) when the ladder began.
LADDER = [
    ("lambda_0.0008", 0.0008, "lambda=0.0015", 1, 3e-4),  # below the old smallest (25 B and less)
    ("lambda_0.0005", 0.0005, "lambda_0.0008", 1, 3e-4),
    ("lambda_0.0003", 0.0003, "lambda_0.0005", 1, 3e-4),
    ("lambda_0.016", 0.016, "lambda=0.01", 1, 3e-4),     # fills the gap between the old q3 and q4
    ("lambda_0.025", 0.025, "lambda_0.016", 1, 3e-4),    # replaces the old q4 (SSIM below q3's)
    ("lambda_1.5", 1.5, "lambda=0.5", 1, 3e-4),          # above the old largest: PCA led above 200 B
    ("lambda_5", 5.0, "lambda_1.5", 1, 3e-4),
    ("lambda_5_more", 5.0, "lambda_5", 3, 5e-4),         # the top needs more training than 1 epoch
]
#: Quality -> the model it ships (a stage name, or "lambda=X" for a model kept as it was).
#: Its lambda is digit_codec.QUALITY_LAMBDAS[q], its step digit_codec.QUALITY_STEPS.
FINAL = {1: "lambda_0.0003", 2: "lambda_0.0005", 3: "lambda_0.0008", 4: "lambda=0.0015",
         5: "lambda=0.004", 6: "lambda=0.01", 7: "lambda_0.016", 8: "lambda_0.025",
         9: "lambda=0.07", 10: "lambda=0.2", 11: "lambda=0.5", 12: "lambda_5_more",
         13: "lambda_5_more", 14: "lambda_5_more"}


def evaluate(codec, x_test: np.ndarray) -> dict:
    """Real-bytes metrics of ``codec`` on ``x_test``."""
    files = codec.compress(x_test)
    rec = codec.decompress(files)
    sizes = np.array([len(f) for f in files])
    est = codec.estimate_bits(codec.quantize(modelio.encode_digits(codec.encoder, x_test))) / 8
    m = cu.reconstruction_metrics(x_test, rec)
    return {"mean_bytes": float(sizes.mean()), "estimated_payload_bytes": float(est.mean()),
            "psnr_db": m["psnr_db"], "mse": m["mse"], "images": len(x_test)}


def models_by_lambda(folder: Path) -> dict[float, Path]:
    """``{lambda: model path}`` of the rate-distortion models in ``folder`` (from their cards)."""
    found = {}
    for p in sorted(folder.glob("rd_*.keras")):
        card = json.loads(p.with_suffix(".json").read_text()) if p.with_suffix(".json").is_file() else {}
        if "lambda" in card:
            found[float(card["lambda"])] = p
    return found


def ladder(args, x_train, x_test) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # The shipped models the ladder starts from are copied once, so the run can resume
    # (and re-run its last step) after they were replaced.
    start = work / "start"
    if not start.is_dir():
        start.mkdir()
        for p in paths.MODELS_DIR.glob("rd_q*.*"):
            shutil.copy2(p, start / p.name)
    shipped = models_by_lambda(start)
    if not shipped:
        raise SystemExit(f"no rate-distortion models in {start} to start from")

    def source(name: str) -> Path:
        if name.startswith("lambda="):
            return shipped[float(name.split("=")[1])]
        return work / f"rd_{name}.keras"

    for name, lam, origin, epochs, lr in LADDER:
        out = work / f"rd_{name}.keras"
        if out.is_file():
            print(f"{name}: done before ({out})", flush=True)
            continue
        trainer, enc, dec, card = modelio.load_model(source(origin))
        prior = trainer.get_layer("prior")
        r = codec_training.train_rd_cae(trainer, x_train, lam, epochs=epochs, batch_size=args.batch_size,
                                        learning_rate=lr, verbose=2)
        stage = {"lambda": lam, "epochs": epochs, "learning_rate": lr, "batch_size": args.batch_size,
                 "train_seconds": round(r["seconds"], 1), "warm_start_from": origin,
                 "stage": name, "produced_by": "scripts/train_codecs.py --ladder"}
        new_card = {k: v for k, v in card.items() if k not in ("fingerprint", "versions", "parameters",
                                                               "model", "test", "quality")}
        new_card.update({"lambda": lam, "epochs": epochs, "train_seconds": stage["train_seconds"],
                         "warm_start_from": origin, "lineage": card.get("lineage", []) + [stage]})
        modelio.save_model(trainer, out, new_card, overwrite=True)
        codec = digit_codec.LearnedCodec(enc, dec, digit_codec.digit_code_tables(enc, prior, x_train),
                                         1, b"\0")
        t = evaluate(codec, x_test[:2000])
        print(f"{name} (lambda {lam:g} from {origin}): {t['mean_bytes']:.1f} B, {t['psnr_db']:.2f} dB on "
              f"2,000 test digits; trained {r['seconds']:.0f} s", flush=True)
    # Number every quality, count its tables, evaluate it, save it.
    staged = work / "final"
    staged.mkdir(exist_ok=True)
    for q, name in FINAL.items():
        lam, step = digit_codec.QUALITY_LAMBDAS[q], digit_codec.QUALITY_STEPS.get(q, 1.0)
        trainer, enc, dec, card = modelio.load_model(source(name))
        if float(card["lambda"]) != lam:
            raise SystemExit(f"quality {q}: {name} was trained for lambda {card['lambda']}, not {lam}")
        lineage = [dict(s) for s in card.get("lineage", [])]
        lineage.append({"stage": f"code tables counted per latent value on the {len(x_train):,} training "
                                 f"digits, quantization step {step:g}",
                        "produced_by": "scripts/train_codecs.py --ladder"})
        keep = {k: v for k, v in card.items() if k not in ("fingerprint", "versions", "parameters", "model",
                                                           "test", "quality")}
        keep.update({"lambda": lam, "step": step, "lineage": lineage, "tables": "counted per latent value",
                     "total_epochs": sum(s.get("epochs", 0) for s in lineage),
                     "total_train_seconds": round(sum(s.get("train_seconds", 0) for s in lineage), 1),
                     "lineage_note": "Stages before the ladder were numbered by the quality numbers of the "
                                     "time; the lambda of each stage identifies it. Wall times were measured "
                                     "while other jobs shared the 2 CPU cores."})
        with cu_models_dir(staged):
            path = digit_codec.save_codec(trainer, enc, dec, trainer.get_layer("prior"), q, keep,
                                          overwrite=True, count_on=x_train, step=step)
            modelio.CODEC_CACHE.clear()
            test = evaluate(digit_codec.load_codec(q), x_test)
            modelio.update_model_card(path, test=test)
        print(f"quality {q}: {name}, lambda {lam:g}, step {step:g}: {test['mean_bytes']:.1f} B, "
              f"{test['psnr_db']:.2f} dB on {len(x_test):,} test digits", flush=True)
    for old in paths.MODELS_DIR.glob("rd_q*.*"):
        old.unlink()
    for new in staged.iterdir():
        shutil.copy2(new, paths.MODELS_DIR / new.name)
    modelio.CODEC_CACHE.clear()
    print(f"wrote {len(FINAL)} qualities to {paths.shown(paths.MODELS_DIR)}")
    return 0


class cu_models_dir:
    """Point ``paths.MODELS_DIR`` at ``folder`` inside a ``with`` block."""

    def __init__(self, folder: Path):
        self.folder, self.saved = folder, None

    def __enter__(self):
        self.saved, paths.MODELS_DIR = paths.MODELS_DIR, self.folder

    def __exit__(self, *exc):
        paths.MODELS_DIR = self.saved


def from_scratch(args, x_train, x_test) -> int:
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
                "tables": "counted per latent value", "produced_by": "scripts/train_codecs.py"}
        # Every training stage this model's weights went through, oldest first.
        card["lineage"] = previous_lineage + [{
            "quality": q, "lambda": lam, "epochs": epochs, "train_seconds": card["train_seconds"],
            "warm_start_from": card["warm_start_from"]}]
        card["total_epochs"] = sum(stage["epochs"] for stage in card["lineage"])
        card["total_train_seconds"] = round(sum(stage["train_seconds"] for stage in card["lineage"]), 1)
        digit_codec.save_codec(trainer, enc, dec, prior, q, card, overwrite=args.force, count_on=x_train)
        modelio.CODEC_CACHE.clear()
        card["test"] = evaluate(digit_codec.load_codec(q), x_test)
        path = modelio.update_model_card(digit_codec.rd_model_path(q), test=card["test"])
        print(f"quality {q} (lambda {lam}): {card['test']['mean_bytes']:.1f} B, "
              f"{card['test']['psnr_db']:.2f} dB, trained {r['seconds']:.0f} s "
              f"({time.perf_counter() - t0:.0f} s with evaluation) -> {path}", flush=True)
        if args.chain:
            previous, previous_lineage = trainer, card["lineage"]
        elif args.init_from is None:
            previous, previous_lineage = None, []
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ladder", action="store_true", help="run the LADDER stages, then renumber and re-table")
    ap.add_argument("--work", default=str(paths.MODELS_DIR.parent.parent / "build" / "ladder"),
                    help="--ladder: folder for finished stages (resumable)")
    ap.add_argument("--qualities", type=int, nargs="+")
    ap.add_argument("--epochs", type=int, default=6, help="epochs for the first quality")
    ap.add_argument("--chain-epochs", type=int, default=3, help="epochs for each later quality")
    ap.add_argument("--chain", action="store_true", help="warm-start each quality from the previous")
    ap.add_argument("--init-from", type=int, default=None, help="warm-start the first from this quality")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if not args.ladder and not args.qualities:
        ap.error("give --ladder or --qualities")
    (x_train, _), (x_test, _) = cu.load_mnist()
    return ladder(args, x_train, x_test) if args.ladder else from_scratch(args, x_train, x_test)


if __name__ == "__main__":
    sys.exit(main())

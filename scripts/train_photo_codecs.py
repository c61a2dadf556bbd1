"""Train the photo codec's quality levels on scikit-image's bundled photographs.

    python scripts/train_photo_codecs.py --qualities 1 2 3 4 5 6 7 --force

reproduces the shipped models (``caecodec/models/photo_q*``) in one command, stage by
stage: (1) the network (below; quality 7 starts from quality 6's first-stage weights,
:data:`WARM_STARTS`), (2) the DC prediction table (``.cae`` v2) and (3) the context
model's tables (``.cae`` v3, :mod:`caecodec.photo_context`), both counted on the training
photos, and (4) the decoder refined alone on the encoder's latents rounded as the codec
rounds them (``codec_training.train_photo_decoder``; the encoder, the prior and the tables
stay as they are). Each stage and its wall time goes into the model's card (``lineage``).
``--context-only`` redoes stages 2 and 3, ``--refine-only`` stage 4, for already trained
models.

Each quality is a fully convolutional rate-distortion CAE (models.build_photo_cae,
an 8x8 stride-8 convolution started from the DCT plus a deblocking decoder)
trained by codec_training.train_photo_cae for bits per pixel + lambda * MSE_255 (lambda from
photo_codec.PHOTO_QUALITY_LAMBDAS) on random 128x128 crops of the photos listed in
photo_codec.PHOTO_TRAINING_IMAGES. The model card records every stage and its wall time,
so the whole cost of a quality can be read off. After training, the table of DC prediction residuals and the context
model are counted on the same training photos (codec_training.add_dc_prediction and
add_context_model). The evaluation photos (Kodak) are never used for training; they only
give each card its test metrics, measured through real bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cae_utils as cu  # noqa: E402
from caecodec import codec_training, fileio, modelio, models, photo_codec, photo_context, photo_eval


#: Qualities that start from another quality's first-stage weights (fine-tuning to a new
#: lambda is much faster than starting over), with their own number of steps. The start
#: moves the quantization step at once: the analysis filters are multiplied, and the
#: synthesis filters divided, by the ratio of the two qualities' gains (without it, a
#: measured run stayed where it started: quality 7 came out at quality 6's rate).
WARM_STARTS = {7: (6, 1500)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", type=int, nargs="+", required=True)
    ap.add_argument("--steps", type=int, default=4500, help="stage 1: training steps per quality")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 1e-3 from scratch, 5e-4 warm-started)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128, help="stage 1: crop size")
    ap.add_argument("--filters", type=int, default=32, help="width of the decoder's deblocking CNN")
    ap.add_argument("--gain", type=float, default=None,
                    help="initial DCT gain (default: photo_codec.PHOTO_QUALITY_GAINS[quality])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--refine-steps", type=int, default=1500, help="stage 4: steps of the decoder's refinement")
    ap.add_argument("--refine-patch", type=int, default=128, help="stage 4: crop size")
    ap.add_argument("--refine-lr", type=float, default=3e-4, help="stage 4: peak learning rate")
    ap.add_argument("--refine-only", action="store_true", help="only stage 4, for already trained models")
    ap.add_argument("--context-only", "--dc-only", dest="context_only", action="store_true",
                    help="do not train the network: only (re)count the DC prediction and context "
                         "tables of --qualities and re-measure their cards")
    args = ap.parse_args(argv)
    images = codec_training.photo_training_images()
    pixels = sum(a.size for a in images.values())
    print(f"training photos: {len(images)} ({pixels:,} pixels): {', '.join(images)}", flush=True)
    eval_images = photo_eval.load_photo_folder(photo_eval.photo_eval_folder()) if photo_eval.photo_eval_folder() else None
    if args.context_only or args.refine_only:
        for q in args.qualities:
            print((refine_stage(q, images, eval_images, args) if args.refine_only
                   else tables_stages(q, images, eval_images)), flush=True)
        return 0
    # All first stages first: a warm-started quality needs its source's first-stage weights.
    for q in sorted(args.qualities, key=lambda q: q in WARM_STARTS):
        print(network_stage(q, images, args), flush=True)
    for q in args.qualities:
        print(tables_stages(q, images, eval_images), flush=True)
        if args.refine_steps:
            print(refine_stage(q, images, eval_images, args), flush=True)
    return 0


def network_stage(q: int, images: dict, args) -> str:
    """Stage 1 for quality ``q``: the whole network for bits + lambda * MSE, from the DCT
    start (or from the first-stage weights of the quality in :data:`WARM_STARTS`)."""
    pixels = sum(a.size for a in images.values())
    lam = photo_codec.PHOTO_QUALITY_LAMBDAS[q]
    gain = args.gain or photo_codec.PHOTO_QUALITY_GAINS[q]
    trainer, enc, dec, prior = models.build_photo_cae(gain, args.filters, args.patch)
    source, steps = WARM_STARTS.get(q, (None, args.steps))
    init_lineage = []
    if source is not None:
        init, _, _, init_card = modelio.load_model(photo_codec.photo_model_path(source))
        if init_card.get("decoder_refined"):
            raise SystemExit(f"quality {source} already has a refined decoder (stage 4); quality {q} starts "
                             f"from its first-stage weights: train both in one run.")
        trainer.set_weights(init.get_weights())
        ratio = gain / photo_codec.PHOTO_QUALITY_GAINS[source]
        enc.get_layer("analysis").set_weights([w * ratio for w in enc.get_layer("analysis").get_weights()])
        dec.get_layer("synthesis").set_weights([w / ratio for w in dec.get_layer("synthesis").get_weights()])
        init_lineage = [s for s in init_card.get("lineage", []) if s.get("stage", "train network") == "train network"]
    lr = args.lr or (5e-4 if source is not None else 1e-3)
    patches = codec_training.photo_patches(images, steps * args.batch_size, args.patch, seed=args.seed * 1000 + q)
    r = codec_training.train_photo_cae(trainer, patches, lam, steps=steps, batch_size=args.batch_size,
                                       learning_rate=lr, seed=args.seed + q, verbose=2,
                                       log_every=max(steps // 10, 1))
    stage = {"quality": q, "lambda": lam, "initial_gain": gain, "steps": steps, "batch_size": args.batch_size,
             "patch": args.patch, "learning_rate": lr, "train_seconds": round(r["seconds"], 1),
             "warm_start_from": source, **({"gain_ratio": round(gain / photo_codec.PHOTO_QUALITY_GAINS[source], 4)}
                                           if source is not None else {})}
    lineage = init_lineage + [stage]
    card = {"data": f"scikit-image sample photos ({', '.join(images)}), {pixels:,} pixels, "
                    f"random {args.patch}x{args.patch} crops at scales 1, 0.75, 0.5",
            "lambda": lam, "initial_gain": gain, "filters": args.filters,
            "architecture": "8x8/8 convolution started from the DCT; transposed convolution + "
                            "3-layer residual deblocking CNN; factorized prior over 64 channels",
            "optimizer": f"adam {lr:g}, warm-up + cosine decay", "train_seconds": stage["train_seconds"],
            "lineage": lineage, "total_train_seconds": round(stage_seconds(lineage), 1),
            "history": {k: [float(v) for v in vals] for k, vals in r["history"].items()},
            "produced_by": "scripts/train_photo_codecs.py"}
    path = photo_codec.save_photo_codec(trainer, prior, q, card, overwrite=args.force)
    return f"quality {q} (lambda {lam}): trained {r['seconds']:.0f} s -> {path}"


def refine_stage(q: int, images: dict, eval_images: dict | None, args) -> str:
    """Stage 4 for quality ``q``: train the decoder alone on the encoder's latents rounded
    as the codec rounds them (codec_training.train_photo_decoder), and save the model. The
    encoder and the prior do not change, so neither do the symbols and the code tables
    (the DC and context tables are kept as they are)."""
    path = photo_codec.photo_model_path(q)
    trainer, enc, dec, card = modelio.load_model(path)
    if card.get("decoder_refined"):
        return f"quality {q}: the decoder is already refined; retrain stage 1 first (--force) to refine again"
    with np.load(path.with_suffix(".npz")) as npz:
        old_tables = {k: npz[k] for k in npz.files}
    patches = codec_training.photo_patches(images, args.refine_steps * args.batch_size, args.refine_patch,
                                           seed=args.seed * 1000 + 500 + q)
    r = codec_training.train_photo_decoder(enc, dec, old_tables, patches, steps=args.refine_steps,
                                           batch_size=args.batch_size, learning_rate=args.refine_lr,
                                           seed=args.seed + 500 + q, verbose=2,
                                           log_every=max(args.refine_steps // 10, 1))
    stage = {"stage": "refine decoder", "quality": q, "steps": args.refine_steps, "batch_size": args.batch_size,
             "patch": args.refine_patch, "learning_rate": args.refine_lr, "seconds": round(r["seconds"], 1),
             "mse": [float(v) for v in r["history"]["loss"]]}
    lineage = card.get("lineage", []) + [stage]
    keep = {k: v for k, v in card.items() if k not in ("model", "parameters", "fingerprint", "versions")}
    keep.update(lineage=lineage, decoder_refined=True, total_train_seconds=round(stage_seconds(lineage), 1))
    photo_codec.save_photo_codec(trainer, trainer.get_layer("prior"), q, keep, overwrite=True)
    codec_training._write_photo_tables(q, old_tables)  # the encoder and prior are unchanged: same tables
    msg = f"quality {q}: decoder refined in {r['seconds']:.0f} s"
    if eval_images:
        modelio.CODEC_CACHE.clear()
        m = photo_eval.measure_photo_codec(photo_codec.load_photo_codec(q), eval_images)
        before = card.get("test", {})
        modelio.update_model_card(path, test={k: m[k] for k in ("images", "bpp", "psnr_db", "ssim", "estimated_bpp")})
        msg += (f"; on {m['images']} test photos: {m['bpp']:.3f} bpp, {m['psnr_db']:.2f} dB "
                f"(before: {before.get('bpp', float('nan')):.3f} bpp, {before.get('psnr_db', float('nan')):.2f} dB)")
    modelio.CODEC_CACHE.clear()
    return msg


def stage_seconds(lineage: list[dict]) -> float:
    """Wall time of all the stages in ``lineage`` (stage 1 records ``train_seconds``)."""
    return sum(s.get("train_seconds", s.get("seconds", 0)) for s in lineage)


def tables_stages(q: int, images: dict, eval_images: dict | None) -> str:
    """Stages 2 and 3 for quality ``q``: the DC prediction table and the context model,
    counted on the training photos; each becomes a stage of the card's lineage (an
    earlier record of the same stage is replaced), and the card's test metrics are
    re-measured through real bytes on the evaluation photos."""
    import time

    path = photo_codec.photo_model_path(q)
    start = time.perf_counter()
    codec_training.add_dc_prediction(q, images)
    dc_seconds = time.perf_counter() - start
    ctx = codec_training.add_context_model(q, images)
    card = fileio.read_card(path)
    lineage = [s for s in card.get("lineage", []) if s.get("stage") not in ("dc prediction", "context model")]
    lineage += [{"stage": "dc prediction", "quality": q, "seconds": round(dc_seconds, 1), "images": len(images)},
                {"stage": "context model", "quality": q, "seconds": round(ctx["seconds"], 1), "images": ctx["images"],
                 "blocks": ctx["blocks"], "buckets": photo_context.CONTEXT_BUCKETS,
                 "dc_buckets": photo_context.DC_BUCKETS}]
    fields = {"lineage": lineage, "total_train_seconds": round(stage_seconds(lineage), 1), "dc_prediction": True,
              "coding": "context model (.cae version 3): MED-predicted DC, checkerboard AC contexts"}
    msg = f"quality {q}: DC table {dc_seconds:.0f} s, context model {ctx['seconds']:.0f} s"
    if eval_images:
        modelio.CODEC_CACHE.clear()
        m = photo_eval.measure_photo_codec(photo_codec.load_photo_codec(q), eval_images)
        fields["test"] = {k: m[k] for k in ("images", "bpp", "psnr_db", "ssim", "estimated_bpp")}
        msg += f"; on {m['images']} test photos: {m['bpp']:.3f} bpp, {m['psnr_db']:.2f} dB"
    modelio.update_model_card(path, **fields)
    modelio.CODEC_CACHE.clear()
    return msg


if __name__ == "__main__":
    sys.exit(main())

"""Train the improved CAE with the course's recipe and save it as the shipped model.

    python scripts/train_pretrained.py [--out models/improved_cae.keras] [--force]

Uses exactly the recipe notebook 03 trains in view (training.train_autoencoder, i.e. Keras
compile and fit, with training.IMPROVED_RECIPE, from seed 42) on all 60,000 MNIST training
images, evaluates on the 10,000 test images, and writes the .keras file plus its JSON card
(data, recipe, metrics, training time, library versions).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cae_utils as cu  # noqa: E402
from caecodec import modelio, models, training


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(modelio.DEFAULT_MODEL))
    parser.add_argument("--force", action="store_true", help="replace an existing model")
    args = parser.parse_args(argv)
    if cu.QUICK:
        print("refusing to train the shipped model in quick mode (unset CAE_QUICK)", file=sys.stderr)
        return 2
    (x_train, _), (x_test, _) = cu.load_mnist()
    recipe = dict(training.IMPROVED_RECIPE)
    cu.set_seed(42)  # the same initial weights as notebook 03's run
    autoencoder, _, _ = models.build_improved_cae()
    result = training.train_autoencoder(autoencoder, x_train, x_test=x_test, verbose=2, seed=42, **recipe)
    card = {"data": f"MNIST: {len(x_train)} training images; metrics on {len(x_test)} test images",
            "recipe": {**recipe, "schedule": "cosine decay to zero from the first step (no warm-up)",
                       "seed": result["seed"]},
            "train_seconds": round(result["seconds"], 1),
            "epoch_seconds": [round(s, 1) for s in result["epoch_seconds"]],
            "test": result["test"], "produced_by": "scripts/train_pretrained.py"}
    path = modelio.save_model(autoencoder, args.out, card, overwrite=args.force)
    t = result["test"]
    print(f"saved {path} ({path.stat().st_size} bytes): test PSNR {t['psnr_db']:.2f} dB, "
          f"MSE {t['mse']:.5f}, loss in the 2018 unit {t['sse_per_8']:.1f}, "
          f"trained in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

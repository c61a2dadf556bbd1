"""Race the original: how long does each recipe need to reach the 2018 project's loss?

    python benchmarks/race_original.py [--quick] [--targets 100 50] [--budget-minutes 15]

Two recipes train one after the other in one run, from the same seed and the same MNIST
data:

* **original**: the 2018 seed CAE with its recipe (summed squared error, batches of 8,
  Adam 1e-3), trained for as many steps as it needs;
* **improved**: the improved CAE with ``training.IMPROVED_RECIPE`` (per-pixel MSE,
  batch 128, Adam 2e-3 with warm-up and cosine decay over its 5 epochs).

Training pauses every ``--eval-every-images`` training images (the same for both recipes;
later on every 5% of the steps so far, if that is more) and the model is evaluated on the
whole test set; the evaluation time is *not* on the training clock. The race is about the
test loss in the 2018 unit (``reconstruction_metrics(...)['sse_per_8']``: squared error
summed over 8 images). The first target, 100, is the low end of the loss the original
reported (100 to 120) and decides the race; the second, 50, is what it aimed for. A recipe
stops when it has reached every target, when its training clock passes the budget, or
when its own schedule ends (the improved recipe's 5 epochs); a target not met by then is
"not reached".

The training clock (wall-clock seconds) includes Keras' one-off tracing of the training
step, a real cost for both recipes, recorded separately as ``first_step_seconds``. Besides
wall-clock seconds the script records the CPU time the process spent training (all its
threads), which other jobs on a shared machine disturb much less.

Prints a table and the time ratios, and writes everything (including each evaluation, for
plots) to ``benchmarks/results/race_original.json``; quick mode (``--quick`` or
``CAE_QUICK=1``: 2000 training / 500 test images, targets 400 and 300, a 30 s budget)
writes to ``benchmarks/results/quick/`` instead. Notebook 03 quotes the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on 2000/500 images (same as CAE_QUICK=1)")
    parser.add_argument("--targets", type=float, nargs="+", default=None,
                        help="test losses to reach, in the 2018 unit (SSE per 8 images); the first "
                             "decides the race. Default: 100 50 (quick mode: 400 300)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training-time budget per recipe (default 15, quick 0.5)")
    parser.add_argument("--eval-every-images", type=int, default=512,
                        help="evaluate after about this many training images (default 512)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="JSON file to write (default: see above)")
    return parser.parse_args(argv)


ARGS = _parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None and ARGS.quick:
    os.environ["CAE_QUICK"] = "1"  # before cae_utils is imported: it reads quick mode once

sys.path.insert(0, str(HERE.parent))
import cae_utils as cu  # noqa: E402
from caecodec import fileio, modelio, models, training
from cae_utils import keras  # noqa: E402

#: The two contestants: (builder, settings for training.train_autoencoder).
RECIPES = {
    "original": (models.build_seed_cae,
                 {**{k: v for k, v in training.SEED_RECIPE.items() if k != "steps"},
                  "epochs": training.EPOCH_RANGE[1], "schedule": False}),
    "improved": (models.build_improved_cae, {**training.IMPROVED_RECIPE, "schedule": True}),
}
HISTORY_COLUMNS = ["step", "images_seen", "train_seconds", "train_cpu_seconds",
                   "test_sse_per_8", "test_psnr_db"]


class RaceClock(keras.callbacks.Callback):
    """Pauses training now and then to evaluate on ``x_test``; stops when all targets are met.

    ``train_seconds`` counts only the wall-clock time spent training (evaluation excluded),
    ``train_cpu_seconds`` the process's CPU time meanwhile. ``history`` holds one row per
    check (columns: :data:`HISTORY_COLUMNS`); ``reached[target]`` is the first row at or
    below ``target``.
    """

    def __init__(self, x_test, batch_size, targets, eval_every, budget_seconds):
        super().__init__()
        self.x_test, self.batch_size = x_test, batch_size
        self.targets = sorted(targets, reverse=True)
        self.eval_every, self.budget = max(1, int(eval_every)), budget_seconds
        self.history: list[list[float]] = []
        self.reached: dict[float, list[float]] = {}
        self.out_of_time = False
        self.eval_seconds = 0.0
        self.first_step_seconds = None

    def on_train_begin(self, logs=None):
        self.steps, self.next_check = 0, self.eval_every
        self.train_seconds, self.train_cpu_seconds = 0.0, 0.0
        self._mark, self._cpu_mark = time.perf_counter(), time.process_time()

    def _check(self):
        self.train_seconds += time.perf_counter() - self._mark
        self.train_cpu_seconds += time.process_time() - self._cpu_mark
        t0 = time.perf_counter()
        m = cu.reconstruction_metrics(self.x_test, modelio.reconstruct(self.model, self.x_test))
        self.eval_seconds += time.perf_counter() - t0
        row = [self.steps, self.steps * self.batch_size, round(self.train_seconds, 3),
               round(self.train_cpu_seconds, 3), m["sse_per_8"], m["psnr_db"]]
        self.history.append(row)
        for target in self.targets:
            if m["sse_per_8"] <= target and target not in self.reached:
                self.reached[target] = row
        if len(self.reached) == len(self.targets):
            self.model.stop_training = True
        elif self.train_seconds >= self.budget:
            self.out_of_time = True
            self.model.stop_training = True
        self.next_check = max(self.steps + self.eval_every, math.ceil(self.steps * 1.05))
        self._mark, self._cpu_mark = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.first_step_seconds is None:
            self.first_step_seconds = time.perf_counter() - self._mark
        if self.steps >= self.next_check:
            self._check()
        elif self.train_seconds + time.perf_counter() - self._mark >= self.budget:
            self._check()  # out of time between checks: one last look, then stop

    def on_train_end(self, logs=None):
        if not self.history or self.history[-1][0] != self.steps:
            self._check()  # the schedule ended between two checks


def race_one(name, x_train, x_test, *, targets, eval_every_images, budget_seconds, seed=42) -> dict:
    """Train recipe ``name`` until its test SSE per 8 images meets every target, or time runs out."""
    build, settings = RECIPES[name]
    cu.set_seed(seed)
    autoencoder = build()[0]
    clock = RaceClock(x_test, settings["batch_size"], targets,
                      max(1, eval_every_images // settings["batch_size"]), budget_seconds)
    result = training.train_autoencoder(autoencoder, x_train, callbacks=[clock], seed=seed, **settings)
    last = dict(zip(HISTORY_COLUMNS, clock.history[-1]))
    per_target = {}
    for target in targets:
        hit = clock.reached.get(target)
        per_target[f"{target:g}"] = ({"reached": True, **dict(zip(HISTORY_COLUMNS, hit))} if hit
                                     else {"reached": False})
    return {
        "model": autoencoder.name,
        "parameters": int(autoencoder.count_params()),
        "recipe": {k: v for k, v in settings.items() if k != "epochs"}
                  | ({"epochs": settings["epochs"]} if name == "improved" else
                     {"epochs": "as many as needed (up to the time budget)"}),
        "targets": per_target,
        "diverged": bool(result["diverged"]),
        "out_of_time": clock.out_of_time,
        "first_step_seconds": round(clock.first_step_seconds or 0.0, 2),
        "at_stop": last,
        "eval_every_steps": clock.eval_every,
        "eval_seconds_total": round(clock.eval_seconds, 1),
        "history_columns": HISTORY_COLUMNS,
        "history": clock.history,
    }


def _atomic_write(path: Path, text: str) -> None:
    """Write the JSON report atomically (cae_utils' writer: temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_bytes(path, text.encode())


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(args) -> int:
    targets = args.targets or ([400.0, 300.0] if cu.QUICK
                               else [training.ORIGINAL_REPORTED_LOSS[0], training.ORIGINAL_TARGET_LOSS])
    budget_minutes = args.budget_minutes if args.budget_minutes is not None else (0.5 if cu.QUICK else 15.0)
    out = Path(args.out) if args.out else HERE / "results" / ("quick" if cu.QUICK else "") / "race_original.json"
    (x_train, _), (x_test, _) = cu.load_mnist()
    load_before = os.getloadavg()
    print(f"{cu.mode_banner()}\nRace to a test loss of {' then '.join(f'{t:g}' for t in targets)} "
          f"(SSE per 8 images); budget {budget_minutes:g} min of training per recipe; evaluation "
          f"every ~{args.eval_every_images} images on all {len(x_test)} test images (not timed).",
          flush=True)
    started = time.time()
    results = {}
    for name in RECIPES:
        print(f"  {name} ...", end="", flush=True)
        with cu.quiet_tensorflow():  # hides TensorFlow's harmless "remapper failed" line
            results[name] = race_one(name, x_train, x_test, targets=targets,
                                     eval_every_images=args.eval_every_images,
                                     budget_seconds=budget_minutes * 60, seed=args.seed)
        r = results[name]
        print(f" stopped after {r['at_stop']['train_seconds']:.1f} s of training "
              f"({r['at_stop']['step']} steps), test loss {r['at_stop']['test_sse_per_8']:.1f}", flush=True)

    print(f"\n{'recipe':<10}{'target':>8}{'reached':>9}{'train s':>9}{'CPU s':>8}{'steps':>7}"
          f"{'images':>9}{'test SSE/8':>12}{'PSNR dB':>9}")
    ratios = {}
    for target in targets:
        key = f"{target:g}"
        for name, r in results.items():
            t = r["targets"][key]
            print(f"{name:<10}{target:>8g}{'yes' if t['reached'] else 'no':>9}"
                  f"{_fmt(t.get('train_seconds'), '.1f'):>9}{_fmt(t.get('train_cpu_seconds'), '.1f'):>8}"
                  f"{_fmt(t.get('step'), 'd'):>7}{_fmt(t.get('images_seen'), ',d'):>9}"
                  f"{_fmt(t.get('test_sse_per_8'), '.1f'):>12}{_fmt(t.get('test_psnr_db'), '.2f'):>9}")
        a, b = results["original"]["targets"][key], results["improved"]["targets"][key]
        if a["reached"] and b["reached"]:
            ratios[key] = {"wall": a["train_seconds"] / b["train_seconds"],
                           "cpu": a["train_cpu_seconds"] / b["train_cpu_seconds"]}
        else:
            ratios[key] = None
    print()
    for key, ratio in ratios.items():
        if ratio is None:
            print(f"target {key}: at least one recipe did not reach it, so there is no ratio.")
        else:
            faster, factor = ("improved", ratio["wall"]) if ratio["wall"] >= 1 else ("original", 1 / ratio["wall"])
            print(f"target {key}: the {faster} recipe got there {factor:.1f}x faster; time ratio "
                  f"original/improved = {ratio['wall']:.2f} (wall clock), {ratio['cpu']:.2f} (CPU time)")

    report = {
        "what": ("Training time until the test loss in the 2018 unit (SSE per 8 images) is <= each "
                 "target; the first target decides the race"),
        "mode": "quick" if cu.QUICK else "full",
        "targets_sse_per_8": targets,
        "targets_psnr_db": [cu.psnr_from_mse(t / (28 * 28 * 8)) for t in targets],
        "budget_seconds": budget_minutes * 60,
        "eval_every_images": args.eval_every_images,
        "seed": args.seed,
        "train_images": len(x_train), "test_images": len(x_test),
        "results": results,
        "ratio_original_over_improved": ratios,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_total": round(time.time() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.machine(),
                    "load_average_1min_before": round(load_before[0], 2),
                    "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "versions": modelio.library_versions(),
        "note": ("Wall-clock times on a shared machine: other jobs running at the same time "
                 "inflate them (see the load averages); the CPU times (all threads of this "
                 "process) are disturbed much less. Compare the two recipes of one run, not "
                 "runs of different days."),
        "produced_by": "benchmarks/race_original.py",
    }
    _atomic_write(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

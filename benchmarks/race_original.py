"""Race the original: how long does each recipe need to reach the 2018 project's loss?

    python benchmarks/race_original.py [--quick] [--targets 100 50] [--budget-minutes 15] [--no-levers]

Two recipes train one after the other in one run, from the same seed and the same MNIST
data:

* **original**: the 2018 seed CAE with its recipe (summed squared error, batches of 8,
  Adam 1e-3), trained with Keras' ``fit`` for as many steps as it needs;
* **improved**: the improved CAE with ``training.IMPROVED_RECIPE`` (per-pixel MSE, batches
  of 32, Adam 3e-3 without warm-up, cosine decay over its 5 epochs), trained with the
  hand-written training step of ``training.train_loop``.

Training pauses every ``--eval-every-images`` training images (the same for both recipes;
later on every 5% of the steps so far, if that is more, so both recipes are checked with
the same relative precision) and the model is evaluated on the whole test set; the
evaluation time is *not* on the training clock. The race is about the test loss in the
2018 unit (``reconstruction_metrics(...)['sse_per_8']``: squared error summed over 8
images). The first target, 100, is the low end of the loss the original reported (100 to
120) and decides the race; the second, 50, is what it aimed for. A recipe stops when it
has reached every target, when its training clock passes the budget, or when its own
schedule ends; a target not met by then is "not reached".

The training clocks count everything from the start of training, graph tracing included
(recorded separately as ``first_step_seconds``): the original's from Keras' start of
training (``on_train_begin``, after ``compile``; the time before it is recorded as
``setup_seconds``), the improved recipe's from the call of ``train_loop``, which includes
making the optimizer. Besides wall-clock seconds the script records the CPU time the
process spent training (all its threads), which other jobs on a shared machine disturb less.

**Levers.** Then (unless ``--no-levers``) it measures, in the same run, what each change
from the previous improved recipe to the current one buys, one change at a time, each run
to the first target: the previous recipe (the previous improved architecture, batch 128,
Adam 2e-3 with a 200-step warm-up, ``fit``), then without the warm-up, with batch 32,
with Adam 3e-3, with the current architecture, and with the hand-written step (which is
the improved recipe itself: its race result is reused).

Prints tables and the time ratios, and writes everything (including each evaluation, for
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
    parser.add_argument("--eval-every-images", type=int, default=128,
                        help="evaluate after about this many training images (default 128)")
    parser.add_argument("--no-levers", action="store_true", help="skip the one-change-at-a-time study")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="JSON file to write (default: see above)")
    return parser.parse_args(argv)


ARGS = _parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None and ARGS.quick:
    os.environ["CAE_QUICK"] = "1"  # before cae_utils is imported: it reads quick mode once

sys.path.insert(0, str(HERE.parent))
import cae_utils as cu  # noqa: E402
from caecodec import fileio, machine, modelio, models, training  # noqa: E402
from cae_utils import keras  # noqa: E402
from keras import layers  # noqa: E402


def build_previous_improved_cae():
    """The improved CAE as it was before the race was won (three strided 3x3 convolutions to
    4x4x64, Dense to 128, a mirrored decoder with a 28x28x32 layer; 383,969 weights). Kept
    here only to measure the levers."""
    enc_in = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv1")(enc_in)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv3")(x)
    z = layers.Dense(models.LATENT_DIM, name="latent")(layers.Flatten(name="flatten")(x))
    dec_in = keras.Input((models.LATENT_DIM,), name="code")
    y = layers.Reshape((4, 4, 64), name="reshape")(layers.Dense(1024, activation="relu", name="expand")(dec_in))
    y = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu", name="deconv1")(y)
    y = layers.Cropping2D(((0, 1), (0, 1)), name="crop_to_7x7")(y)
    y = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu", name="deconv2")(y)
    y = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu", name="deconv3")(y)
    y = layers.Conv2D(1, 3, padding="same", name="to_pixels")(y)
    encoder = keras.Model(enc_in, z, name="previous_encoder")
    decoder = keras.Model(dec_in, y, name="previous_decoder")
    inp = keras.Input((28, 28, 1), name="image")
    return keras.Model(inp, decoder(encoder(inp)), name="previous_improved_cae"), encoder, decoder


#: The two contestants: (builder, trainer, settings for the trainer).
RECIPES = {
    "original": (models.build_seed_cae, "fit",
                 {**{k: v for k, v in training.SEED_RECIPE.items() if k != "steps"},
                  "epochs": training.EPOCH_RANGE[1], "schedule": False}),
    "improved": (models.build_improved_cae, "loop", dict(training.IMPROVED_RECIPE)),
}
PREVIOUS_RECIPE = dict(loss="mse", batch_size=128, epochs=5, optimizer="adam", learning_rate=2e-3,
                       schedule=True, warmup_steps=200)
#: One change at a time, from the previous improved recipe to the current one:
#: (name, what changed, builder, trainer, settings). The last rung is the improved recipe.
LEVERS = [
    ("previous recipe", "previous architecture, batch 128, Adam 2e-3 with a 200-step warm-up, fit",
     build_previous_improved_cae, "fit", PREVIOUS_RECIPE),
    ("no warm-up", "the learning rate starts at its peak", build_previous_improved_cae, "fit",
     {**PREVIOUS_RECIPE, "warmup_steps": 0}),
    ("batch 32", "batches of 32 instead of 128", build_previous_improved_cae, "fit",
     {**PREVIOUS_RECIPE, "warmup_steps": 0, "batch_size": 32}),
    ("Adam 3e-3", "learning rate 3e-3 instead of 2e-3", build_previous_improved_cae, "fit",
     {**PREVIOUS_RECIPE, "warmup_steps": 0, "batch_size": 32, "learning_rate": 3e-3}),
    ("new architecture", "two strided 4x4 convolutions to 7x7x32 and back (models.build_improved_cae)",
     models.build_improved_cae, "fit", dict(training.IMPROVED_RECIPE)),
    ("hand-written step", "training.train_loop instead of fit: the improved recipe",
     models.build_improved_cae, "loop", dict(training.IMPROVED_RECIPE)),
]
HISTORY_COLUMNS = ["step", "images_seen", "train_seconds", "train_cpu_seconds",
                   "test_sse_per_8", "test_psnr_db"]


class RaceClock:
    """The training clock of one run: pauses it to evaluate on ``x_test`` now and then, and
    says when to stop (all targets met, or the budget spent).

    ``start()`` starts the clock; ``after_step()`` is called after every training step and
    returns True to stop. ``history`` holds one row per check (columns:
    :data:`HISTORY_COLUMNS`); ``reached[target]`` is the first row at or below ``target``.
    """

    def __init__(self, model, x_test, batch_size, targets, eval_every, budget_seconds):
        self.model, self.x_test, self.batch_size = model, x_test, batch_size
        self.targets = sorted(targets, reverse=True)
        self.eval_every, self.budget = max(1, int(eval_every)), budget_seconds
        self.history: list[list[float]] = []
        self.reached: dict[float, list[float]] = {}
        self.out_of_time = False
        self.eval_seconds = 0.0
        self.first_step_seconds = None
        self.steps, self.next_check = 0, self.eval_every
        self.train_seconds, self.train_cpu_seconds = 0.0, 0.0

    def start(self):
        self._mark, self._cpu_mark = time.perf_counter(), time.process_time()

    def _check(self) -> bool:
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
        stop = len(self.reached) == len(self.targets)
        if not stop and self.train_seconds >= self.budget:
            self.out_of_time = stop = True
        self.next_check = max(self.steps + self.eval_every, math.ceil(self.steps * 1.05))
        self._mark, self._cpu_mark = time.perf_counter(), time.process_time()
        return stop

    def after_step(self) -> bool:
        self.steps += 1
        if self.first_step_seconds is None:
            self.first_step_seconds = time.perf_counter() - self._mark
        if self.steps >= self.next_check:
            return self._check()
        if self.train_seconds + time.perf_counter() - self._mark >= self.budget:
            return self._check()  # out of time between checks: one last look, then stop
        return False

    def finish(self):
        if not self.history or self.history[-1][0] != self.steps:
            self._check()  # the schedule ended between two checks


class FitClock(keras.callbacks.Callback):
    """Drives a :class:`RaceClock` from Keras' ``fit``: the clock starts at ``on_train_begin``."""

    def __init__(self, clock: RaceClock):
        super().__init__()
        self.clock, self.setup_seconds = clock, None
        self.called = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.setup_seconds = time.perf_counter() - self.called
        self.clock.start()

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.after_step():
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.clock.finish()


def race_one(name, build, trainer, settings, x_train, x_test, *, targets, eval_every_images,
             budget_seconds, seed=42) -> dict:
    """Train ``build()[0]`` with ``settings`` until its test SSE per 8 images meets every
    target, or time runs out; ``trainer`` is ``"fit"`` (train_autoencoder) or ``"loop"``."""
    cu.set_seed(seed)
    autoencoder = build()[0]
    clock = RaceClock(autoencoder, x_test, settings["batch_size"], targets,
                      max(1, eval_every_images // settings["batch_size"]), budget_seconds)
    setup_seconds = 0.0
    if trainer == "fit":
        fit_clock = FitClock(clock)
        result = training.train_autoencoder(autoencoder, x_train, callbacks=[fit_clock], seed=seed, **settings)
        setup_seconds = fit_clock.setup_seconds
    else:
        clock.start()  # from the call on: making the optimizer and tracing the step count
        result = training.train_loop(autoencoder, x_train, check=lambda step: clock.after_step(),
                                     check_every=1, seed=seed, **settings)
        clock.finish()
    last = dict(zip(HISTORY_COLUMNS, clock.history[-1]))
    per_target = {}
    for target in targets:
        hit = clock.reached.get(target)
        per_target[f"{target:g}"] = ({"reached": True, **dict(zip(HISTORY_COLUMNS, hit))} if hit
                                     else {"reached": False})
    return {
        "model": autoencoder.name,
        "parameters": int(autoencoder.count_params()),
        "trainer": {"fit": "training.train_autoencoder (Keras fit)",
                    "loop": "training.train_loop (hand-written step)"}[trainer],
        "recipe": settings if name != "original" else
                  {**{k: v for k, v in settings.items() if k != "epochs"},
                   "epochs": "as many as needed (up to the time budget)"},
        "targets": per_target,
        "diverged": bool(result["diverged"]),
        "out_of_time": clock.out_of_time,
        "first_step_seconds": round(clock.first_step_seconds or 0.0, 2),
        "setup_seconds": round(setup_seconds or 0.0, 2),
        "at_stop": last,
        "eval_every_steps": clock.eval_every,
        "eval_seconds_total": round(clock.eval_seconds, 1),
        "history_columns": HISTORY_COLUMNS,
        "history": clock.history,
    }


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(args) -> int:
    targets = args.targets or ([400.0, 300.0] if cu.QUICK
                               else [training.ORIGINAL_REPORTED_LOSS[0], training.ORIGINAL_TARGET_LOSS])
    budget_minutes = args.budget_minutes if args.budget_minutes is not None else (0.5 if cu.QUICK else 15.0)
    out = Path(args.out) if args.out else HERE / "results" / ("quick" if cu.QUICK else "") / "race_original.json"
    (x_train, _), (x_test, _) = cu.load_mnist()
    load_before = machine.load_average()  # None on Windows
    print(f"{cu.mode_banner()}\nRace to a test loss of {' then '.join(f'{t:g}' for t in targets)} "
          f"(SSE per 8 images); budget {budget_minutes:g} min of training per recipe; evaluation "
          f"every ~{args.eval_every_images} images (then every 5% of the steps) on all {len(x_test)} "
          "test images (not timed).", flush=True)
    started = time.time()
    results = {}
    for name, (build, trainer, settings) in RECIPES.items():
        print(f"  {name} ...", end="", flush=True)
        with cu.quiet_tensorflow():  # hides TensorFlow's harmless "remapper failed" line
            results[name] = race_one(name, build, trainer, settings, x_train, x_test, targets=targets,
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
        ratios[key] = ({"wall": a["train_seconds"] / b["train_seconds"],
                        "cpu": a["train_cpu_seconds"] / b["train_cpu_seconds"]}
                       if a["reached"] and b["reached"] else None)
    print()
    for key, ratio in ratios.items():
        if ratio is None:
            print(f"target {key}: at least one recipe did not reach it, so there is no ratio.")
        else:
            faster, factor = ("improved", ratio["wall"]) if ratio["wall"] >= 1 else ("original", 1 / ratio["wall"])
            print(f"target {key}: the {faster} recipe got there {factor:.1f}x faster; time ratio "
                  f"original/improved = {ratio['wall']:.2f} (wall clock), {ratio['cpu']:.2f} (CPU time)")

    levers = []
    if not args.no_levers:
        first = targets[0]
        print(f"\nLevers: one change at a time, each to a test loss of {first:g}", flush=True)
        for lever, change, build, trainer, settings in LEVERS:
            if lever == "hand-written step":
                r = results["improved"]  # the same run: the improved recipe
            else:
                with cu.quiet_tensorflow():
                    r = race_one(lever, build, trainer, settings, x_train, x_test, targets=[first],
                                 eval_every_images=args.eval_every_images,
                                 budget_seconds=budget_minutes * 60, seed=args.seed)
            t = r["targets"][f"{first:g}"]
            levers.append({"lever": lever, "change": change, "model": r["model"], "parameters": r["parameters"],
                           "trainer": r["trainer"], "recipe": r["recipe"], "reached": t["reached"],
                           "train_seconds": t.get("train_seconds"), "train_cpu_seconds": t.get("train_cpu_seconds"),
                           "steps": t.get("step"), "images_seen": t.get("images_seen"),
                           "first_step_seconds": r["first_step_seconds"]})
            L = levers[-1]
            print(f"  {lever:<18} {'reached' if L['reached'] else 'NOT reached':<12} "
                  f"{_fmt(L['train_seconds'], '.1f'):>7} s (CPU {_fmt(L['train_cpu_seconds'], '.1f')} s), "
                  f"{_fmt(L['steps'], 'd')} steps, first step {L['first_step_seconds']:.1f} s", flush=True)

    aim = f"{training.ORIGINAL_TARGET_LOSS:g}"
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
        "ratio_to_2018_aim": ratios.get(aim),
        "levers": levers,
        "levers_note": ("Each lever run changes one thing from the row above it and trains to the first "
                        "target; the last row is the improved recipe's race run. The gains depend on the "
                        "order of the changes, and single runs of a shared machine are noisy."),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_total": round(time.time() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.machine(),
                    "load_average_1min_before": load_before,
                    "load_average_1min_after": machine.load_average()},
        "versions": modelio.library_versions(),
        "note": ("Wall-clock times on a shared machine: other jobs running at the same time inflate them "
                 "(see the load averages); the CPU times (all threads of this process) are disturbed "
                 "less. Compare the two recipes of one run, not runs of different days."),
        "produced_by": "benchmarks/race_original.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

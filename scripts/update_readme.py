"""Regenerate the results section of README.md from the measured JSON files.

    python scripts/update_readme.py [--check]

The section between ``<!-- results:start -->`` and ``<!-- results:end -->`` is made
from results/*.json (written by the notebooks in full mode), models/*.json (the
shipped models' cards) and benchmarks/results/*.json. Numbers are never typed by hand.
With --check it only reports whether README.md is up to date (exit 1 if not).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(rel: str) -> dict | None:
    path = ROOT / rel
    return json.loads(path.read_text()) if path.is_file() else None


def table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f1(x, unit=""):
    return "n/a" if x is None else f"{x:.1f}{unit}"


def training_section() -> list[str]:
    out = []
    card = load("caecodec/models/improved_cae.json")
    nb3 = load("results/03_training.json")
    if card:
        t = card["test"]
        out.append(f"**Improved CAE** (shipped `caecodec/models/improved_cae.keras`, {card['parameters']:,} "
                   f"parameters, 128-number latent): test PSNR **{t['psnr_db']:.2f} dB**, MSE "
                   f"{t['mse']:.5f}, {t['sse_per_8']:.1f} in the 2018 unit (sum of squared error "
                   f"over 8 digits; the original reported 100-120), trained in "
                   f"{card['train_seconds']:.0f} s ({card['recipe']['epochs']} epochs) on 2 CPU cores.")
    if nb3:
        rows = []
        for name, run in (nb3.get("runs") or {}).items():
            r = run["test"]
            rows.append([name, f1(r["sse_per_8"]), f"{r['mse']:.4f}", f1(r["psnr_db"], " dB"),
                         f1(run.get("train_seconds"), " s")])
        if rows:
            out += ["", "Notebook 03, on the 10,000 MNIST test images:", "",
                    table(["model and recipe", "2018 unit (SSE per 8)", "MSE", "PSNR", "training"], rows)]
        race = nb3.get("race")
        if race:
            ts = race["train_seconds"]
            rows = [[f"SSE per 8 <= {int(float(k))}", f1(ts["original"].get(k), " s"),
                     f1(ts["improved"].get(k), " s"),
                     f"{race['ratio_original_over_improved'][k]['wall']:.2f}x"]
                    for k in ts["original"]]
            out += ["", "Racing the original (`benchmarks/race_original.py`, training wall time "
                    "to reach a test loss, evaluation excluded):", "",
                    table(["target", "2018 recipe", "improved recipe", "ratio"], rows)]
    return out


def codec_section() -> list[str]:
    rd = load("benchmarks/results/rate_distortion.json")
    if not rd:
        return []
    shown = ("cae", "webp", "jxl", "jpeg", "jpeg2000", "avif", "png", "webp_lossless", "jxl_lossless",
             "jpegls", "float_latent_v0")
    rows = []
    for r in rd["rows"]:
        if r["codec"] in shown or (r["codec"] == "pca" and str(r["setting"]) in rd.get("pca_pareto_settings", [])):
            psnr = r["psnr_db"]
            psnr = "lossless" if not isinstance(psnr, (int, float)) or psnr == float("inf") else f"{psnr:.2f}"
            acc = r.get("accuracy")
            name = "cae (through files)" if r["codec"] == "cae" and r.get("route") == "files" else r["codec"]
            rows.append([name, r["setting"] if r["setting"] is not None else "", f"{r['images']:,}",
                         f"{r['mean_bytes']:.1f}", f"{r['bpp']:.3f}", psnr, f"{r['ssim']:.3f}",
                         "" if acc is None else f"{100 * acc:.1f}%"])
    out = [f"Rate-distortion on the {rd['test_images']:,} MNIST test digits "
           f"(`python benchmarks/rate_distortion.py`, {rd['date'][:10]}; whole files, headers "
           "included; PSNR of the mean MSE; digits read by a small CNN classifier; the learned codec "
           "measured through the files a user gets: PNG -> `cae encode` -> .cae -> `cae decode` -> PNG):", "",
           table(["codec", "setting", "digits", "bytes", "bits/pixel", "PSNR (dB)", "SSIM", "read correctly"], rows)]
    check = rd.get("files_vs_memory") or []
    if check:
        worst = max(check, key=lambda c: abs(c["psnr_difference_db"]))
        out += ["", f"Through files against in memory, per quality: the largest PSNR difference is "
                f"{worst['psnr_difference_db']:+.3f} dB (q{worst['quality']}, {worst['images']:,} digits)."]
    bd = rd["bd"]
    names = {"webp": "WebP", "jxl": "JPEG XL", "jpeg": "JPEG", "jpeg2000": "JPEG 2000", "avif": "AVIF", "pca": "PCA"}
    out += ["", "[Bjøntegaard delta rate](https://www.itu.int/wftp3/av-arch/video-site/0104_Aus/VCEG-M33.doc) of the CAE (negative = fewer bytes for the same PSNR), each on the "
            "same digits: " + "; ".join(
                f"against {names.get(k, k)} " + (f"**{v['bd_rate_percent']:+.1f}%**" if v.get("bd_rate_percent")
                                                 is not None else "n/a")
                + f" ({v.get('images', rd['test_images']):,} digits" + (f"; {v['reason']}" if v.get("reason") else "")
                + ")" for k, v in bd.items()) + "."]
    matched = rd["matched_sizes"]
    sizes = sorted({m["bytes"] for t in matched.values() for m in t})
    header = ["bytes", "CAE"] + [f"CAE - {names.get(k, k)}" for k in matched]
    body = []
    for s in sizes:
        cae = next((m["psnr_cae"] for m in matched.get("pca", []) if m["bytes"] == s), None)
        line = [s, f1(cae, " dB")]
        for k, t in matched.items():
            m = next((m for m in t if m["bytes"] == s), None)
            if m is None:
                line.append("")
            elif m["difference_db"] is not None:
                line.append(f"{m['difference_db']:+.1f} dB")
            else:
                line.append(("CAE only" if m["winner"] == "cae" else f"**{k} wins**") + f" ({m['note']})")
        body.append(line)
    out += ["", "PSNR at matched sizes: the CAE's PSNR and its lead over each rival (on the same digits):", "",
            table(header, body)]
    readable = rd["smallest_readable"]
    out += ["", "Smallest readable files (classifier accuracy >= 95%): " + "; ".join(
        f"{k} " + (f"{v['mean_bytes']:.1f} B ({100 * v['accuracy']:.1f}%)" if v else "none")
        for k, v in readable.items()) + "."]
    out += ["", "The bars set for the codec, as measured:", "",
            table(["bar", "met", "measured"], [[b["bar"], "yes" if b["met"] else "**no**", b["evidence"]]
                                               for b in rd["bars"]])]
    return out


PHOTO_NAMES = {"cae": "photo CAE", "mnist_cae_tiles": "MNIST CAE on 28x28 tiles", "jpeg": "JPEG", "webp": "WebP",
               "avif": "AVIF", "jxl": "JPEG XL", "jpeg2000": "JPEG 2000"}


def photo_section() -> list[str]:
    """The photo codec's results, all from benchmarks/results/photo_rate_distortion.json
    (written by benchmarks/photo_rate_distortion.py) and the photo models' cards."""
    ph = load("benchmarks/results/photo_rate_distortion.json")
    if not ph:
        return []
    rows = []
    for r in ph["rows"] + ph.get("mnist_codec_on_photos", []):
        if r["codec"] in ("cae", "mnist_cae_tiles") or 0.05 <= r["bpp"] <= 1.2:
            rows.append([PHOTO_NAMES.get(r["codec"], r["codec"]), r["setting"], f"{r['bpp']:.3f}",
                         f"{r['psnr_db']:.2f}", f"{r['ssim']:.3f}"])
    rivals = [PHOTO_NAMES.get(c, c) for c in ph["bd"]["psnr_db"]]
    out = [f"Photos: the photo codec against {', '.join(rivals[:-1])} and {rivals[-1]} on {ph['images']} "
           f"grayscale Kodak photos ({ph['image_names'][0]}..., 256x256, never trained on; "
           f"`python benchmarks/photo_rate_distortion.py`, {ph['date'][:10]}; whole files; PSNR is "
           "the mean of the per-photo PSNR; classic rows from 0.05 to 1.2 bpp):", "",
           table(["codec", "setting", "bits/pixel", "PSNR (dB)", "SSIM"], rows)]
    lo, hi = next(iter(ph["bd"]["psnr_db"].values()))["bpp_range"]
    bd_rows = []
    for codec, d in ph["bd"]["psnr_db"].items():
        s = ph["bd"]["ssim"].get(codec, {})
        cover = d.get("psnr_overlap_db")
        bd_rows.append([PHOTO_NAMES.get(codec, codec),
                        f"**{d['bd_rate_percent']:+.1f}%**" if d.get("bd_rate_percent") is not None else "n/a",
                        f"{s['bd_rate_percent']:+.1f}%" if s.get("bd_rate_percent") is not None else "n/a",
                        f"{cover[0]:.2f}-{cover[1]:.2f} dB" if cover else "none"])
    out += ["", f"BD-rate of the photo CAE over {lo}-{hi} bpp (negative = fewer bits for the same quality; "
            "only the points inside that range count, and the average covers the PSNR range both curves "
            "reach there):", "",
            table(["against", "BD-rate (PSNR)", "BD-rate (SSIM)", "PSNR range averaged over"], bd_rows)]
    steps = ph.get("coding_steps")
    if steps:
        out += ["", "What each step of the entropy coding buys (the same pixels, coded three ways; BD-rate "
                "for PSNR):", "",
                table(["coding", "bits/pixel per quality", "against JPEG", "against WebP"],
                      [[name, " ".join(f"{p['bpp']:.3f}" for p in d["points"]),
                        *[f"{d['bd_rate_percent'].get(k):+.1f}%" if d["bd_rate_percent"].get(k) is not None
                          else "n/a" for k in ("jpeg", "webp")]] for name, d in steps.items()])]
    sp, lg = ph.get("speed"), ph["large_image"]
    if sp:
        out += ["", f"Speed: a {sp['width']}x{sp['height']} photo at quality {sp['quality']}, in one process "
                f"with the model loaded: encode **{sp['encode_seconds']:.2f} s**, decode "
                f"**{sp['decode_seconds']:.2f} s** (medians of {sp['repeats']}; the first calls, which "
                f"also trace TensorFlow's graphs: {sp['first_encode_seconds']:.2f} s and "
                f"{sp['first_decode_seconds']:.2f} s), on the shared 2-core machine."]
    out += ["", f"A {lg['side']}x{lg['side']} image through the command line (`encode --mode photo "
            f"--quality {lg['quality']}`, then `decode`, fresh processes): {lg['bytes']:,} B "
            f"({lg['bpp']:.3f} bpp, {lg['psnr_db']:.2f} dB); encode {lg['encode_seconds']:.1f} s with a peak "
            f"of **{lg['encode_peak_rss_mib']:,.0f} MiB**, decode {lg['decode_seconds']:.1f} s with a peak of "
            f"**{lg['decode_peak_rss_mib']:,.0f} MiB** resident memory; decoded at exactly "
            f"{lg['decoded_shape'][1]}x{lg['decoded_shape'][0]}: {'yes' if lg['exact_size'] else 'NO'}."]
    if ph.get("goals"):
        out += ["", "The goals set for photos (issue 13), as measured:", "",
                table(["goal", "met", "measured"], [[g["goal"], "yes" if g["met"] else "**no**", g["measured"]]
                                                    for g in ph["goals"]])]
    models = ph.get("photo_models") or {}
    if models and isinstance(next(iter(models.values())), dict):
        names = list(dict.fromkeys(st["stage"] for m in models.values() for st in m["stages"]))
        rows = [[f"q{q}", *[f"{sum(st['seconds'] for st in m['stages'] if st['stage'] == n):.0f} s" for n in names],
                 f"{m['total_train_seconds']:.0f} s"] for q, m in models.items()]
        once = {(st.get("quality"), st["stage"]): st["seconds"] for m in models.values() for st in m["stages"]}
        params = sorted({m["parameters"] for m in models.values()})
        out += ["", f"Training of the photo models (`scripts/train_photo_codecs.py`, one command; every stage "
                f"and its wall time is in `caecodec/models/photo_q*.json`; "
                f"{' or '.join(f'{p:,}' for p in params)} weights each): {sum(once.values()) / 60:.0f} min in all "
                "on the 2-core machine, which other jobs shared while it ran (a quality started from another "
                "lists that one's first stage too; the total counts it once):", "",
                table(["quality", *names, "total"], rows)]
    return out


def lossless_section() -> list[str]:
    """The lossless digit codec against the classic lossless formats (benchmarks/lossless.py)."""
    ll = load("benchmarks/results/lossless.json")
    if not ll:
        return []
    rows = [[r["label"], f"{r['mean_bytes']:.1f}", f"{r['bpp']:.3f}", f"{r['bit_exact']:,} / {r['images']:,}"]
            for r in sorted(ll["rows"], key=lambda r: r["mean_bytes"])]
    out = [f"Lossless: the learned lossless digit codec (`cae encode --lossless`, `.cae` v4) against the "
           f"classic lossless formats on the {ll['test_images']:,} MNIST test digits "
           f"(`python benchmarks/lossless.py`, {ll['date'][:10]}; whole files, headers included; every "
           "file decoded and compared pixel for pixel):", "",
           table(["codec", "bytes", "bits/pixel", "bit-exact"], rows)]
    learned = next(r for r in ll["rows"] if r["codec"] == "cae_lossless")
    out += ["", f"The model's own estimate of the payload is {learned['estimated_payload_bytes']:.1f} B; the "
            f"8-byte header and the range coder's last word add the rest. Encoding took "
            f"{learned['encode_seconds']:.1f} s and decoding {learned['decode_seconds']:.1f} s for all "
            f"{learned['images']:,} digits ({learned['cpu_seconds']:.0f} s of CPU time) on the shared 2-core "
            f"machine (load average {ll['load_average_start']} at the start)."]
    up = ll.get("user_path")
    if up:
        out += ["", f"Through the user's files (PNG -> `cae encode --lossless` -> .cae -> `cae decode` -> PNG, "
                f"one digit at a time) on the first {up['images']:,} test digits: {up['mean_bytes']:.2f} B per "
                f".cae file, {up['bit_exact_png']:,} decoded PNGs identical to the originals, "
                f"{up['same_bytes_as_batch']:,} files byte-identical to the batch run's."]
    out += ["", "The goals set for the lossless codec, as measured:", "",
            table(["goal", "met", "measured"], [[g["goal"], "yes" if g["met"] else "**no**", g["measured"]]
                                                for g in ll["goals"]])]
    return out


def render() -> str:
    parts = ["## Results (measured on this course's 2-core CPU machine)", "",
             "Generated by `scripts/update_readme.py` from the JSON that the notebooks and "
             "benchmarks write; rerun `make run` and `make bench` to reproduce.", ""]
    parts += training_section() + [""] + codec_section() + [""] + photo_section()
    parts += [""] + lossless_section()
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    readme = (ROOT / "README.md").read_text()
    if START not in readme or END not in readme:
        print(f"README.md lacks the {START} / {END} markers", file=sys.stderr)
        return 2
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}{END}{tail}"
    if args.check:
        print("README results are up to date" if new == readme else "README results are stale")
        return 0 if new == readme else 1
    (ROOT / "README.md").write_text(new)
    print("README.md results section regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

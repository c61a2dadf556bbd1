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
    out += ["", "[Bjøntegaard](https://www.itu.int/wftp3/av-arch/video-site/0104_Aus/VCEG-M33.doc) delta rate of the CAE (negative = fewer bytes for the same PSNR), each on the "
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


def photo_section() -> list[str]:
    ph = load("benchmarks/results/photo_rate_distortion.json")
    if not ph:
        return []
    keep = {"cae": None, "mnist_cae_tiles": None}
    rows = []
    for r in ph["rows"] + ph.get("mnist_codec_on_photos", []):
        if r["codec"] in keep or r["bpp"] <= 1.6:
            rows.append([{"cae": "photo CAE", "mnist_cae_tiles": "MNIST CAE on 28x28 tiles"}.get(r["codec"], r["codec"]),
                         r["setting"], f"{r['bpp']:.3f}", f"{r['psnr_db']:.2f}", f"{r['ssim']:.3f}"])
    out = [f"Photos: the photo codec against JPEG, WebP and AVIF on {ph['images']} grayscale Kodak "
           f"photos ({ph['image_names'][0]}..., 256x256, never trained on; "
           f"`python benchmarks/photo_rate_distortion.py`, {ph['date'][:10]}; whole files; PSNR is "
           "the mean of the per-photo PSNR; classic rows up to 1.6 bpp):", "",
           table(["codec", "setting", "bits/pixel", "PSNR (dB)", "SSIM"], rows)]
    for metric, name in (("psnr_db", "PSNR"), ("ssim", "SSIM")):
        parts = []
        for codec, d in ph["bd"][metric].items():
            v = d.get("bd_rate_percent")
            parts.append(f"against {codec.upper() if codec != 'webp' else 'WebP'} "
                         + (f"**{v:+.1f}%**" if v is not None else f"n/a ({d.get('reason')})"))
        lo, hi = next(iter(ph["bd"][metric].values()))["bpp_range"]
        out += ["", f"BD-rate of the photo CAE for the same {name}, over {lo}-{hi} bpp (negative = "
                "fewer bits): " + ", ".join(parts) + "."]
    lg = ph["large_image"]
    out += ["", f"A {lg['side']}x{lg['side']} image through the command line (`encode --mode photo "
            f"--quality {lg['quality']}`, then `decode`, fresh processes): {lg['bytes']:,} B "
            f"({lg['bpp']:.3f} bpp, {lg['psnr_db']:.2f} dB); encode {lg['encode_seconds']:.1f} s with a peak "
            f"of **{lg['encode_peak_rss_mib']:,.0f} MiB**, decode {lg['decode_seconds']:.1f} s with a peak of "
            f"**{lg['decode_peak_rss_mib']:,.0f} MiB** resident memory; decoded at exactly "
            f"{lg['decoded_shape'][1]}x{lg['decoded_shape'][0]}: {'yes' if lg['exact_size'] else 'NO'}."]
    bdj = ph["bd"]["psnr_db"].get("jpeg", {}).get("bd_rate_percent")
    peak = max(lg["encode_peak_rss_mib"], lg["decode_peak_rss_mib"])
    out += ["", "The bars set for photos, as measured:", "",
            table(["bar", "met", "measured"], [
                ["BD-rate against JPEG of -20% or better over 0.1-1 bpp (PSNR)",
                 "n/a" if bdj is None else ("yes" if bdj <= -20 else "**no**"),
                 "n/a" if bdj is None else f"{bdj:+.1f}%"],
                [f"a {lg['side']}x{lg['side']} image within 4 GiB of peak memory",
                 "yes" if peak <= 4096 and lg["exact_size"] else "**no**",
                 f"{peak:,.0f} MiB at most (encode and decode), exact size: {lg['exact_size']}"]])]
    cards = [load(f"caecodec/models/photo_q{q}.json") for q in ph.get("photo_models", {})]
    cards = [c for c in cards if c]
    if cards:
        out += ["", "Photo models (`caecodec/models/photo_q*.keras`, "
                f"{cards[0]['parameters']:,} weights each): trained on scikit-image's photos in "
                + ", ".join(f"q{c['quality']} {c['total_train_seconds']:.0f} s" for c in cards)
                + " on 2 CPU cores."]
    return out


def render() -> str:
    parts = ["## Results (measured on this course's 2-core CPU machine)", "",
             "Generated by `scripts/update_readme.py` from the JSON that the notebooks and "
             "benchmarks write; rerun `make run` and `make bench` to reproduce.", ""]
    parts += training_section() + [""] + codec_section() + [""] + photo_section()
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

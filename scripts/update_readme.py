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
    rows = []
    for r in rd["rows"]:
        if r["codec"] in ("cae", "webp", "jpeg", "avif", "png", "webp_lossless", "float_latent_v0") or (
                r["codec"] == "pca" and str(r["setting"]) in rd.get("pca_pareto_settings", [])):
            psnr = r["psnr_db"]
            psnr = "lossless" if not isinstance(psnr, (int, float)) or psnr == float("inf") else f"{psnr:.2f}"
            acc = r.get("accuracy")
            rows.append([r["codec"], r["setting"] if r["setting"] is not None else "",
                         f"{r['mean_bytes']:.1f}", f"{r['bpp']:.3f}", psnr, f"{r['ssim']:.3f}",
                         "" if acc is None else f"{100 * acc:.1f}%"])
    out = [f"Rate-distortion on the {rd['test_images']:,} MNIST test digits "
           f"(`python benchmarks/rate_distortion.py`, {rd['date'][:10]}; whole files, headers "
           "included; PSNR of the mean MSE; digits read by a small CNN classifier):", "",
           table(["codec", "setting", "bytes", "bits/pixel", "PSNR (dB)", "SSIM", "read correctly"], rows)]
    bd = rd["bd"]
    out += ["", "Bjøntegaard delta rate of the CAE (negative = fewer bytes for the same PSNR): "
            + ", ".join(f"against {k.upper() if k != 'webp' else 'WebP'} "
                        + (f"**{v['bd_rate_percent']:+.1f}%**" if v.get('bd_rate_percent') is not None
                           else f"n/a ({v.get('reason')})")
                        for k, v in bd.items()) + "."]
    ms = rd["matched_sizes"]["webp"]
    out += ["", "PSNR at matched sizes, CAE against WebP:", "",
            table(["bytes", "CAE", "WebP", "difference"],
                  [[m["bytes"], f1(m["psnr_cae"], " dB"), f1(m["psnr_webp"], " dB") if m["psnr_webp"] else
                    (m["note"] or "n/a"), f1(m["difference_db"], " dB")] for m in ms])]
    losses = [m for m in rd["matched_sizes"].get("pca", []) if m.get("winner") == "pca"]
    pca_small = rd["smallest_readable"].get("pca")
    cae_small = rd["smallest_readable"].get("cae")
    honest = []
    if losses:
        honest.append("the PCA baseline (same range coder and header) gives a higher PSNR at "
                      + ", ".join(f"{m['bytes']} B ({m['psnr_pca']:.2f} dB against "
                                  f"{m['psnr_cae']:.2f} dB)" if m["psnr_pca"] is not None else
                                  f"{m['bytes']} B ({m['note']}; the CAE: {m['psnr_cae']:.2f} dB)"
                                  for m in losses))
    if pca_small and cae_small and pca_small["mean_bytes"] < cae_small["mean_bytes"]:
        honest.append(f"PCA keeps digits readable ({100 * pca_small['accuracy']:.1f}% read correctly) "
                      f"at {pca_small['mean_bytes']:.1f} B, below the CAE's smallest file "
                      f"({cae_small['mean_bytes']:.1f} B)")
    if honest:
        out += ["", "Where the CAE does not win: " + "; ".join(honest) + "."]
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

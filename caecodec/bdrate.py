"""Comparing rate-distortion curves: Pareto fronts, matched sizes, Bjøntegaard deltas.

The Bjøntegaard delta (G. Bjøntegaard, VCEG-M33, 2001) averages the gap between two
curves over the range where both exist: BD-rate in percent of bytes at equal PSNR,
BD-PSNR in dB at equal bytes. numpy and scipy only.
"""
from __future__ import annotations

import numpy as np

#: File sizes (bytes) at which notebook 05 compares codecs head to head.
MATCHED_SIZES = (60, 80, 100, 120, 150, 200, 250)


def pareto_front(rates, quality) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal bytes AND higher quality),
    sorted by rate: the best a codec can do at each size. ``rates``, ``quality``: ``(P,)``."""
    rates, quality = np.asarray(rates, np.float64), np.asarray(quality, np.float64)
    order = np.lexsort((-quality, rates))
    keep, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            keep.append(i)
            best = quality[i]
    return np.array(keep, dtype=np.int64)


def psnr_at_bytes(rates, psnrs, target_bytes):
    """PSNR a codec reaches at ``target_bytes``, interpolated linearly in log(bytes).

    ``rates``/``psnrs``: the codec's measured points (mean bytes, dB), any order; only the
    Pareto front is used. ``target_bytes``: a number or a sequence. Returns a float (or a
    list) with ``None`` where the target lies outside the measured sizes: no
    extrapolation, a codec that cannot make a file that small (or large) has no value.
    """
    idx = pareto_front(rates, psnrs)
    r = np.log(np.asarray(rates, np.float64)[idx])
    p = np.asarray(psnrs, np.float64)[idx]

    def one(t):
        t = np.log(float(t))
        if len(r) == 0 or t < r[0] - 1e-12 or t > r[-1] + 1e-12:
            return None
        return float(np.interp(t, r, p))

    return [one(t) for t in target_bytes] if np.ndim(target_bytes) else one(target_bytes)


def bytes_at_psnr(rates, psnrs, target_psnr):
    """Mean bytes a codec needs for ``target_psnr`` dB (the inverse of :func:`psnr_at_bytes`,
    interpolated in log(bytes) along the Pareto front); ``None`` outside the measured range."""
    idx = pareto_front(rates, psnrs)
    r = np.log(np.asarray(rates, np.float64)[idx])
    p = np.asarray(psnrs, np.float64)[idx]
    if len(p) == 0 or not p[0] - 1e-12 <= target_psnr <= p[-1] + 1e-12:
        return None
    return float(np.exp(np.interp(target_psnr, p, r)))


def _bd_fit(x, y, method: str):
    """A curve y(x) through sorted points: a least-squares cubic (``"cubic"``, the original
    Bjontegaard fit) or a monotone piecewise cubic (``"pchip"``); returns its integral F(a, b)."""
    from scipy.interpolate import PchipInterpolator

    if method == "pchip":
        f = PchipInterpolator(x, y)
        return lambda a, b: float(f.integrate(a, b))
    poly = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
    return lambda a, b: float(np.polyval(poly, b) - np.polyval(poly, a))


def bd_compare(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> dict:
    """Bjontegaard deltas of codec A against codec B (VCEG-M33, 2001), with the details.

    Each codec is given by its measured points (mean bytes, PSNR in dB); only finite points
    are used, sorted, and each curve needs at least 2 of them (4 for a true cubic).

    * **BD-rate**: fit log(rate) as a function of PSNR for each codec (a cubic polynomial,
      or ``method="pchip"``), integrate both over the PSNR interval where the two curves
      overlap, and turn the mean difference into a percentage:
      ``(exp(mean(log r_A - log r_B)) - 1) * 100``. Negative = A needs that many percent
      fewer bytes than B for the same PSNR, on average over the interval.
    * **BD-PSNR**: the same with the axes swapped (PSNR as a function of log rate, over the
      overlapping log-rate interval): mean dB that A gains over B at equal bytes.

    Returns ``{"bd_rate_percent", "bd_psnr_db", "psnr_overlap_db": (lo, hi),
    "bytes_overlap": (lo, hi), "method", "reason"}``; a delta is ``None`` when the curves do
    not overlap on that axis (or have too few points), and ``reason`` says why.
    """
    def clean(r, p):
        r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
        ok = np.isfinite(r) & np.isfinite(p) & (r > 0)
        order = np.argsort(p[ok])
        return np.log(r[ok][order]), p[ok][order]

    (lra, pa), (lrb, pb) = clean(rate_a, psnr_a), clean(rate_b, psnr_b)
    out = {"bd_rate_percent": None, "bd_psnr_db": None, "psnr_overlap_db": None,
           "bytes_overlap": None, "method": method, "reason": None}
    if min(len(pa), len(pb)) < 2:
        out["reason"] = "each curve needs at least 2 finite points"
        return out
    lo, hi = max(pa[0], pb[0]), min(pa[-1], pb[-1])
    if hi > lo:
        fa, fb = _bd_fit(pa, lra, method), _bd_fit(pb, lrb, method)
        out["bd_rate_percent"] = float((np.exp((fa(lo, hi) - fb(lo, hi)) / (hi - lo)) - 1) * 100)
        out["psnr_overlap_db"] = (float(lo), float(hi))
    else:
        out["reason"] = (f"the PSNR ranges do not overlap (A: {pa[0]:.2f}..{pa[-1]:.2f} dB, "
                         f"B: {pb[0]:.2f}..{pb[-1]:.2f} dB)")
    ia, ib = np.argsort(lra), np.argsort(lrb)
    rlo, rhi = max(lra.min(), lrb.min()), min(lra.max(), lrb.max())
    if rhi > rlo:
        ga, gb = _bd_fit(lra[ia], pa[ia], method), _bd_fit(lrb[ib], pb[ib], method)
        out["bd_psnr_db"] = float((ga(rlo, rhi) - gb(rlo, rhi)) / (rhi - rlo))
        out["bytes_overlap"] = (float(np.exp(rlo)), float(np.exp(rhi)))
    else:
        out["reason"] = ((out["reason"] + "; ") if out["reason"] else "") + (
            f"the byte ranges do not overlap (A: {np.exp(lra.min()):.0f}..{np.exp(lra.max()):.0f} B, "
            f"B: {np.exp(lrb.min()):.0f}..{np.exp(lrb.max()):.0f} B)")
    return out


def bd_rate(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> float | None:
    """Bjontegaard delta rate of A against B in percent (negative: A is smaller at equal
    PSNR); ``None`` if the PSNR ranges do not overlap. See :func:`bd_compare` for the method
    and the reason when there is no value."""
    return bd_compare(rate_a, psnr_a, rate_b, psnr_b, method)["bd_rate_percent"]


def bd_psnr(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> float | None:
    """Bjontegaard delta PSNR of A against B in dB (positive: A is better at equal bytes);
    ``None`` if the byte ranges do not overlap. See :func:`bd_compare`."""
    return bd_compare(rate_a, psnr_a, rate_b, psnr_b, method)["bd_psnr_db"]


def rd_curve(rows, codec: str, metric: str = "psnr_db") -> tuple[np.ndarray, np.ndarray]:
    """``(mean bytes, metric)`` arrays of one codec's rows, sorted by bytes."""
    pts = sorted((r["mean_bytes"], r[metric]) for r in rows if r["codec"] == codec)
    return np.array([p[0] for p in pts], np.float64), np.array([p[1] for p in pts], np.float64)


def pareto_rows(rows, codec: str, metric: str = "psnr_db") -> list[dict]:
    """One codec's rows on its Pareto front (no other setting is smaller AND better)."""
    mine = [r for r in rows if r["codec"] == codec]
    idx = pareto_front([r["mean_bytes"] for r in mine], [r[metric] for r in mine])
    return [mine[i] for i in idx]


def matched_size_table(rows, sizes=MATCHED_SIZES, a: str = "cae", b: str = "webp") -> list[dict]:
    """PSNR of codec ``a`` and codec ``b`` at each file size in ``sizes`` (bytes).

    Each codec's PSNR at a size is interpolated along its measured points
    (:func:`psnr_at_bytes`; for the learned codec a point between two qualities stands for
    a quality level that would have to be trained). Each row: ``bytes``, ``psnr_a``,
    ``psnr_b`` (None if the codec cannot make files that small or large), ``winner``
    (``a``, ``b`` or None) and ``note``. When only one codec reaches the size, it wins
    only if its PSNR also beats the other codec's nearest file (a codec that cannot go
    that small loses by default at that size; the note says so).
    """
    ra, pa = rd_curve(rows, a)
    rb, pb = rd_curve(rows, b)
    out = []
    for s in sizes:
        va, vb = psnr_at_bytes(ra, pa, s), psnr_at_bytes(rb, pb, s)
        note, winner = "", None
        if va is not None and vb is not None:
            winner = a if va > vb else b
        elif va is None and vb is None:
            note = f"neither {a} nor {b} makes files of this size"
        else:
            have, miss = (a, b) if vb is None else (b, a)
            r_miss, p_miss = (rb, pb) if vb is None else (ra, pa)
            v_have = va if vb is None else vb
            small = s < r_miss.min()
            edge_psnr = float(p_miss[np.argmin(r_miss)] if small else p_miss.max())
            edge_bytes = float(r_miss.min() if small else r_miss[np.argmax(p_miss)])
            if small:
                winner = have
                note = (f"{miss} cannot go this small (smallest file {edge_bytes:.0f} B, "
                        f"{edge_psnr:.1f} dB)")
            else:
                winner = miss if edge_psnr > v_have else have
                note = (f"{miss} has no setting this large (its best: {edge_bytes:.0f} B, "
                        f"{edge_psnr:.1f} dB)")
        out.append({"bytes": s, f"psnr_{a}": va, f"psnr_{b}": vb,
                    "difference_db": (va - vb) if va is not None and vb is not None else None,
                    "winner": winner, "note": note})
    return out

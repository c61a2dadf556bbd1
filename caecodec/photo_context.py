"""The photo codec's context model: which probability table codes each latent symbol.

The factorized prior (notebook 05) gives every latent channel one table, used at every
position. But coefficients are not independent: a block whose low frequencies are
large (an edge, a texture) tends to have large high frequencies too, and so do its
neighbours. A *context model* uses what the decoder already knows to pick a sharper
table, as JPEG's successors (Lepton, packJPG) and learned codecs (Ballé et al. 2018's
hyperprior, He et al. 2021's checkerboard context) do.

Coding order of the ``(h, w, 64)`` symbols (one 8x8 block per position):

1. **Channel 0** (each block's mean, "DC"): predicted from its left, upper and
   upper-left neighbours (the MED predictor of JPEG-LS), row by row; the residual is
   coded with one of a few tables chosen by how much the row above varies there.
2. **The 63 other channels**, in zigzag order (low frequencies first), each in two
   passes over a checkerboard: the "white" blocks (``i + j`` even), then the "black"
   ones, which then know the same channel at their four (white) neighbours. The table
   of each symbol is chosen by a score: a weighted sum of the logarithms of four
   counts of already decoded magnitudes (the neighbouring frequencies in the block,
   all earlier channels of the block, the same in the four neighbouring blocks, and
   the same channel in the four neighbouring blocks, black pass only).

Everything that chooses a table is computed in integers (the logarithms come from a
lookup table, the weights are stored as integers), so encoder and decoder choose the
same table on every machine. The tables themselves are counted on the training photos
(:func:`fit_context_model`) and stored, as float32, in the model's ``.npz``.

Layer 1: numpy and constriction (through :mod:`caecodec.entropy`); no Keras.
"""
from __future__ import annotations

import numpy as np

from . import entropy
from .errors import CAEError

#: Tables per AC channel and pass, and for the DC residual.
CONTEXT_BUCKETS = 16
DC_BUCKETS = 8
#: log2 in integers: LOG2_16[a] = round(16 * log2(1 + a)) for a count a (clipped to 4095).
LOG2_16 = np.round(16.0 * np.log2(1.0 + np.arange(4096))).astype(np.int64)
#: The fitted weights are stored multiplied by this (then rounded to integers).
WEIGHT_SCALE = 64
N_FEATURES = 4


def zigzag_order(n: int = 8) -> np.ndarray:
    """Channel indices ``u * n + v`` of the ``n x n`` DCT, low frequencies first (JPEG's
    zigzag: by ``u + v``, alternating direction). ``(n*n,)`` int64."""
    key = lambda c: (c // n + c % n, c // n if (c // n + c % n) % 2 else c % n)  # noqa: E731
    return np.array(sorted(range(n * n), key=key), np.int64)


def _log16(counts: np.ndarray) -> np.ndarray:
    return LOG2_16[np.clip(counts, 0, len(LOG2_16) - 1)]


def _neighbour_sum(a: np.ndarray) -> np.ndarray:
    """Sum of the four neighbours (left, right, up, down) of every position of ``a``
    ``(h, w)``; positions outside the image count as 0."""
    out = np.zeros_like(a)
    out[:, 1:] += a[:, :-1]
    out[:, :-1] += a[:, 1:]
    out[1:, :] += a[:-1, :]
    out[:-1, :] += a[1:, :]
    return out


def checkerboard(h: int, w: int) -> np.ndarray:
    """``(h, w)`` bool: True on the "white" blocks (``i + j`` even), coded first."""
    return (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0


def near_frequencies(mag: np.ndarray, c: int, n: int = 8) -> np.ndarray:
    """``|value|`` of the two neighbouring frequencies ``(u-1, v)`` and ``(u, v-1)`` of
    channel ``c = u * n + v`` in each block, summed (the DC excluded: its size is the
    block's brightness, not its detail). ``mag``: ``(C, h, w)``; returns ``(h, w)``."""
    u, v = divmod(int(c), n)
    near = np.zeros(mag.shape[1:], np.int64)
    for du, dv in ((1, 0), (0, 1)):
        if u - du >= 0 and v - dv >= 0 and (u - du, v - dv) != (0, 0):
            near += mag[(u - du) * n + v - dv]
    return near


def ac_features(mag: np.ndarray, earlier: np.ndarray, c: int, n: int = 8) -> np.ndarray:
    """The four integer counts that choose channel ``c``'s table, ``(4, h, w)`` int64.

    ``mag``: ``(C, h, w)`` magnitudes ``|symbol value|`` (only the channels already
    decoded are used); ``earlier``: ``(h, w)`` sum of the magnitudes of the AC channels
    decoded before ``c`` in each block. Features: the two neighbouring frequencies of the
    same block (:func:`near_frequencies`); ``earlier``; ``earlier`` summed over the four
    neighbouring blocks; channel ``c`` itself summed over the four neighbours (used in
    the second pass only, when those are decoded: its weight is 0 in the first)."""
    return np.stack([near_frequencies(mag, c, n), earlier, _neighbour_sum(earlier),
                     _neighbour_sum(mag[c])])


def ac_scores(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Counts ``(4, ...)`` and integer weights ``(5,)`` (the last is the bias) -> integer
    scores ``(...)``: ``sum_k w_k * round(16 log2(1 + f_k)) + bias``. A feature whose
    weight is 0 is not looked at."""
    score = np.full(np.shape(features)[1:], weights[N_FEATURES], np.int64)
    for k in range(N_FEATURES):
        if weights[k]:
            score += weights[k] * _log16(features[k])
    return score


def dc_prediction(s0: np.ndarray, row: int, first: int = 0) -> np.ndarray:
    """MED prediction (JPEG-LS) of the DC symbols of row ``row`` of ``s0`` ``(h, w)``
    int64 from their left, upper and upper-left neighbours; the first row uses the left
    one, the first column the upper one, the very first block ``first``. Vectorised (the
    encoder knows every row); the decoder calls :func:`dc_predict_one` along the row."""
    cur = s0[row]
    w = s0.shape[1]
    if row == 0:
        pred = np.empty(w, np.int64)
        pred[0] = first
        pred[1:] = cur[:-1]
        return pred
    up = s0[row - 1]
    pred = np.empty(w, np.int64)
    pred[0] = up[0]
    lft, ul, upp = cur[:-1], up[:-1], up[1:]
    hi, lo = np.maximum(lft, upp), np.minimum(lft, upp)
    pred[1:] = np.where(ul >= hi, lo, np.where(ul <= lo, hi, lft + upp - ul))
    return pred


def dc_predict_one(left: int, up: int, upleft: int) -> int:
    """The MED predictor for one block (see :func:`dc_prediction`)."""
    if upleft >= max(left, up):
        return min(left, up)
    if upleft <= min(left, up):
        return max(left, up)
    return left + up - upleft


def dc_activity(s0: np.ndarray, row: int) -> np.ndarray:
    """How much the row above varies around each block of ``row``: ``|U - UL| + |U - UR|``
    (0 on the first row), ``(w,)`` int64. It chooses the DC residual's table."""
    w = s0.shape[1]
    if row == 0:
        return np.zeros(w, np.int64)
    up = s0[row - 1]
    padded = np.concatenate([up[:1], up, up[-1:]])
    return np.abs(up - padded[:-2]) + np.abs(up - padded[2:])


class ContextModel:
    """A fitted context model for one quality: codes ``(h, w, C)`` symbols to bytes and back.

    ``tables`` holds (see :func:`fit_context_model`): ``ctx_order`` ``(C,)``,
    ``ctx_weights`` ``(C, 2, 5)`` int64, ``ctx_edges`` ``(C, 2, B-1)`` int64,
    ``ctx_pmfs`` ``(C, 2, B, Kmax)`` float32, ``dc_ctx_edges`` ``(Bdc-1,)`` int64 and
    ``dc_ctx_pmfs`` ``(Bdc, 2 K_0 - 1)`` float32; ``sizes`` ``(C,)`` is each channel's
    alphabet and ``offsets`` the value of its symbol 0.
    """

    def __init__(self, tables: dict, sizes: np.ndarray, offsets: np.ndarray):
        self.sizes = np.asarray(sizes, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self.order = np.asarray(tables["ctx_order"], np.int64)
        self.weights = np.asarray(tables["ctx_weights"], np.int64)
        self.edges = np.asarray(tables["ctx_edges"], np.int64)
        self.pmfs = np.asarray(tables["ctx_pmfs"])
        self.dc_edges = np.asarray(tables["dc_ctx_edges"], np.int64)
        self.dc_pmfs = np.asarray(tables["dc_ctx_pmfs"])
        channels = len(self.sizes)
        if (self.order[0] != 0 or sorted(self.order.tolist()) != list(range(channels))
                or self.weights.shape != (channels, 2, N_FEATURES + 1)
                or self.pmfs.shape[:2] != (channels, 2) or self.pmfs.shape[3] < self.sizes.max()
                or self.dc_pmfs.shape[1] != 2 * self.sizes[0] - 1):
            raise CAEError("The context tables do not fit the model; restore the .npz file.")
        self._models: dict = {}
        self.side = int(round(np.sqrt(channels)))

    # -- tables -------------------------------------------------------------------------
    def _pmf(self, c: int, p: int, b: int) -> np.ndarray:
        return np.asarray(self.pmfs[c, p, b, :self.sizes[c]], np.float64)

    def _model(self, key):
        if key not in self._models:
            pmf = (np.asarray(self.dc_pmfs[key[1]], np.float64) if key[0] == "dc"
                   else self._pmf(*key))
            self._models[key] = entropy.categorical(pmf)
        return self._models[key]

    def log2_table(self, c: int, p: int, b: int) -> np.ndarray:
        """``log2`` of the probabilities of channel ``c``'s symbols in pass ``p``, bucket ``b``."""
        return np.log2(self._pmf(c, p, b))

    def buckets(self, c: int, p: int, features: np.ndarray) -> np.ndarray:
        """The table (bucket) of each position for channel ``c`` in pass ``p``: the number
        of bucket edges below its score (a score equal to an edge stays below it)."""
        return np.searchsorted(self.edges[c, p], ac_scores(features, self.weights[c, p]), side="left")

    # -- the walk shared by encoder, decoder and rate estimate ---------------------------
    def _walk(self, s0: np.ndarray, mag: np.ndarray, visit_dc, visit_ac) -> None:
        """Go through the symbols in coding order. ``s0`` ``(h, w)``: channel 0's symbols;
        ``mag`` ``(C, h, w)``: magnitudes ``|value|``. Both hold everything decoded so far
        (the encoder fills them at the start). ``visit_dc(row, buckets)`` must complete
        row ``row`` of both; ``visit_ac(c, p, groups)`` fills channel ``c``'s positions of
        pass ``p``: ``groups`` lists ``(bucket, flat positions)`` in coding order (buckets
        ascending, positions in raster order)."""
        _, h, w = mag.shape
        for row in range(h):
            visit_dc(row, np.searchsorted(self.dc_edges, dc_activity(s0, row), side="left"))
        passes = [np.flatnonzero(checkerboard(h, w)), np.flatnonzero(~checkerboard(h, w))]
        earlier = np.zeros((h, w), np.int64)
        for c in self.order[1:]:
            features = np.zeros((N_FEATURES, h, w), np.int64)
            features[0], features[1], features[2] = near_frequencies(mag, c, self.side), earlier, _neighbour_sum(earlier)
            for p, where in enumerate(passes):
                if p:
                    features[3] = _neighbour_sum(mag[c])
                buckets = self.buckets(c, p, features.reshape(N_FEATURES, -1)[:, where])
                order = np.argsort(buckets, kind="stable")
                cuts = np.flatnonzero(np.diff(buckets[order])) + 1
                visit_ac(int(c), p, [(int(buckets[g[0]]), where[g]) for g in np.split(order, cuts) if len(g)])
            earlier += mag[c]

    def _dc_residuals(self, s0: np.ndarray, row: int) -> np.ndarray:
        k0 = int(self.sizes[0])
        return s0[row] - dc_prediction(s0, row, k0 // 2) + k0 - 1

    # -- coding -------------------------------------------------------------------------
    def _planes(self, symbols: np.ndarray):
        """``(h, w, C)`` symbols -> ``(C, h, w)`` symbol planes and their magnitudes."""
        planes = np.ascontiguousarray(np.moveaxis(np.asarray(symbols, np.int64), -1, 0))
        return planes, np.abs(planes + self.offsets[:, None, None])

    def encode(self, symbols: np.ndarray) -> bytes:
        """Symbols ``(h, w, C)`` int (each in ``[0, sizes[c])``) -> range-coded payload."""
        planes, mag = self._planes(symbols)
        flat = planes.reshape(len(planes), -1)
        streams = []

        def dc(row, buckets):
            res = self._dc_residuals(planes[0], row)
            for b in np.unique(buckets):
                streams.append((res[buckets == b], self._model(("dc", int(b)))))

        def ac(c, p, groups):
            streams.extend((flat[c][where], self._model((c, p, b))) for b, where in groups)

        self._walk(planes[0], mag, dc, ac)
        return entropy.range_code(streams)

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Inverse of :meth:`encode` for symbols of ``shape`` ``(h, w, C)``, int32."""
        decoder = entropy.range_decoder(payload)
        h, w, channels = shape
        planes, mag = np.zeros((channels, h, w), np.int64), np.zeros((channels, h, w), np.int64)
        flat, flat_mag = planes.reshape(channels, -1), mag.reshape(channels, -1)
        k0 = int(self.sizes[0])

        def dc(row, buckets):
            res = np.empty(w, np.int64)
            for b in np.unique(buckets):
                sel = buckets == b
                res[sel] = decoder.decode(self._model(("dc", int(b))), int(sel.sum()))
            res = (res - (k0 - 1)).tolist()
            up = planes[0, row - 1].tolist() if row else None
            left, values = k0 // 2, []
            for j, r in enumerate(res):  # MED needs the left neighbour just decoded
                if row == 0:
                    pred = left
                elif j == 0:
                    pred = up[0]
                else:
                    pred = dc_predict_one(left, up[j], up[j - 1])
                left = min(max(pred + r, 0), k0 - 1)  # (clipped: a corrupt file stays in range)
                values.append(left)
            planes[0, row] = values
            mag[0, row] = np.abs(planes[0, row] + self.offsets[0])

        def ac(c, p, groups):
            for b, where in groups:
                vals = np.asarray(decoder.decode(self._model((c, p, b)), len(where)), np.int64)
                flat[c][where] = vals
                flat_mag[c][where] = np.abs(vals + self.offsets[c])

        self._walk(planes[0], mag, dc, ac)
        return np.moveaxis(planes, 0, -1).astype(np.int32)

    def symbol_bits(self, symbols: np.ndarray) -> np.ndarray:
        """``-log2 p`` of every symbol of ``symbols`` ``(h, w, C)`` under the context model,
        ``(h, w, C)`` float64 (channel 0: the cost of its prediction residual). Summed, it
        is what :meth:`encode` spends, up to the coder's few bytes of overhead."""
        planes, mag = self._planes(symbols)
        flat = planes.reshape(len(planes), -1)
        bits = np.zeros(planes.shape, np.float64)
        flat_bits = bits.reshape(len(planes), -1)
        dc_log2 = np.log2(np.asarray(self.dc_pmfs, np.float64))

        def dc(row, buckets):
            bits[0, row] = -dc_log2[buckets, self._dc_residuals(planes[0], row)]

        def ac(c, p, groups):
            for b, where in groups:
                flat_bits[c][where] = -self.log2_table(c, p, b)[flat[c][where]]

        self._walk(planes[0], mag, dc, ac)
        return np.moveaxis(bits, 0, -1)

    def estimate_bits(self, symbols: np.ndarray) -> float:
        """The rate of ``symbols`` ``(h, w, C)`` under the context model, in bits."""
        return float(self.symbol_bits(symbols).sum())


def _quantile_edges(scores: np.ndarray, n: int) -> np.ndarray:
    """``n - 1`` integer bucket edges at the quantiles of ``scores`` (repeated edges give
    empty buckets, which is harmless)."""
    if len(scores) == 0:
        return np.zeros(n - 1, np.int64)
    return np.ceil(np.quantile(scores, np.linspace(0, 1, n + 1)[1:-1])).astype(np.int64)


def fit_context_model(symbol_arrays, sizes, offsets, base_pmfs, n_buckets: int = CONTEXT_BUCKETS,
                      dc_buckets: int = DC_BUCKETS, alpha: float = 2.0) -> dict:
    """Fit the context model's tables on the symbols of the TRAINING photos.

    ``symbol_arrays``: a list of ``(h, w, C)`` symbol arrays (the encoder's output on the
    training photos); ``sizes``, ``offsets``, ``base_pmfs``: the factorized prior's code
    tables (alphabets, and one table per channel, used to smooth rare symbols).

    For each channel and pass, the weights come from a least-squares fit of
    ``16 log2(1 + |value|)`` on the four ``16 log2(1 + count)`` features; the scores are
    cut into ``n_buckets`` buckets at their quantiles; each bucket's table is its
    symbol counts plus ``alpha`` times the channel's factorized table (so every symbol
    stays codable). Returns the ``ctx_*`` and ``dc_ctx_*`` arrays :class:`ContextModel` reads.
    """
    sizes = np.asarray(sizes, np.int64)
    offsets = np.asarray(offsets, np.int64)
    channels, side = len(sizes), int(round(np.sqrt(len(sizes))))
    order = zigzag_order(side)
    arrays = [np.asarray(s, np.int64) for s in symbol_arrays]
    weights = np.zeros((channels, 2, N_FEATURES + 1), np.int64)
    edges = np.zeros((channels, 2, n_buckets - 1), np.int64)
    pmfs = np.zeros((channels, 2, n_buckets, int(sizes.max())), np.float32)
    mags = [np.ascontiguousarray(np.moveaxis(np.abs(s + offsets), -1, 0)) for s in arrays]
    earlier = [np.zeros(s.shape[:2], np.int64) for s in arrays]
    for c in order[1:]:
        feats = [ac_features(m, e, c, side) for m, e in zip(mags, earlier)]
        for p in (0, 1):
            masks = [checkerboard(*s.shape[:2]) ^ bool(p) for s in arrays]
            x = np.concatenate([_log16(f[:, m]).T for f, m in zip(feats, masks)]).astype(np.float64)
            y = np.concatenate([s[..., c][m] for s, m in zip(arrays, masks)])
            target = 16.0 * np.log2(1.0 + np.abs(y + offsets[c]))
            cols = [0, 1, 2] + ([3] if p else [])  # the white pass knows no same-channel neighbour
            design = np.c_[x[:, cols], np.ones(len(x))]
            fit = np.linalg.lstsq(design, target, rcond=None)[0] if len(x) else np.zeros(len(cols) + 1)
            w = np.zeros(N_FEATURES + 1)
            w[cols], w[N_FEATURES] = fit[:-1], fit[-1]
            weights[c, p] = np.round(w * WEIGHT_SCALE).astype(np.int64)
            scores = ac_scores(np.concatenate([f[:, m] for f, m in zip(feats, masks)], axis=1), weights[c, p])
            edges[c, p] = _quantile_edges(scores, n_buckets)
            bucket = np.searchsorted(edges[c, p], scores, side="left")
            base = np.asarray(base_pmfs[c], np.float64)[:sizes[c]]
            for b in range(n_buckets):
                counts = np.bincount(y[bucket == b], minlength=int(sizes[c])).astype(np.float64)
                pmfs[c, p, b, :sizes[c]] = (counts + alpha * base) / (counts.sum() + alpha)
        for m, e in zip(mags, earlier):
            e += m[c]
    # DC: MED residuals, bucketed by the activity of the row above
    k0 = int(sizes[0])
    res, act = [], []
    for s in arrays:
        s0 = s[..., 0]
        for row in range(s0.shape[0]):
            res.append(s0[row] - dc_prediction(s0, row, k0 // 2) + k0 - 1)
            act.append(dc_activity(s0, row))
    res, act = np.concatenate(res), np.concatenate(act)
    dc_edges = _quantile_edges(act, dc_buckets)
    bucket = np.searchsorted(dc_edges, act, side="left")
    dc_pmfs = np.zeros((dc_buckets, 2 * k0 - 1), np.float32)
    for b in range(dc_buckets):
        counts = np.bincount(res[bucket == b], minlength=2 * k0 - 1).astype(np.float64) + 0.1
        dc_pmfs[b] = counts / counts.sum()
    return {"ctx_order": order, "ctx_weights": weights, "ctx_edges": edges, "ctx_pmfs": pmfs,
            "dc_ctx_edges": dc_edges, "dc_ctx_pmfs": dc_pmfs}

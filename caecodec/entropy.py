"""Entropy coding: integer symbols <-> bytes with constriction's range coder.

What is here:

* code tables: a learned factorized prior's CDFs (numpy weights) -> one probability
  table per latent channel (:func:`code_tables`);
* the coder: :func:`categorical` models, :func:`range_code` and :func:`range_decoder`,
  thin wrappers around ``constriction.stream.queue`` (never a hand-written coder);
* :func:`words_to_bytes`: the coder's 32-bit words as bytes, trailing zeros dropped;
* :func:`shortest_payload`: the shortest ending of a payload that still decodes to the
  same symbols (the decoder reads missing bytes as zeros).

Layer 1: numpy, scipy and constriction only; no Keras.
"""
from __future__ import annotations

import numpy as np


def words_to_bytes(words: np.ndarray) -> bytes:
    """Range-coder words (uint32) -> bytes, big-endian, with up to 3 trailing zero bytes
    dropped (the decoder pads them back): every byte shows at 50-byte file sizes."""
    raw = np.asarray(words, ">u4").tobytes()
    strip = 0
    while strip < 3 and len(raw) - strip > 0 and raw[len(raw) - 1 - strip] == 0:
        strip += 1
    return raw[:len(raw) - strip]


def bytes_to_words(data: bytes) -> np.ndarray:
    """Inverse of :func:`words_to_bytes`."""
    data = bytes(data) + b"\x00" * (-len(data) % 4)
    return np.frombuffer(data, ">u4").astype(np.uint32)


def _plus_one(data: bytes) -> bytes | None:
    """``data`` read as one big-endian number, plus one (None if it was all 0xff bytes)."""
    value = int.from_bytes(data, "big") + 1
    return value.to_bytes(len(data), "big") if value < 256 ** len(data) else None


def shortest_payload(payload: bytes, decodes_to_same) -> bytes:
    """The shortest byte string that still decodes to the same symbols as ``payload``.

    A range coder's output ends with a number somewhere inside the final interval, and
    the decoder reads bytes past the end as zeros. So the last bytes can often be cut,
    if the number is nudged up by one unit in the last kept byte so that it still falls
    inside the interval. For each shorter length (one byte at a time) both candidates,
    cut and cut-plus-one, are tried with ``decodes_to_same(candidate) -> bool`` (which
    must decode ``candidate`` and compare); the search stops at the first length where
    neither decodes correctly. On average this saves about 1.5 bytes per file.
    """
    best = bytes(payload)
    for length in range(len(best) - 1, 0, -1):
        for candidate in (best[:length], _plus_one(best[:length])):
            if candidate is None:
                continue
            candidate = words_to_bytes(bytes_to_words(candidate))  # trailing zeros are free
            if decodes_to_same(candidate):
                best = candidate
                break
        else:
            return best
    return best


def prior_logits_np(weights: list[np.ndarray], n_layers: int, x: np.ndarray) -> np.ndarray:
    """NumPy float64 twin of :meth:`FactorizedPrior.logits_cdf`; ``x`` is ``(C, 1, M)``."""
    mats, biases, factors = weights[0::3], weights[1::3], weights[2::3]
    logits = x
    for i in range(n_layers):
        m = np.logaddexp(0.0, mats[i])  # softplus
        logits = m @ logits + biases[i]
        if i < n_layers - 1:
            logits = logits + np.tanh(factors[i]) * np.tanh(logits)
    return logits


def code_tables(ws: list, n: int, tail: float = 1e-7, max_symbols: int = 255) -> dict:
    """Probability tables for the range coder, from the learned per-channel CDFs.

    For channel ``c`` with median ``m_c``, symbol ``k`` (the integer ``round(y - m_c)``,
    from ``offset_c`` to ``offset_c + K_c - 1``) gets ``CDF(m_c + k + 1/2) - CDF(m_c + k - 1/2)``;
    the probability beyond either end is folded into the end symbols, so every integer
    is codable (values past the ends are clamped). Computed in float64 and stored beside
    the model, so encoder and decoder use bit-identical tables on every machine.

    ``ws``, ``n``: the prior's weights as float64 arrays in (matrix, bias, factor) order
    and its number of layers (``keras_layers.prior_weights_np``). Returns
    ``{"medians": (C,), "offsets": (C,) int32, "pmfs": (C, Kmax) float64, "sizes": (C,) int32}``.
    """
    from scipy.special import expit

    channels = ws[0].shape[0]
    grid = np.arange(-200.0, 200.0, 0.01)
    cdf = np.empty((channels, grid.size))
    for c0 in range(0, channels, 32):  # in chunks: 784 channels at once would need 750 MB
        part = [w[c0:c0 + 32] if w is not None else None for w in ws]
        c1 = min(c0 + 32, channels)
        cdf[c0:c1] = expit(prior_logits_np(part, n, np.broadcast_to(grid, (c1 - c0, 1, grid.size))))[:, 0, :]
    medians, offsets, sizes, pmfs = [], [], [], []
    for c in range(channels):
        med = grid[np.searchsorted(cdf[c], 0.5)]
        lo = grid[min(np.searchsorted(cdf[c], tail), grid.size - 1)]
        hi = grid[min(np.searchsorted(cdf[c], 1 - tail), grid.size - 1)]
        # At least three symbols: constriction cannot code a one-symbol alphabet.
        kmin, kmax = min(int(np.floor(lo - med)), -1), max(int(np.ceil(hi - med)), 1)
        if kmax - kmin + 1 > max_symbols:  # a very wide channel: keep the central symbols
            half = max_symbols // 2
            kmin, kmax = max(kmin, -half), min(kmax, half)
        ks = np.arange(kmin, kmax + 1, dtype=np.float64)
        edges = np.concatenate([ks - 0.5, [kmax + 0.5]]) + med
        ws_c = [w[c:c + 1] if w is not None else None for w in ws]  # this channel's network only
        cdf_edges = expit(prior_logits_np(ws_c, n, edges[None, None, :])[0, 0])
        pmf = np.diff(cdf_edges)
        pmf[0] += cdf_edges[0]
        pmf[-1] += 1.0 - cdf_edges[-1]
        pmf = np.maximum(pmf, 1e-12)
        medians.append(med); offsets.append(kmin); sizes.append(len(pmf)); pmfs.append(pmf / pmf.sum())
    table = np.zeros((channels, max(sizes)), np.float64)
    for c, pmf in enumerate(pmfs):
        table[c, :len(pmf)] = pmf
    return {"medians": np.array(medians, np.float64), "offsets": np.array(offsets, np.int32),
            "pmfs": table, "sizes": np.array(sizes, np.int32)}


def counted_code_tables(symbols: np.ndarray, tables: dict, smoothing: float = 0.5) -> dict:
    """Code tables counted from data: one table per latent value, from its symbols.

    ``symbols``: int ``(N, L)``, the integers ``round(latent - median)`` of N training
    images (L latent values each; ``tables["medians"]`` of shape ``(L,)`` or ``(C,)``
    fixed that grid). ``tables``: the learned tables (:func:`code_tables`), whose
    alphabet for each value, ``offset .. offset + size - 1``, is widened to every integer
    seen in the data. Each table is the histogram of its value's integers plus
    ``smoothing`` for every symbol of the alphabet (so every symbol stays codable).

    Why count? Training sees noisy latents, so the learned prior describes
    ``latent + noise``, while the coder sees rounded latents: their exact frequencies are
    a better table (notebook 05 measures how much better). Returns a dict like
    :func:`code_tables` with ``L`` tables.
    """
    symbols = np.asarray(symbols, np.int64)
    n, length = symbols.shape
    medians = np.broadcast_to(np.asarray(tables["medians"], np.float64), (length,))
    lo = np.minimum(np.broadcast_to(tables["offsets"], (length,)), symbols.min(axis=0))
    hi = np.maximum(np.broadcast_to(tables["offsets"] + tables["sizes"] - 1, (length,)),
                    symbols.max(axis=0))
    sizes = (hi - lo + 1).astype(np.int32)
    pmfs = np.zeros((length, int(sizes.max())), np.float64)
    for i in range(length):
        counts = np.bincount(symbols[:, i] - lo[i], minlength=sizes[i]) + float(smoothing)
        pmfs[i, :sizes[i]] = counts / counts.sum()
    return {"medians": medians.copy(), "offsets": lo.astype(np.int32), "pmfs": pmfs, "sizes": sizes}


def categorical(pmf):
    """A constriction categorical model for one probability table ``(K,)`` (float64)."""
    import constriction

    return constriction.stream.model.Categorical(np.asarray(pmf, np.float64), perfect=False)


def categorical_family():
    """One constriction categorical model whose table is given per symbol (row by row)."""
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def range_code(streams) -> bytes:
    """Range-code ``streams`` in order into one payload (bytes).

    Each stream is ``(symbols, model)`` or ``(symbols, family, tables)``: ``symbols`` a
    1-D int32 array, ``model`` from :func:`categorical`, or a family from
    :func:`categorical_family` with one table row per symbol.
    """
    import constriction

    coder = constriction.stream.queue.RangeEncoder()
    for symbols, *model in streams:
        coder.encode(np.ascontiguousarray(symbols, np.int32), *model)
    return words_to_bytes(coder.get_compressed())


def range_decoder(payload: bytes):
    """A constriction range decoder over ``payload``: call ``.decode(model, n)`` on it in
    the order the streams were coded."""
    import constriction

    return constriction.stream.queue.RangeDecoder(bytes_to_words(payload))

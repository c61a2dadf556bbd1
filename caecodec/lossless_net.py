"""The lossless digit model's schedule and its exact integer network (no Keras).

**The schedule.** A 28x28 digit is coded in five groups of pixels, coarse to fine
(:data:`LEVELS`). Each group is predicted from the groups before it, so a decoder needs
five network passes, not 784:

    L0  every 4th pixel in both directions, (4i, 4j)              49 pixels, no context
    L1  the centres between them, (4i+2, 4j+2)                    49
    L2  the rest of the even grid, (4i, 4j+2) and (4i+2, 4j)      98  -> all (2i, 2j) known
    L3  the odd-odd pixels, (2i+1, 2j+1)                         196
    L4  everything left, (2i, 2j+1) and (2i+1, 2j)               392

Within a group, every pixel first gets a *flag* (zero or not: 81% of MNIST's pixels are
exactly 0) and then, if it is not zero, its value 1..255. The values see the group's
flags, which are decoded first.

**Why integers.** Encoder and decoder must compute bit-identical probabilities, or the
range decoder goes astray. Floating-point convolutions can change in the last bit with
the batch size or the machine. So the trained network is *quantized*: weights and
activations become integers with fixed binary scales, and every sum is an exact integer
below 2**53, which float64 matrix products compute exactly in any order, on any machine.
Logits come out as integers in units of 1/64 nat, and probabilities are read from an
integer table of exp() made with Python's exact decimal arithmetic (:func:`exp_table`).

Layer 1: numpy only.
"""
from __future__ import annotations

from collections import namedtuple
from functools import lru_cache

import numpy as np

from .errors import CAEError

#: One group of pixels: coded after ``known`` and predicted from it. Pixels are addressed
#: by their phase (row, column offset) inside ``block`` x ``block`` tiles of the image.
Level = namedtuple("Level", "name block known targets")
LEVELS = (
    Level("L0", 4, (), ((0, 0),)),
    Level("L1", 4, ((0, 0),), ((2, 2),)),
    Level("L2", 4, ((0, 0), (2, 2)), ((0, 2), (2, 0))),
    Level("L3", 2, ((0, 0),), ((1, 1),)),
    Level("L4", 2, ((0, 0), (1, 1)), ((0, 1), (1, 0))),
)
SIDE = 28
VALUES = 255            # the non-zero pixel values 1..255, coded as symbols 0..254
LOGIT_BITS = 6          # logits are integers in units of 2**-6 nat
ACC_BITS = 28           # accumulators are integers in units of 2**-28
ACT_BITS = 12           # activations are integers in units of 2**-12
ACT_MAX = float(2 ** 24)  # activations are clipped here (4096.0); far above what occurs
EXACT_LIMIT = float(2 ** 52)  # every sum stays below this, so float64 computes it exactly


def level_pixels(level: Level) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of ``level``'s target pixels in coding order (phase by phase, then
    row by row): two int arrays of length ``len(targets) * (28 / block) ** 2``."""
    n = SIDE // level.block
    i, j = np.indices((n, n))
    rows = [(level.block * i + r).ravel() for r, _ in level.targets]
    cols = [(level.block * j + c).ravel() for _, c in level.targets]
    return np.concatenate(rows), np.concatenate(cols)


def level_of_pixel() -> np.ndarray:
    """``(28, 28)`` int map: the level (0..4) in which each pixel is coded."""
    out = np.full((SIDE, SIDE), -1, np.int64)
    for k, level in enumerate(LEVELS):
        out[level_pixels(level)] = k
    return out


def phase_grid(images: np.ndarray, block: int, phases, table=None) -> np.ndarray:
    """``(N, 28, 28)`` uint8 images -> ``(N, 28/block, 28/block, len(phases) * E)``: for each
    phase ``(r, c)`` (rows ``r::block``, columns ``c::block``) the pixels' embedding vectors
    ``table[value]`` (``table`` ``(256, E)``); without a table, the values themselves (E = 1)."""
    parts = [np.asarray(images[:, r::block, c::block]) for r, c in phases]
    if table is None:
        return np.stack(parts, -1).astype(np.float64)
    return np.concatenate([table[x] for x in parts], -1)


@lru_cache(maxsize=1)
def exp_table() -> np.ndarray:
    """``T[d] = round(2**32 * exp(-d / 64))`` for d = 0, 1, ... until it reaches 0, then a
    final 0; float64 holding exact integers. Made with :mod:`decimal`, whose ``exp`` is
    correctly rounded, so every machine builds the same table."""
    from decimal import Decimal, getcontext

    getcontext().prec = 40
    values, d = [], 0
    while True:
        v = int((Decimal(-d) / (1 << LOGIT_BITS)).exp() * (1 << 32) + Decimal("0.5"))
        values.append(v)
        if v == 0:
            return np.array(values, np.float64)
        d += 1


def softmax_weights(logits: np.ndarray) -> np.ndarray:
    """Integer logits ``(..., K)`` (units of 1/64 nat) -> unnormalised probabilities
    ``(..., K)``: exact integers in float64, ``T[max - logit]``. Constriction normalises them."""
    table = exp_table()
    d = np.max(logits, axis=-1, keepdims=True) - logits
    np.minimum(d, len(table) - 1, out=d)
    return table[d.astype(np.intp)]


def flag_weights(flag_logits: np.ndarray) -> np.ndarray:
    """Integer flag logits (log-odds of "not zero") ``(M,)`` -> ``(M, 2)`` weights for the
    symbols 0 (pixel is zero) and 1 (pixel is not zero)."""
    flag_logits = np.asarray(flag_logits, np.float64)
    return softmax_weights(np.stack([np.zeros_like(flag_logits), flag_logits], -1))


def weights_to_bits(weights: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """``-log2 p(symbol)`` under unnormalised weights ``(M, K)``; ``(M,)`` float64. (What the
    model promises; the range coder's fixed-point tables cost a hair more.)"""
    w = np.maximum(weights[np.arange(len(symbols)), symbols], 0.5)
    return np.log2(weights.sum(axis=1)) - np.log2(w)


# ------------------------------------------------------------------------------------------
# The integer network
# ------------------------------------------------------------------------------------------

def _quantize(array, bits: int) -> np.ndarray:
    return np.round(np.asarray(array, np.float64) * 2.0 ** bits)


def quantize_network(float_weights: dict) -> dict:
    """Float weights (``lossless_model.network_weights``) -> the integer network.

    Shared: ``embedding`` (each pixel value's vector, quantized like an activation) and the
    value ``head``. Per level ``Lk``: ``in`` (first convolution, on the embedded known
    pixels) or ``map`` (L0's learned activations), ``res`` (1x1 residual layers), ``flag``,
    ``fh``, ``fc`` (on the 0/1 flags of the group) and ``vf``. Accumulators have the scale 2**-28, activations 2**-12. Raises
    :class:`CAEError` if a sum could ever leave float64's exact integer range.
    """
    w_act = ACC_BITS - ACT_BITS
    table = _quantize(float_weights["embedding"], ACT_BITS)   # like activations
    table[0] = 0.0                                            # value 0 embeds to zeros
    out = {"head_w": _quantize(float_weights["head_w"], w_act),
           "head_b": _quantize(float_weights["head_b"], ACC_BITS), "embedding": table}
    for level in LEVELS:
        p = level.name + "/"
        q = {}
        if level.known:
            q["in_w"] = _quantize(float_weights[p + "in_w"], w_act)
            q["in_b"] = _quantize(float_weights[p + "in_b"], ACC_BITS)
        else:
            q["map"] = np.clip(_quantize(np.maximum(float_weights[p + "map"], 0), ACT_BITS), 0, ACT_MAX)
        for name in ("flag", "fh", "vf"):
            q[name + "_w"] = _quantize(float_weights[p + name + "_w"], w_act)
            q[name + "_b"] = _quantize(float_weights[p + name + "_b"], ACC_BITS)
        q["fc_w"] = _quantize(float_weights[p + "fc_w"], ACC_BITS)
        q["fc_b"] = _quantize(float_weights[p + "fc_b"], ACC_BITS)
        i = 0
        while p + f"res{i}_w" in float_weights:
            q[f"res{i}_w"] = _quantize(float_weights[p + f"res{i}_w"], w_act)
            q[f"res{i}_b"] = _quantize(float_weights[p + f"res{i}_b"], ACC_BITS)
            i += 1
        out.update({p + k: v for k, v in q.items()})
    check_exact(out)
    return out


def check_exact(q: dict) -> None:
    """Refuse an integer network in which some sum could reach 2**52 (then float64 could
    round it, and exactness would be lost)."""
    def bound(w, b, x_max):
        w = np.asarray(w).reshape(-1, np.asarray(w).shape[-1])
        return float((np.abs(w).sum(axis=0) * x_max + np.abs(b)).max())

    worst = bound(q["head_w"], q["head_b"], ACT_MAX)
    for level in LEVELS:
        p = level.name + "/"
        if level.known:
            worst = max(worst, bound(q[p + "in_w"], q[p + "in_b"], float(np.abs(q["embedding"]).max())))
        worst = max(worst, bound(q[p + "fc_w"], q[p + "fc_b"], 1.0) + bound(q[p + "fh_w"], q[p + "fh_b"], ACT_MAX))
        for name in [k.split("/")[1][:-2] for k in q if k.startswith(p) and k.endswith("_w")]:
            if name not in ("in", "fc", "fh"):
                worst = max(worst, bound(q[p + name + "_w"], q[p + name + "_b"], ACT_MAX))
    if worst >= EXACT_LIMIT:
        raise CAEError(f"The integer network could reach {worst:.3g}, beyond float64's exact "
                       "integers; retrain with smaller weights.")


def _requantize(acc: np.ndarray) -> np.ndarray:
    """Accumulator (2**-28) -> ReLU activation (2**-12), rounded half up, clipped. In place:
    ``acc`` must be a fresh array (the speed of the codec depends on few passes over memory)."""
    acc *= 2.0 ** (ACT_BITS - ACC_BITS)
    acc += 0.5
    np.floor(acc, out=acc)
    np.maximum(acc, 0.0, out=acc)
    return np.minimum(acc, ACT_MAX, out=acc)


def _logits(acc: np.ndarray) -> np.ndarray:
    """Accumulator (2**-28) -> integer logits (2**-6 nat), clipped to +-2**20. In place."""
    acc *= 2.0 ** (LOGIT_BITS - ACC_BITS)
    acc += 0.5
    np.floor(acc, out=acc)
    np.maximum(acc, -2.0 ** 20, out=acc)
    return np.minimum(acc, 2.0 ** 20, out=acc)


def _layer(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x @ w + b`` for integer-valued float64 arrays: exact (see :func:`check_exact`)."""
    acc = x @ w.reshape(-1, w.shape[-1])
    acc += b
    return acc


def _residual(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h + relu(h @ w + b)``, requantized and clipped."""
    r = _requantize(_layer(h, w, b))
    r += h
    return np.minimum(r, ACT_MAX, out=r)


def windows(grid: np.ndarray, k: int, where: tuple) -> np.ndarray:
    """The ``k`` x ``k`` neighbourhoods (zero beyond the edge) of ``grid`` ``(N, H, W, C)`` at
    the positions ``where = (n, i, j)``: ``(M, k*k*C)``, in Keras' kernel order ``(k, k, C)``.
    One ``take`` of whole pixel rows, the fastest gather numpy has."""
    pad = k // 2
    n_img, height, width, channels = grid.shape
    padded = np.pad(grid, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, i, j = where
    rows, cols = height + 2 * pad, width + 2 * pad
    corner = (n * rows + i) * cols + j                               # window's top-left pixel
    offsets = (np.arange(k)[:, None] * cols + np.arange(k)[None, :]).ravel()
    flat = padded.reshape(-1, channels)
    return np.take(flat, corner[:, None] + offsets[None, :], axis=0).reshape(len(n), k * k * channels)


class IntegerNetwork:
    """The quantized lossless model, evaluated exactly with float64 integer arithmetic.

    ``q``: the dict from :func:`quantize_network`. For each level, :meth:`flag_logits`
    gives the integer flag logits of its target pixels from the pixels known so far, and
    :meth:`value_logits` the 255 value logits of its non-zero targets. Results never depend
    on how many digits are computed together, or in which order.
    """

    def __init__(self, q: dict, kernel: int):
        self.q, self.k = q, int(kernel)
        self.features = q["head_w"].shape[0]
        self.table = q["embedding"]
        # The window layers' kernels as matrices for windows()' patches.
        self.patch_w = {key: np.ascontiguousarray(w.reshape(-1, w.shape[-1])) for key, w in q.items()
                        if key.endswith(("/in_w", "/fc_w"))}

    def _trunk(self, level: Level, known_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Trunk activations of ``level`` given the known image pixels, stored compactly:
        ``(rows (M, width), index (N, h, w))``; position ``(n, i, j)`` has ``rows[index[n, i, j]]``.

        Positions whose whole window of known pixels is zero all get the same activations,
        computed once (the last row): at L3 and L4 that saves a sixth of the work."""
        q, p = self.q, level.name + "/"
        n_img, side = len(known_u8), SIDE // level.block
        if not level.known:                      # L0: one learned map, the same for every digit
            index = np.broadcast_to(np.arange(side * side).reshape(side, side), (n_img, side, side))
            return q[p + "map"].reshape(side * side, -1), index
        nonzero = (phase_grid(known_u8, level.block, level.known) > 0).any(axis=-1)
        grid = phase_grid(known_u8, level.block, level.known, self.table)
        pad = self.k // 2
        padded = np.pad(nonzero, ((0, 0), (pad, pad), (pad, pad)))
        active = np.zeros_like(nonzero)
        for di in range(self.k):
            for dj in range(self.k):
                active |= padded[:, di:di + side, dj:dj + side]
        where = np.nonzero(active)
        rows = self._dense_trunk(p, windows(grid, self.k, where))
        background = self._dense_trunk(p, np.zeros((1, self.patch_w[p + "in_w"].shape[0])))
        rows = np.concatenate([rows, background])
        index = np.full((n_img, side, side), len(where[0]), np.intp)
        index[where] = np.arange(len(where[0]))
        return rows, index

    def _dense_trunk(self, p: str, patches: np.ndarray) -> np.ndarray:
        q = self.q
        h = _requantize(_layer(patches, self.patch_w[p + "in_w"], q[p + "in_b"]))
        i = 0
        while p + f"res{i}_w" in q:
            h = _residual(h, q[p + f"res{i}_w"], q[p + f"res{i}_b"])
            i += 1
        return h

    def flag_logits(self, level: Level, known_u8: np.ndarray):
        """``(flag logits (N, P*h*w) in coding order, trunk)``; the trunk (compact, see
        :meth:`_trunk`) is what :meth:`value_logits` needs."""
        q, p = self.q, level.name + "/"
        rows, index = self._trunk(level, known_u8)
        logits = _logits(_layer(rows, q[p + "flag_w"], q[p + "flag_b"]))[index]   # (N, h, w, P)
        return np.moveaxis(logits, -1, 1).reshape(len(index), -1), (rows, index)

    def value_logits(self, level: Level, trunk: tuple, flags: np.ndarray) -> np.ndarray:
        """Value logits ``(M, 255)`` of the non-zero targets, in coding order (digit by digit).

        ``trunk``: from :meth:`flag_logits`; ``flags``: ``(N, P*h*w)`` 0/1 in coding order.
        """
        q, p = self.q, level.name + "/"
        rows, index_rows = trunk
        n_img, side, _ = index_rows.shape
        n_phases = len(level.targets)
        flag_grid = np.moveaxis(np.asarray(flags, np.float64).reshape(n_img, n_phases, side, side), 1, -1)
        targets = flags.reshape(n_img, n_phases, side, side) > 0
        n, ph, i, j = np.nonzero(targets)                                 # coding order
        if not len(n):
            return np.zeros((0, VALUES), np.float64)
        where = np.nonzero(targets.any(axis=1))          # positions with a non-zero target
        index = np.zeros((n_img, side, side), np.int64)
        index[where] = np.arange(len(where[0]))
        acc = _layer(rows[index_rows[where]], q[p + "fh_w"], q[p + "fh_b"])
        acc += _layer(windows(flag_grid, self.k, where), self.patch_w[p + "fc_w"], q[p + "fc_b"])
        g = _requantize(acc)
        v = _requantize(_layer(g, q[p + "vf_w"], q[p + "vf_b"])).reshape(len(g), n_phases, self.features)
        return _logits(_layer(v[index[n, i, j], ph], q["head_w"], q["head_b"]))

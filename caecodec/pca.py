"""The linear baseline: PCA, a uniform quantizer and the same range coder and header.

A course about autoencoders owes its students the linear answer too. :class:`PCACodec`
writes files directly comparable with the learned codec's: what differs is the
transform (linear and fixed) and the probability model (counted histograms).
"""
from __future__ import annotations

import numpy as np

from . import entropy
from .errors import CAEError
from .formats import pack_v1, unpack_v1
from .images import PIXELS_PER_DIGIT

#: The quality number the PCA baseline writes into its v1-style header (the learned codec
#: uses 1..7; 15 is the largest the header allows and is never a learned quality).
PCA_HEADER_QUALITY = 15
#: PCA baseline settings ``(components k, quantizer step on the [0, 1] pixel scale)``. With
#: all 784 components the step alone sets the rate (weak components round to 0); fewer
#: components only help at the very lowest rates. Plots keep the Pareto front.
PCA_SETTINGS = ((16, 0.5), (32, 0.4), (48, 0.8), (48, 0.6), (64, 0.6), (128, 0.6), (784, 0.6),
                (784, 0.4), (784, 0.25), (784, 0.18), (784, 0.12), (784, 0.08), (784, 0.05),
                (784, 0.035), (784, 0.025))


def fit_pca(x_train: np.ndarray, max_components: int = PIXELS_PER_DIGIT) -> dict:
    """Principal components of training digits (NumPy SVD of the centred data's scatter matrix).

    ``x_train``: ``(N, 28, 28[, 1])`` float in [0, 1] or uint8. Returns float64 arrays
    ``mean`` ``(784,)``, ``components`` ``(k, 784)`` (orthonormal rows, strongest first),
    ``variances`` ``(k,)`` on the [0, 1] pixel scale, and ``train_coefficients``: the
    training digits' coefficients ``(N, k)`` as float32, which :class:`PCACodec` turns
    into its code tables.
    """
    x = np.asarray(x_train)
    x = (x.astype(np.float64) / 255.0) if x.dtype == np.uint8 else x.astype(np.float64)
    x = x.reshape(len(x), -1)
    mean = x.mean(axis=0)
    centred = x - mean
    # The SVD of the 784 x 784 scatter matrix gives the same components (its singular
    # values are the squared singular values of the data) much faster than an SVD of the
    # N x 784 data itself.
    _, s, vt = np.linalg.svd(centred.T @ centred)
    k = min(int(max_components), vt.shape[0])
    return {"mean": mean, "components": vt[:k], "variances": s[:k] / max(len(x) - 1, 1),
            "train_coefficients": (centred @ vt[:k].T).astype(np.float32)}


class PCACodec:
    """A classic transform coder to compare against: PCA, uniform quantizer, range coder.

    * transform: the first ``k`` principal components of the training digits
      (:func:`fit_pca`); coefficients ``c = (x - mean) @ basis.T`` on the [0, 1] scale;
    * quantize: ``round(c / step)``, one ``step`` for every component (so weak components
      round to 0 and cost almost nothing: classic reverse water-filling);
    * entropy code: one categorical table per component from the training digits'
      histogram of those integers (add-one/Laplace smoothing over the training range;
      values beyond it are clamped to the end symbols, i.e. the tails are folded into
      them), coded with constriction's range coder like :class:`LearnedCodec`'s latents.
      Components that are 0 on every training digit carry no information and are skipped;
    * file: the same 7-byte v1 header (:func:`pack_v1`) with quality
      :data:`PCA_HEADER_QUALITY` and the first byte of a SHA-256 fingerprint of the basis,
      mean and step.

    Its bytes are therefore directly comparable with the learned codec's: what differs is
    the transform (linear and fixed) and the probability model (counted histograms instead
    of a prior learned jointly with a non-linear transform).
    """

    quality = PCA_HEADER_QUALITY

    def __init__(self, pca: dict, k: int, step: float, max_symbols: int = 1023):
        import hashlib

        self.k, self.step = int(k), float(step)
        if not (1 <= self.k <= len(pca["components"]) and self.step > 0):
            raise CAEError(f"PCA needs 1 <= k <= {len(pca['components'])} and step > 0.")
        self.mean = np.asarray(pca["mean"], np.float64)
        self.basis = np.asarray(pca["components"][:self.k], np.float64)
        half = max_symbols // 2
        raw = np.clip(np.round(pca["train_coefficients"][:, :self.k] / self.step), -half, half)
        raw = raw.astype(np.int32)
        self.offsets = raw.min(axis=0).astype(np.int64)
        self.sizes = raw.max(axis=0).astype(np.int64) - self.offsets + 1
        self.coded = np.flatnonzero(self.sizes > 1)  # a 1-symbol component carries no bits
        self.pmfs = [np.bincount(raw[:, j] - self.offsets[j], minlength=self.sizes[j]) + 1.0
                     for j in range(self.k)]
        self.pmfs = [c / c.sum() for c in self.pmfs]
        # Components are coded in groups of similar alphabet size (rounded up to a power of
        # two): one table row per component, zero-padded to the group's size, and one
        # constriction call per group. (Padding every row to the longest alphabet would
        # make coding ~10x slower: constriction reads every row for every symbol.)
        padded = 2 ** np.ceil(np.log2(np.maximum(self.sizes[self.coded], 2))).astype(np.int64)
        self._groups = []
        for width in np.unique(padded):
            members = self.coded[padded == width]
            table = np.zeros((len(members), int(width)), np.float64)
            for row, j in enumerate(members):
                table[row, :self.sizes[j]] = self.pmfs[j]
            self._groups.append((members, table))
        self._family = entropy.categorical_family()
        h = hashlib.sha256()
        for arr in (self.mean, self.basis, np.array([self.step])):
            h.update(np.ascontiguousarray(arr, "<f8").tobytes())
        self.fingerprint = h.digest()[:4]

    def quantize(self, images) -> np.ndarray:
        """Images (uint8 or float in [0, 1]) -> symbols ``(N, k)`` int32, component j in ``[0, size_j)``."""
        x = np.asarray(images)
        x = (x.astype(np.float64) / 255.0) if x.dtype == np.uint8 else x.astype(np.float64)
        coef = (x.reshape(len(x), -1) - self.mean) @ self.basis.T
        return np.clip(np.round(coef / self.step) - self.offsets, 0, self.sizes - 1).astype(np.int32)

    def reconstruct(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols ``(N, k)`` -> digits ``(N, 28, 28, 1)`` float32 in [0, 1]."""
        coef = (np.asarray(symbols, np.float64) + self.offsets) * self.step
        return np.clip(coef @ self.basis + self.mean, 0, 1).reshape(-1, 28, 28, 1).astype(np.float32)

    def estimate_bits(self, symbols: np.ndarray) -> np.ndarray:
        """``-sum log2 p(symbol)`` per image under the tables, in bits, ``(N,)``."""
        symbols = np.asarray(symbols)
        bits = np.zeros(len(symbols))
        for j in self.coded:
            bits -= np.log2(self.pmfs[j][symbols[:, j]])
        return bits

    def compress(self, images) -> list[bytes]:
        """Digits -> one complete v1-style file (bytes) each: 7-byte header + range-coded payload."""
        files = []
        for s in self.quantize(images):
            payload = entropy.range_code((s[members], self._family, table)
                                         for members, table in self._groups)
            # the same shortest ending as the learned codec's (entropy.shortest_payload)
            payload = entropy.shortest_payload(payload, lambda p, s=s: self._decodes_to(p, s))
            files.append(pack_v1(self.quality, self.fingerprint, 28, 28, payload))
        return files

    def _uncode(self, payload: bytes) -> np.ndarray:
        symbols = np.zeros(self.k, np.int32)
        decoder = entropy.range_decoder(payload)
        for members, table in self._groups:
            symbols[members] = decoder.decode(self._family, table)
        return symbols

    def _decodes_to(self, payload: bytes, symbols: np.ndarray) -> bool:
        try:
            return bool(np.array_equal(self._uncode(payload)[self.coded], symbols[self.coded]))
        except Exception:  # constriction refuses the candidate
            return False

    def decompress(self, files) -> np.ndarray:
        """Files from :meth:`compress` -> digits ``(N, 28, 28, 1)`` float32 in [0, 1]."""
        symbols = np.zeros((len(files), self.k), np.int32)
        for i, data in enumerate(files):
            payload = unpack_v1(data, self.fingerprint, expect_quality=self.quality)[4]
            symbols[i] = self._uncode(payload)
        return self.reconstruct(symbols)

"""The lossless digit codec: exact 28x28 8-bit digits <-> ``.cae`` version 4 files.

How a digit is coded (notebook 07 teaches it step by step):

1. Five groups of pixels, coarse to fine (:data:`lossless_net.LEVELS`). For each group the
   integer network (:class:`lossless_net.IntegerNetwork`) gives every target pixel the
   probability of being zero, from the pixels of the earlier groups.
2. The flags (zero or not) of the group are range-coded with those probabilities; then
   the network gives each non-zero pixel 255 probabilities for its value, seeing the
   group's flags too, and the values are range-coded.
3. The file: the 8-byte v4 header (:func:`formats.pack_v4`, with a CRC of the pixels) and
   the range coder's words. The decoder repeats the same five passes; its network sees
   exactly what the encoder's saw, and integer arithmetic makes its probabilities
   bit-identical, so it gets every pixel back.

The codec loads only the integer network (``models/lossless.npz``), so decoding needs
numpy and constriction, not Keras. Layer 2: no Keras.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import entropy, paths
from .errors import CAEError
from .fileio import atomic_write_bytes, read_card
from .formats import CAE_V4_SIDE, pack_v4, pixel_crc, unpack_v4
from .lossless_net import LEVELS, IntegerNetwork, flag_weights, level_pixels, softmax_weights, weights_to_bits

#: Digits coded together: bounds the memory of the probability tables and patches (about
#: 150 MB per chunk).
CHUNK = 250
#: Chunks run on this many threads at once (numpy's matrix products and array operations
#: release Python's lock, so two threads use two cores). The bytes never depend on it.
THREADS = min(2, os.cpu_count() or 1)


def _chunked(function, items, size: int = CHUNK) -> list:
    """``function`` on consecutive chunks of ``items``, on :data:`THREADS` threads, results in order."""
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    if THREADS < 2 or len(chunks) < 2:
        return [function(c) for c in chunks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(function, chunks))
#: Loaded codecs, keyed by model path and file time (loading takes a fraction of a second).
_CACHE: dict = {}


def lossless_model_path() -> Path:
    """The shipped lossless model: ``models/lossless.keras`` (its integer network is the
    ``.npz`` beside it, its card the ``.json``)."""
    return paths.MODELS_DIR / "lossless.keras"


def network_fingerprint(q: dict, kernel: int) -> bytes:
    """4 bytes identifying an integer network: the start of a SHA-256 over its arrays."""
    import hashlib

    h = hashlib.sha256(f"kernel={int(kernel)}".encode())
    for key in sorted(q):
        h.update(key.encode())
        h.update(np.ascontiguousarray(q[key]).astype("<i8").tobytes())   # integers: no -0.0
    return h.digest()[:4]


def as_u8_digits(digits) -> np.ndarray:
    """Digits as ``uint8`` ``(N, 28, 28)``: from ``uint8`` ``(N, 28, 28[, 1])``, or from floats
    in [0, 1] that are exact multiples of 1/255 (what ``cu.load_mnist`` gives). Anything else
    raises :class:`CAEError`: lossless coding must know the exact 8-bit pixels."""
    x = np.asarray(digits)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (CAE_V4_SIDE, CAE_V4_SIDE):
        raise CAEError(f"The lossless codec takes 28x28 digits, got an array of shape {np.shape(digits)}.")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise CAEError(f"The lossless codec takes numeric pixels, got {x.dtype}.")
    scaled = np.asarray(x, np.float64) * 255.0 if np.issubdtype(x.dtype, np.floating) else x
    rounded = np.round(scaled)
    if not (np.all(np.isfinite(scaled)) and np.all(np.abs(scaled - rounded) < 1e-3)
            and rounded.min(initial=0) >= 0 and rounded.max(initial=0) <= 255):
        raise CAEError("Lossless coding needs 8-bit pixels: uint8 values, or floats in [0, 1] "
                       "that are exact multiples of 1/255.")
    return rounded.astype(np.uint8)


class LosslessCodec:
    """The integer network plus constriction's range coder: digits <-> ``.cae`` v4 bytes.

    Load the shipped one with :func:`load_lossless_codec`. :meth:`compress` and
    :meth:`decompress` work on batches (faster) or single digits (same bytes).
    :meth:`pixel_bits` gives the cost of every pixel under the model.
    """

    def __init__(self, q: dict, kernel: int, card: dict | None = None):
        self.net = IntegerNetwork(q, kernel)
        self.fingerprint = network_fingerprint(q, kernel)
        self.card = card or {}
        self._family = entropy.categorical_family()
        self._levels = [(level, *level_pixels(level)) for level in LEVELS]

    # -- the model's probabilities ------------------------------------------------------
    def level_tables(self, level, known: np.ndarray, flags: np.ndarray | None = None):
        """Probability tables of one level for digits whose earlier levels are ``known``.

        Returns ``(flag_tables (N, T, 2), value_tables (M, 255) or None, trunk)``; the
        value tables need the level's ``flags`` ``(N, T)`` (0/1, coding order) and cover the
        non-zero targets digit by digit. Tables are unnormalised integer weights.
        """
        flag_logits, trunk = self.net.flag_logits(level, known)
        flag_tables = flag_weights(flag_logits.ravel()).reshape(len(known), -1, 2)
        if flags is None:
            return flag_tables, None, trunk
        return flag_tables, softmax_weights(self.net.value_logits(level, trunk, flags)), trunk

    def pixel_bits(self, digits) -> np.ndarray:
        """``-log2 p`` of every pixel (flag, plus value if not zero) under the model, in
        bits: float64 ``(N, 28, 28)``. Summed, it is the ideal payload the coder approaches."""
        u8 = as_u8_digits(digits)
        if not len(u8):
            return np.zeros(u8.shape, np.float64)
        return np.concatenate(_chunked(self._pixel_bits_chunk, u8))

    def _pixel_bits_chunk(self, x: np.ndarray) -> np.ndarray:
        bits = np.zeros(x.shape, np.float64)
        for level, rows, cols in self._levels:
            flags = (x[:, rows, cols] > 0).astype(np.int64)
            flag_tables, value_tables, _ = self.level_tables(level, x, flags)
            cost = weights_to_bits(flag_tables.reshape(-1, 2), flags.ravel()).reshape(flags.shape)
            n, t = np.nonzero(flags)
            values = x[:, rows, cols][n, t].astype(np.int64) - 1
            cost[n, t] += weights_to_bits(value_tables, values)
            bits[:, rows, cols] = cost
        return bits

    def estimate_bits(self, digits) -> np.ndarray:
        """The model's estimate of each digit's payload in bits, ``(N,)``."""
        return self.pixel_bits(digits).sum(axis=(1, 2))

    # -- bytes ----------------------------------------------------------------------------
    def compress(self, digits) -> list[bytes]:
        """Digits (``uint8`` ``(N,28,28[,1])``, or exact floats in [0, 1]) -> one complete
        ``.cae`` v4 file each. The bytes of a digit never depend on its batch."""
        return [f for chunk in _chunked(self._compress_chunk, as_u8_digits(digits)) for f in chunk]

    def _compress_chunk(self, x: np.ndarray) -> list[bytes]:
        import constriction

        coders = [constriction.stream.queue.RangeEncoder() for _ in x]
        for level, rows, cols in self._levels:
            targets = x[:, rows, cols]
            flags = (targets > 0).astype(np.int32)
            flag_tables, value_tables, _ = self.level_tables(level, x, flags)
            values = targets[flags > 0].astype(np.int32) - 1
            ends = np.cumsum(flags.sum(axis=1))
            for i, coder in enumerate(coders):
                coder.encode(flags[i], self._family, flag_tables[i])
                lo = ends[i - 1] if i else 0
                if ends[i] > lo:
                    coder.encode(values[lo:ends[i]], self._family, value_tables[lo:ends[i]])
        return [pack_v4(self.fingerprint, CAE_V4_SIDE, CAE_V4_SIDE, pixel_crc(x[i]),
                        entropy.words_to_bytes(coder.get_compressed()))
                for i, coder in enumerate(coders)]

    def decompress(self, files, source: str = "the .cae data") -> np.ndarray:
        """``.cae`` v4 files (bytes) -> digits ``uint8`` ``(N, 28, 28)``, exactly as encoded.

        Every file is checked (:func:`formats.unpack_v4`) before any decoding; after it, the
        pixels must match the CRC stored in the file. Any problem raises :class:`CAEError`.
        """
        files = list(files)
        if not files:
            return np.zeros((0, CAE_V4_SIDE, CAE_V4_SIDE), np.uint8)
        return np.concatenate(_chunked(lambda chunk: self._decompress_chunk(chunk, source), files))

    def _decompress_chunk(self, files, source: str) -> np.ndarray:
        parsed = [unpack_v4(data, self.fingerprint, source=source) for data in files]
        decoders = [entropy.range_decoder(p[4]) for p in parsed]
        x = np.zeros((len(files), CAE_V4_SIDE, CAE_V4_SIDE), np.uint8)
        try:
            for level, rows, cols in self._levels:
                flag_tables, _, trunk = self.level_tables(level, x)
                flags = np.stack([d.decode(self._family, flag_tables[i]) for i, d in enumerate(decoders)])
                value_tables = softmax_weights(self.net.value_logits(level, trunk, flags))
                ends = np.cumsum(flags.sum(axis=1))
                values = np.zeros(len(value_tables), np.int64)
                for i, d in enumerate(decoders):
                    lo = ends[i - 1] if i else 0
                    if ends[i] > lo:
                        values[lo:ends[i]] = d.decode(self._family, value_tables[lo:ends[i]])
                targets = np.zeros(flags.shape, np.int64)
                targets[flags > 0] = values + 1
                x[:, rows, cols] = targets
        except CAEError:
            raise
        except Exception as exc:  # constriction found a payload inconsistent
            raise CAEError(f"{source} is corrupt: its coded data cannot be decoded ({exc}).") from None
        for i, (p, d) in enumerate(zip(parsed, decoders)):
            if pixel_crc(x[i]) != p[3] or not d.maybe_exhausted():
                raise CAEError(f"{source} does not decode to the digit it was made from (its pixel "
                               "checksum does not match): the file is corrupt, or this model or "
                               "library version computes different probabilities.")
        return x


def save_integer_network(q: dict, kernel: int, model_path) -> Path:
    """Write the integer network beside ``model_path`` (``.npz``, atomically)."""
    import io

    arrays = {k.replace("/", "."): np.asarray(v).astype(np.int64) for k, v in q.items()}
    for k, v in q.items():
        if not np.array_equal(arrays[k.replace("/", ".")], v):
            raise CAEError(f"The integer network's {k} holds non-integers; it was not quantized.")
    buf = io.BytesIO()
    np.savez_compressed(buf, kernel=np.int64(kernel), **arrays)
    path = Path(model_path).with_suffix(".npz")
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_lossless_codec(path: str | os.PathLike | None = None) -> LosslessCodec:
    """The lossless codec of ``path`` (default: the shipped ``models/lossless.keras``),
    loaded once per process. Reads the integer network (``.npz``) and the card (``.json``)
    beside it; needs no Keras. Raises :class:`CAEError` for missing or damaged files."""
    path = Path(path) if path is not None else lossless_model_path()
    npz = path.with_suffix(".npz")
    if not npz.is_file():
        raise CAEError(f"The lossless model's integer network {paths.shown(npz)} is missing; it "
                       "ships beside the model (train one with scripts/train_lossless.py).")
    key = (str(npz.resolve()), npz.stat().st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    try:
        with np.load(npz) as data:
            kernel = int(data["kernel"])
            q = {k.replace(".", "/"): data[k].astype(np.float64) for k in data.files if k != "kernel"}
    except Exception as exc:  # a damaged or foreign file
        raise CAEError(f"Could not read the lossless model {npz}: {type(exc).__name__}: {exc}") from None
    card = read_card(path)
    codec = LosslessCodec(q, kernel, card)
    if card.get("fingerprint_int") not in (None, codec.fingerprint.hex()):
        raise CAEError(f"{npz} does not match its card {path.with_suffix('.json').name} (fingerprint "
                       f"{codec.fingerprint.hex()}, the card says {card['fingerprint_int']}); "
                       "restore both from the repository.")
    _CACHE.clear()
    _CACHE[key] = codec
    return codec


# ------------------------------------------------------------------------------------------
# The user's path: a 28x28 image file -> a .cae v4 file -> a PNG with the same pixels
# ------------------------------------------------------------------------------------------

def read_lossless_image(path) -> np.ndarray:
    """An image file that is exactly 28x28 8-bit grayscale -> ``uint8`` ``(28, 28)``.

    Lossless means the user's own pixels come back, so nothing is converted that would
    change them: other sizes are refused (never resized), and so are colour, transparency
    and 16-bit images. RGB files whose three channels are equal count as gray.
    """
    from .images import open_image

    img = open_image(path)
    if img.size != (CAE_V4_SIDE, CAE_V4_SIDE):
        raise CAEError(f"{path} is {img.width}x{img.height} pixels; --lossless codes exactly 28x28 "
                       "grayscale digits (MNIST's size) and never resizes, which would change the "
                       "pixels. Encode it without --lossless (any image becomes a 28x28 digit) or "
                       "with --mode photo.")
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"), np.uint8)
    if img.mode in ("P", "RGB", "RGBA", "LA", "PA"):
        rgba = np.asarray(img.convert("RGBA"), np.uint8)
        if (rgba[..., 3] != 255).any():
            raise CAEError(f"{path} has transparent pixels; --lossless codes opaque 8-bit gray "
                           "digits. Flatten it onto black first.")
        if not ((rgba[..., 0] == rgba[..., 1]) & (rgba[..., 1] == rgba[..., 2])).all():
            raise CAEError(f"{path} is in colour; --lossless codes 8-bit grayscale digits. "
                           "Convert it to grayscale first (that step is not lossless).")
        return np.ascontiguousarray(rgba[..., 0])
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img)
        if arr.min() >= 0 and arr.max() <= 255 and np.array_equal(arr, np.round(arr)):
            return arr.astype(np.uint8)
    raise CAEError(f"{path} is a {img.mode} image; --lossless codes 8-bit grayscale digits "
                   "(Pillow mode L). Convert it first.")


def encode_lossless_file(in_path, out_path, model_path=None, force: bool = False,
                         quality: int | None = None, mode: str = "digit") -> dict:
    """``cae encode IN OUT --lossless``: a 28x28 gray image file -> a ``.cae`` v4 file.

    Refused: a quality or photo mode (lossless has neither), an image that is not exactly
    28x28 8-bit gray (:func:`read_lossless_image`), and an image so unlike an MNIST digit
    (noise, a crop of a photo) that its file would be larger than its 784 raw pixels. The
    output is written atomically and an existing file is kept unless ``force``.
    Returns ``{"path", "bytes", "image", "bpp"}``.
    """
    from .fileio import check_output_path, write_output

    if quality is not None:
        raise CAEError("--lossless takes no --quality: a lossless file has one size, the "
                       "smallest this model can make.")
    if mode != "digit":
        raise CAEError("--lossless codes 28x28 grayscale digits; it does not combine with --mode photo.")
    out_path = Path(out_path)
    check_output_path(out_path, force)
    pixels = read_lossless_image(in_path)
    data = load_lossless_codec(model_path).compress(pixels[None])[0]
    if len(data) > pixels.size + 8:
        raise CAEError(f"{in_path} is not like an MNIST digit (white ink on black): the lossless "
                       f"digit codec would need {len(data)} bytes, more than its {pixels.size} raw "
                       "pixels. Keep it as a PNG instead.")
    write_output(out_path, data, force)
    return {"path": out_path, "bytes": len(data), "image": pixels, "bpp": 8.0 * len(data) / pixels.size}


def decode_lossless_file(data: bytes, in_path, out_path, model_path=None, force: bool = False,
                         quality: int | None = None) -> dict:
    """The bytes of a ``.cae`` v4 file (read from ``in_path``) -> a grayscale PNG at
    ``out_path`` with exactly the encoded pixels. Returns ``{"path", "image"}``, the image
    ``uint8`` ``(28, 28)``."""
    import io

    from PIL import Image

    from .fileio import write_output

    if quality is not None:
        raise CAEError(f"{in_path} is a lossless .cae file (version 4); decode it without --quality.")
    image = load_lossless_codec(model_path).decompress([data], source=str(in_path))[0]
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=True)
    write_output(Path(out_path), buf.getvalue(), force)
    return {"path": Path(out_path), "image": image}

"""The learned digit codec: a rate-distortion CAE, its code tables, ``.cae`` v1 files.

Seven shipped qualities (``models/rd_q1..7``), each a model trained for
``bits + lambda * MSE`` (notebook 05) and a table per latent channel. ``compress``
quantizes the encoder's 7x7x16 latent and range-codes it; ``decompress`` checks the
file, decodes the symbols and runs the decoder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from . import entropy, modelio, paths
from .errors import CAEError, check_int
from .fileio import atomic_write_bytes
from .formats import pack_v1, unpack_v1
from .images import to_float_images
from .keras_layers import build_code_tables
from .modelio import decode_latents, encode_digits, load_model, model_fingerprint, save_model

#: Quality levels 1..14 of the shipped learned codec: the rate-distortion trade-off lambda
#: its model was trained for (loss = bits per pixel + lambda * MSE on the 0..255 scale).
#: Higher = bigger, better.
QUALITY_LAMBDAS = {1: 0.0003, 2: 0.0005, 3: 0.0008, 4: 0.0015, 5: 0.004, 6: 0.01, 7: 0.016,
                   8: 0.025, 9: 0.07, 10: 0.2, 11: 0.5, 12: 5.0, 13: 5.0, 14: 5.0}
#: The quantization step of each quality (1 unless listed): the top qualities round the
#: latent of the lambda-5 model more finely than it was trained for, which buys PSNR
#: for bytes beyond what its training reached (notebook 05 measures it).
QUALITY_STEPS = {13: 0.75, 14: 0.5}


def rd_model_path(quality: int) -> Path:
    """Where the shipped model for ``quality`` lives: ``models/rd_q<N>.keras``."""
    return paths.MODELS_DIR / f"rd_q{int(quality)}.keras"


class LearnedCodec:
    """A trained rate-distortion CAE plus its code tables: digits <-> ``.cae`` v1 bytes.

    Load a shipped quality with :func:`load_codec`. ``compress`` and ``decompress`` work
    on batches; :meth:`estimate_bits` gives the model's own rate estimate for comparison
    with the real bytes.
    """

    def __init__(self, encoder, decoder, tables: dict, quality: int, fingerprint: bytes,
                 card: dict | None = None):
        self.encoder, self.decoder, self.quality = encoder, decoder, int(quality)
        self.fingerprint, self.card = bytes(fingerprint), card or {}
        self.latent_shape = tuple(None if d is None else int(d) for d in decoder.input_shape[1:])
        self.step = float(np.asarray(tables.get("step", 1.0)) if hasattr(tables, "get") else 1.0)
        self.medians = np.asarray(tables["medians"], np.float64)
        self.offsets = np.asarray(tables["offsets"], np.int32)
        self.sizes = np.asarray(tables["sizes"], np.int32)
        table = np.asarray(tables["pmfs"], np.float64)
        # One table per latent channel (shared by the 7x7 positions), or one table per
        # latent value (a table for each position of each channel, in the order of
        # ``latent.ravel()``): then the fields are reshaped to the latent's shape.
        self.per_position = (None not in self.latent_shape and len(self.sizes) > 1
                             and len(self.sizes) == int(np.prod(self.latent_shape)))
        if self.per_position:
            self.medians, self.offsets, self.sizes = (a.reshape(self.latent_shape) for a in
                                                      (self.medians, self.offsets, self.sizes))
            self.rows = table / table.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore"):
                self._log2_rows = np.log2(self.rows)
            self._family = entropy.categorical_family()
            self.pmfs = [row[:k] for row, k in zip(self.rows, self.sizes.ravel())]
        else:
            self.pmfs = [table[c, :self.sizes[c]] for c in range(len(self.sizes))]
        self._models = [] if self.per_position else [entropy.categorical(p) for p in self.pmfs]
        self._log2 = [np.log2(p) for p in self.pmfs]

    # -- quantization ----------------------------------------------------------------
    def quantize(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(N,7,7,C)`` float -> symbols ``(N,7,7,C)`` int32, each in ``[0, K)`` of
        its table: ``round((latent - median) / step) - offset``, clipped into the table."""
        q = np.round((np.asarray(latents, np.float64) - self.medians) / self.step) - self.offsets
        return np.clip(q, 0, self.sizes - 1).astype(np.int32)

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols -> the latent values the decoder sees (float32)."""
        return ((np.asarray(symbols, np.float64) + self.offsets) * self.step + self.medians).astype(np.float32)

    def estimate_bits(self, symbols: np.ndarray) -> np.ndarray:
        """The model's own rate: ``-sum log2 p(symbol)`` per image, in bits, shape ``(N,)``."""
        return self.symbol_bits(symbols).reshape(len(symbols), -1).sum(axis=1)

    def symbol_bits(self, symbols: np.ndarray) -> np.ndarray:
        """``-log2 p`` of every symbol under its table, float64, the shape of ``symbols``."""
        symbols = np.asarray(symbols)
        if self.per_position:
            flat = symbols.reshape(len(symbols), -1)
            return -self._log2_rows[np.arange(flat.shape[1]), flat].reshape(symbols.shape)
        bits = np.zeros(symbols.shape, np.float64)
        for c, lg in enumerate(self._log2):
            bits[..., c] = -lg[symbols[..., c]]
        return bits

    # -- bytes -------------------------------------------------------------------------
    def _code(self, symbols: np.ndarray) -> bytes:
        # channel by channel, 49 values each, each channel with its own table
        return entropy.range_code((symbols[..., c].ravel(), model)
                                  for c, model in enumerate(self._models))

    def _uncode(self, payload: bytes) -> np.ndarray:
        decoder = entropy.range_decoder(payload)
        if self.per_position:
            flat = decoder.decode(self._family, self.rows)
            return np.asarray(flat).reshape(self.latent_shape).astype(np.int32)
        per_channel = int(np.prod(self.latent_shape[:-1]))
        chans = [decoder.decode(model, per_channel) for model in self._models]
        return np.stack(chans, axis=-1).reshape(self.latent_shape).astype(np.int32)

    def payload(self, symbols: np.ndarray) -> bytes:
        """One digit's symbols ``(7,7,C)`` -> the range-coded payload of its file: every
        symbol with its own table, in ``symbols.ravel()`` order (or channel by channel with
        per-channel tables), then cut to the shortest ending that still decodes to the same
        symbols (:func:`entropy.shortest_payload`)."""
        symbols = np.asarray(symbols, np.int32)
        if self.per_position:
            raw = entropy.range_code([(symbols.ravel(), self._family, self.rows)])
        else:
            raw = self._code(symbols)
        return entropy.shortest_payload(raw, lambda p: self._decodes_to(p, symbols))

    def _decodes_to(self, payload: bytes, symbols: np.ndarray) -> bool:
        try:
            return bool(np.array_equal(self._uncode(payload), symbols))
        except Exception:  # constriction refuses the candidate: it is not a valid ending
            return False

    def _symbols_of(self, digits: np.ndarray) -> np.ndarray:
        latents = encode_digits(self.encoder, digits)
        if not np.all(np.isfinite(latents)):
            raise CAEError("The latent contains NaN or infinity; the model is broken.")
        return self.quantize(latents)

    def compress(self, digits: np.ndarray) -> list[bytes]:
        """Digits ``(N,28,28,1)`` in [0, 1] -> one complete ``.cae`` v1 file (bytes) each."""
        symbols = self._symbols_of(digits)
        return [pack_v1(self.quality, self.fingerprint, 28, 28, self.payload(s)) for s in symbols]

    def decompress(self, files, source="the .cae data") -> np.ndarray:
        """``.cae`` v1 files (bytes) -> digits ``(N,28,28,1)`` float32 in [0, 1].

        Each file is fully checked first (:func:`unpack_v1`); any problem raises
        :class:`CAEError` naming it (``source``: one name for all files, or a list with
        one name per file).
        """
        files = list(files)
        sources = [source] * len(files) if isinstance(source, str) else list(source)
        symbols = []
        for data, source in zip(files, sources):
            quality, _, h, w, payload = unpack_v1(data, self.fingerprint, source=source,
                                                  expect_quality=self.quality)
            if (h, w) != (28, 28):
                raise CAEError(f"{source} holds a {w}x{h} image; this digit codec only "
                               "decodes 28x28 images.")
            try:
                symbols.append(self._uncode(payload))
            except Exception as exc:  # constriction found the payload inconsistent
                raise CAEError(f"{source} is corrupt: its coded data cannot be decoded ({exc}).") from None
        if not symbols:
            return np.zeros((0, 28, 28, 1), np.float32)
        return decode_latents(self.decoder, self.dequantize(np.stack(symbols)))

    def symbols_roundtrip(self, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(symbols the model produced, symbols read back from the bytes): must be equal."""
        symbols = self._symbols_of(digits)
        back = np.stack([self._uncode(unpack_v1(f, self.fingerprint)[4])
                         for f in [pack_v1(self.quality, self.fingerprint, 28, 28, self.payload(s))
                                   for s in symbols]])
        return symbols, back


def digit_code_tables(encoder, prior, count_on: np.ndarray | None = None, step: float = 1.0) -> dict:
    """The code tables of a trained rate-distortion CAE.

    From the prior's learned densities (:func:`build_code_tables`); with ``count_on``
    (training digits ``(N,28,28,1)`` in [0, 1]) the tables are then counted from those
    digits' rounded latents instead (:func:`entropy.counted_code_tables`), one per
    latent value, on the grid the learned medians set, with spacing ``step`` (1: the
    rounding the model was trained for; smaller: finer).
    """
    tables = build_code_tables(prior)
    if count_on is None:
        return tables
    if step != 1.0:  # the learned alphabets, in units of the finer step
        lo = np.floor(tables["offsets"] / step)
        hi = np.ceil((tables["offsets"] + tables["sizes"] - 1) / step)
        tables = {**tables, "offsets": lo.astype(np.int32), "sizes": (hi - lo + 1).astype(np.int32)}
    latents = encode_digits(encoder, count_on)
    shape = latents.shape[1:]
    length = int(np.prod(shape))

    def per_value(field):  # a per-channel field repeated at every position, flat
        field = np.asarray(field)
        return field.reshape(-1) if field.size == length else np.broadcast_to(field, shape).reshape(-1)

    flat = {k: per_value(tables[k]) for k in ("medians", "offsets", "sizes")}
    integers = np.round((latents.reshape(len(latents), -1) - flat["medians"]) / step).astype(np.int64)
    counted = entropy.counted_code_tables(integers, flat)
    return counted if step == 1.0 else {**counted, "step": np.array(float(step))}


def save_codec(trainer, encoder, decoder, prior, quality: int, card: dict,
               overwrite: bool = False, count_on: np.ndarray | None = None, step: float = 1.0) -> Path:
    """Save a trained rate-distortion CAE as quality ``quality``: the trainer model
    (``models/rd_q<N>.keras``), its card (``.json``) and its code tables (``.npz``,
    counted on ``count_on`` if given, with quantization ``step``: see
    :func:`digit_code_tables`)."""
    import io

    path = rd_model_path(quality)
    tables = digit_code_tables(encoder, prior, count_on, step)
    save_model(trainer, path, {**card, "quality": int(quality)}, overwrite=overwrite)
    buf = io.BytesIO()
    np.savez_compressed(buf, **tables)
    atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
    return path


def load_codec(quality: int, path: str | os.PathLike | None = None) -> LearnedCodec:
    """The learned codec for ``quality`` (1..7), loaded once and cached.

    ``path`` overrides the shipped ``models/rd_q<N>.keras`` (its ``.npz`` tables must
    sit beside it). Raises :class:`CAEError` for an unknown quality or missing files.
    """
    quality = check_int("quality", quality, 1, 15)
    path = Path(path) if path is not None else rd_model_path(quality)
    # The file's modification time is part of the key, so a retrained model is reloaded.
    key = (quality, str(path.resolve()), path.stat().st_mtime_ns) if path.exists() else (quality, str(path))
    if key in modelio.CODEC_CACHE:
        return modelio.CODEC_CACHE[key]
    if path == rd_model_path(quality) and not path.is_file():
        known = sorted(int(m.group(1)) for p in paths.MODELS_DIR.glob("rd_q*.keras")
                       if (m := re.fullmatch(r"rd_q([0-9]+)", p.stem)))
        raise CAEError(f"There is no shipped model for quality {quality}; available: "
                       f"{', '.join(map(str, known)) or 'none'}.")
    trainer, encoder, decoder, card = load_model(path)
    if card.get("quality") not in (None, quality):
        raise CAEError(f"{path} is the model for quality {card['quality']}, not {quality}; "
                       f"use --quality {card['quality']} with it.")
    tables_path = path.with_suffix(".npz")
    if not tables_path.is_file():
        raise CAEError(f"The code tables {tables_path} are missing; they ship beside the model.")
    with np.load(tables_path) as npz:
        tables = {k: npz[k] for k in npz.files}
    codec = LearnedCodec(encoder, decoder, tables, quality, model_fingerprint(trainer), card)
    modelio.CODEC_CACHE[key] = codec
    return codec


def available_qualities() -> list[int]:
    """The learned-codec qualities whose model, card and tables are all in ``models/``."""
    found = []
    for q in sorted(QUALITY_LAMBDAS):
        p = rd_model_path(q)
        if p.is_file() and p.with_suffix(".npz").is_file():
            found.append(q)
    return found


def symbol_bits(codec, digits: np.ndarray) -> np.ndarray:
    """Bits each latent value of each digit costs under ``codec``'s tables: ``-log2 p(symbol)``.

    ``digits``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8). Returns float64
    ``(N, 7, 7, C)``; summed over everything but N it equals :meth:`LearnedCodec.estimate_bits`.
    """
    x = np.asarray(digits)
    x = to_float_images(x) if x.dtype == np.uint8 else x.astype(np.float32)
    return codec.symbol_bits(codec.quantize(encode_digits(codec.encoder, x)))

"""The photo codec: grayscale images of any size <-> ``.cae`` v2 files.

The digit codec only takes 28x28 images. This one has no fixed size:

* encoder ``x (H x W x 1) -> y (H/8 x W/8 x 64)``: an 8x8 stride-8 convolution started
  from JPEG's DCT basis and then trained (``models.build_photo_cae``);
* decoder ``y_hat -> x_hat``: the transposed convolution plus a small residual CNN that
  removes block artefacts.

Any ``H x W`` is first padded (by repeating its edge pixels) to a multiple of 8, the
stride, and the decoded image is cropped back to the true size, which the header stores.
Big images are processed in tiles with a margin ("halo") wider than the network's
reach, so every value is exactly what the whole image would give: no seams, and memory
stays near the size of the image itself. Channel 0 (each block's mean) is coded as the
difference from its neighbour, as JPEG codes DC.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from . import entropy, modelio, paths
from .backend import keras
from .digit_codec import LearnedCodec
from .errors import CAEError, check_int
from .fileio import atomic_write_bytes
from .formats import CAE_V2_FIRST_BYTE, CAE_V3_FIRST_BYTE, PHOTO_FIRST_BYTES, pack_v1, unpack_v1
from .images import check_photo_size, photo_to_gray_u8
from .keras_layers import build_code_tables
from .modelio import load_model, model_fingerprint, save_model
from .models import PHOTO_STRIDE
from .photo_context import ContextModel

PHOTO_HALO = 16            # tile margin in pixels (2 latent rows), wider than the decoder's reach
PHOTO_TILE = 1024          # tile size in pixels (a multiple of PHOTO_STRIDE)
#: Photo codec qualities: lambda in loss = bits per pixel + lambda * MSE (0..255 scale),
#: and the DCT gain each starts from (the initial quantization step is 1/gain). Both grow
#: by a factor sqrt(2) (gain) and 2 (lambda) per level: at high rate the best lambda
#: scales as 1/MSE, i.e. as gain squared.
PHOTO_QUALITY_LAMBDAS = {1: 0.0003, 2: 0.0006, 3: 0.0012, 4: 0.0024, 5: 0.0048, 6: 0.0096, 7: 0.0192}
#: Photographs shipped inside scikit-image (no download needed) used to TRAIN the photo
#: codec. The evaluation photos (Kodak) are never used for training.
PHOTO_TRAINING_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins",
                         "moon", "clock", "brick", "grass", "gravel", "hubble_deep_field",
                         "immunohistochemistry", "retina", "page", "text")
PHOTO_QUALITY_GAINS = {1: 1.2, 2: 1.7, 3: 2.4, 4: 3.4, 5: 4.8, 6: 6.8, 7: 9.6}


def photo_model_path(quality: int) -> Path:
    """Where the shipped photo model for ``quality`` lives: ``models/photo_q<N>.keras``."""
    return paths.MODELS_DIR / f"photo_q{int(quality)}.keras"


def photo_qualities() -> list[int]:
    """The photo-codec qualities whose model and code tables ship in ``models/``."""
    found = (re.fullmatch(r"photo_q([0-9]+)", p.stem) for p in paths.MODELS_DIR.glob("photo_q*.keras"))
    return sorted(int(m.group(1)) for m in found
                  if m and photo_model_path(int(m.group(1))).with_suffix(".npz").is_file())


def pad_to_multiple(image: np.ndarray, multiple: int = PHOTO_STRIDE) -> np.ndarray:
    """Pad a 2-D image on the bottom and right, repeating its edge pixels, so that both
    sides are multiples of ``multiple``. (Edge repetition costs almost no bits; zeros
    would add a sharp edge the codec must spend bits on.)"""
    h, w = image.shape
    return np.pad(image, ((0, -h % multiple), (0, -w % multiple)), mode="edge")


def _tile_ranges(n: int, core: int, halo: int):
    """Split ``range(n)`` (latent rows or columns) into ``core``-long pieces; for each
    return ``(start, stop, in_start, in_stop)``: the piece, and the piece widened by
    ``halo`` on each side (clipped to the image) that the network actually sees."""
    for start in range(0, n, core):
        stop = min(start + core, n)
        yield start, stop, max(start - halo, 0), min(stop + halo, n)


def encode_tiled(encoder, image: np.ndarray, tile: int = PHOTO_TILE,
                 halo: int = PHOTO_HALO) -> np.ndarray:
    """A padded image ``(H, W)`` float32 in [0, 1] (H, W multiples of
    :data:`PHOTO_STRIDE`) -> latent ``(H/8, W/8, C)`` float32, computed tile by tile.

    Each tile is ``tile`` pixels square plus ``halo`` pixels of real neighbours on each
    side; only the tile's own latents are kept. With ``halo=0`` the tiles are coded
    independently and seams appear (notebook 06 shows them)."""
    s = PHOTO_STRIDE
    h, w = image.shape
    if h % s or w % s:
        raise CAEError(f"encode_tiled needs sides that are multiples of {s}, got {w}x{h}; "
                       "use pad_to_multiple first.")
    lh, lw, ct, hl = h // s, w // s, max(tile // s, 1), -(-halo // s)
    out = None
    for r0, r1, ir0, ir1 in _tile_ranges(lh, ct, hl):
        for c0, c1, ic0, ic1 in _tile_ranges(lw, ct, hl):
            patch = image[ir0 * s:ir1 * s, ic0 * s:ic1 * s][None, :, :, None]
            y = keras.ops.convert_to_numpy(encoder(patch.astype(np.float32), training=False))[0]
            if out is None:
                out = np.empty((lh, lw, y.shape[-1]), np.float32)
            out[r0:r1, c0:c1] = y[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
    return out


def decode_tiled(decoder, latent: np.ndarray, tile: int = PHOTO_TILE,
                 halo: int = PHOTO_HALO) -> np.ndarray:
    """Latent ``(h, w, C)`` -> image ``(16h, 16w)`` uint8, tile by tile (see
    :func:`encode_tiled`). Each tile is decoded with ``halo`` pixels' worth of
    neighbouring latents and cropped, so tiles join without seams."""
    s = PHOTO_STRIDE
    lh, lw, _ = latent.shape
    ct, hl = max(tile // s, 1), -(-halo // s)
    out = np.empty((lh * s, lw * s), np.uint8)
    for r0, r1, ir0, ir1 in _tile_ranges(lh, ct, hl):
        for c0, c1, ic0, ic1 in _tile_ranges(lw, ct, hl):
            y = latent[ir0:ir1, ic0:ic1][None].astype(np.float32)
            x = keras.ops.convert_to_numpy(decoder(y, training=False))[0, :, :, 0]
            x = x[(r0 - ir0) * s:(r1 - ir0) * s, (c0 - ic0) * s:(c1 - ic0) * s]
            out[r0 * s:r1 * s, c0 * s:c1 * s] = np.round(np.clip(x, 0.0, 1.0) * 255.0)
    return out


class PhotoCodec(LearnedCodec):
    """The photo codec of one quality: grayscale images of any size <-> ``.cae`` v2 bytes.

    Load a shipped quality with :func:`load_photo_codec`. ``compress`` takes one
    ``(H, W)`` uint8 image; ``decompress`` gives it back at exactly ``(H, W)``.
    """

    def __init__(self, encoder, decoder, tables: dict, quality: int, fingerprint: bytes,
                 card: dict | None = None, tile: int = PHOTO_TILE):
        super().__init__(encoder, decoder, tables, quality, fingerprint, card)
        if tile % PHOTO_STRIDE or tile < PHOTO_STRIDE:
            raise CAEError(f"tile must be a positive multiple of {PHOTO_STRIDE}, got {tile}.")
        self.tile = int(tile)
        # DC prediction (as JPEG does): channel 0 is each block's average brightness, which
        # changes little from one block to the next, so its symbols are coded as the
        # difference from the left neighbour (the above one in the first column), with a
        # table of such differences counted on the training photos. Without "dc_pmf" in
        # the tables, channel 0 is coded like the others.
        dc = tables.get("dc_pmf") if hasattr(tables, "get") else None
        self.dc_pmf = None if dc is None else np.asarray(dc, np.float64)
        if self.dc_pmf is not None:
            if len(self.dc_pmf) != 2 * self.sizes[0] - 1:
                raise CAEError("The code tables are inconsistent (DC table size); restore the .npz file.")
            self._dc_model = entropy.categorical(self.dc_pmf)
            self._dc_log2 = np.log2(self.dc_pmf)
        # The context model (caecodec.photo_context): with it, files are written as .cae
        # version 3; version-2 files (factorized prior + DC prediction) stay readable.
        has_context = hasattr(tables, "get") and tables.get("ctx_pmfs") is not None
        self.context = ContextModel(tables, self.sizes, self.offsets) if has_context else None

    # -- DC prediction -----------------------------------------------------------------
    def dc_residuals(self, s0: np.ndarray) -> np.ndarray:
        """Channel-0 symbols ``(h, w)`` -> prediction residuals ``(h, w)``, shifted to
        ``0 .. 2K-2`` (K = the channel's alphabet size): the residual symbols coded."""
        s0 = np.asarray(s0, np.int64)
        r = np.empty_like(s0)
        r[:, 1:] = s0[:, 1:] - s0[:, :-1]
        r[1:, 0] = s0[1:, 0] - s0[:-1, 0]
        r[0, 0] = s0[0, 0] - self.sizes[0] // 2
        return (r + self.sizes[0] - 1).astype(np.int32)

    def dc_from_residuals(self, res: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`dc_residuals` (clipped into the alphabet, so a corrupt
        payload cannot produce an out-of-range symbol)."""
        r = np.asarray(res, np.int64) - (self.sizes[0] - 1)
        first = self.sizes[0] // 2 + np.cumsum(r[:, 0])
        s0 = first[:, None] + np.concatenate([np.zeros((len(r), 1), np.int64),
                                              np.cumsum(r[:, 1:], axis=1)], axis=1)
        return np.clip(s0, 0, self.sizes[0] - 1).astype(np.int32)

    def _code(self, symbols: np.ndarray) -> bytes:
        if self.dc_pmf is None:
            return super()._code(symbols)
        streams = [(self.dc_residuals(symbols[..., 0]).ravel(), self._dc_model)]
        streams += [(symbols[..., c].ravel(), self._models[c]) for c in range(1, len(self._models))]
        return entropy.range_code(streams)

    def latent_of(self, image_u8: np.ndarray, halo: int = PHOTO_HALO) -> np.ndarray:
        """``(H, W)`` uint8 -> float latent ``(ceil(H/8), ceil(W/8), C)``."""
        image = pad_to_multiple(image_u8).astype(np.float32) / 255.0
        latent = encode_tiled(self.encoder, image, self.tile, halo)
        if not np.all(np.isfinite(latent)):
            raise CAEError("The latent contains NaN or infinity; the model is broken.")
        return latent

    def image_of(self, latent: np.ndarray, height: int, width: int, halo: int = PHOTO_HALO) -> np.ndarray:
        """Float latent -> the ``(height, width)`` uint8 image (decoded, then cropped)."""
        return decode_tiled(self.decoder, latent, self.tile, halo)[:height, :width]

    def symbols_of(self, image_u8: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 -> integer symbols ``(ceil(H/8), ceil(W/8), C)``."""
        return self.quantize(self.latent_of(image_u8))

    def estimate_image_bits(self, symbols: np.ndarray) -> float:
        """The rate estimate for one image's symbols, in bits: ``-sum log2 p`` under the
        tables the coder uses (the context model if there is one, else the factorized
        tables with the DC residual table for channel 0 if there is one)."""
        if self.context is not None:
            return self.context.estimate_bits(symbols)
        if self.dc_pmf is None:
            return float(self.estimate_bits(symbols[None])[0])
        bits = -self._dc_log2[self.dc_residuals(symbols[..., 0])].sum()
        for c in range(1, len(self._log2)):
            bits -= self._log2[c][symbols[..., c]].sum()
        return float(bits)

    def _uncode_shape(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        decoder = entropy.range_decoder(payload)
        per_channel = shape[0] * shape[1]
        if self.dc_pmf is None:
            chans = [decoder.decode(model, per_channel) for model in self._models]
        else:
            res = np.asarray(decoder.decode(self._dc_model, per_channel)).reshape(shape[:2])
            chans = [self.dc_from_residuals(res).ravel()]
            chans += [decoder.decode(self._models[c], per_channel) for c in range(1, len(self._models))]
        return np.stack(chans, axis=-1).reshape(shape).astype(np.int32)

    def compress(self, image) -> bytes:
        """One grayscale image (``(H, W)`` uint8, or anything :func:`photo_to_gray_u8`
        takes) -> a complete ``.cae`` v2 file (bytes)."""
        image = photo_to_gray_u8(image)
        check_photo_size(*image.shape)
        symbols = self.symbols_of(image)
        if self.context is not None:
            payload, first = self.context.encode(symbols), CAE_V3_FIRST_BYTE
        else:
            payload, first = self._code(symbols), CAE_V2_FIRST_BYTE
        return pack_v1(self.quality, self.fingerprint, image.shape[0], image.shape[1],
                       payload, first_byte=first)

    def decompress(self, data: bytes, source: str = "the .cae data") -> np.ndarray:
        """A ``.cae`` v3 (or v2) file -> the image, ``(H, W)`` uint8, H and W from its header.

        The header is fully checked (size limits, CRC, quality, model) before anything
        is allocated; a damaged payload raises :class:`CAEError`."""
        data = bytes(data)
        first = data[0] if data and data[0] in PHOTO_FIRST_BYTES else CAE_V3_FIRST_BYTE
        _, _, h, w, payload = unpack_v1(data, self.fingerprint, source=source,
                                        expect_quality=self.quality, first_byte=first)
        if first == CAE_V3_FIRST_BYTE and self.context is None:
            raise CAEError(f"{source} needs the photo codec's context model (.cae version 3), "
                           "but this model's code tables have none; restore its .npz file.")
        shape = (-(-h // PHOTO_STRIDE), -(-w // PHOTO_STRIDE), len(self._models))
        try:
            if first == CAE_V3_FIRST_BYTE:
                symbols = self.context.decode(payload, shape)
            else:
                symbols = self._uncode_shape(payload, shape)
        except Exception as exc:  # constriction found the payload inconsistent
            raise CAEError(f"{source} is corrupt: its coded data cannot be decoded ({exc}).") from None
        return self.image_of(self.dequantize(symbols), h, w)


def _read_tables(path: Path) -> dict:
    """A model's code tables (``.npz``) as a dict of arrays; :class:`CAEError` if damaged."""
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # a truncated or foreign file
        raise CAEError(f"The code tables {path} are damaged ({type(exc).__name__}); restore the file.") from None


def save_photo_codec(trainer, prior, quality: int, card: dict, overwrite: bool = False) -> Path:
    """Save a trained photo codec as ``models/photo_q<N>.keras`` + ``.json`` + ``.npz``."""
    import io

    path = photo_model_path(quality)
    tables = build_code_tables(prior)
    save_model(trainer, path, {**card, "quality": int(quality), "kind": "photo"}, overwrite=overwrite)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
    return path


def load_photo_codec(quality: int, path: str | os.PathLike | None = None,
                     tile: int = PHOTO_TILE) -> PhotoCodec:
    """The photo codec for ``quality`` (see :func:`photo_qualities`), loaded once and cached.

    ``path`` overrides the shipped ``models/photo_q<N>.keras`` (its ``.npz`` tables must
    sit beside it)."""
    quality = check_int("quality", quality, 1, 15)
    path = Path(path) if path is not None else photo_model_path(quality)
    if not path.is_file():
        known = photo_qualities()
        raise CAEError(f"There is no photo model for quality {quality} ({path} is missing); "
                       f"available photo qualities: {', '.join(map(str, known)) or 'none'}.")
    tables_path = path.with_suffix(".npz")
    key = ("photo", quality, str(path.resolve()), path.stat().st_mtime_ns, int(tile),
           tables_path.stat().st_mtime_ns if tables_path.is_file() else None)
    if key in modelio.CODEC_CACHE:
        return modelio.CODEC_CACHE[key]
    trainer, encoder, decoder, card = load_model(path)
    if card.get("kind", "photo") != "photo" or encoder.input_shape[1] is not None:
        raise CAEError(f"{path} is not a photo-codec model (it takes fixed-size digits); "
                       "use it without --mode photo.")
    if card.get("quality") not in (None, quality):
        raise CAEError(f"{path} is the photo model for quality {card['quality']}, not {quality}.")
    if not tables_path.is_file():
        raise CAEError(f"The code tables {tables_path} are missing; they ship beside the model.")
    tables = _read_tables(tables_path)
    codec = PhotoCodec(encoder, decoder, tables, quality, model_fingerprint(trainer), card, tile=tile)
    modelio.CODEC_CACHE[key] = codec
    return codec

"""The ``.cae`` file formats: headers, checks and fields. No Keras, no model.

Version 0 (notebook 04): the float latent, honestly stored::

    offset size  field
    0      3     magic b"CAE"
    3      1     format version (0)
    4      4     model fingerprint: the first 4 bytes of a SHA-256 over the whole
                 autoencoder's weights (the same value as in the model's JSON card)
    8      4*D   the latent: D float32 values, little-endian
    8+4D   4     CRC-32 of everything before it (catches corruption and truncation)

128 latent numbers make a 524-byte file, against 784 raw bytes and about 280 bytes for
the same digit as a PNG: this is not yet compression.

Version 1 (the learned digit codec, notebook 05) and versions 2 and 3 (the photo codec,
notebook 06; version 3 codes the payload with the photo codec's context model) share one
compact layout; only the first byte differs::

    byte 0      0xC1 (digit), 0xC2 or 0xC3 (photo): magic nibble 0xC and the version
    byte 1      quality level (1..15)
    byte 2      model check: the first byte of the model's weight fingerprint
    bytes 3..   image height, then width, each a LEB128 varint (1 byte each below 128)
    next 2      CRC-16 (CCITT) of the header before it and of the payload
    the rest    the range-coded payload

For a 28x28 digit the header is 7 bytes. Version 4 (the lossless digit codec, notebook
07) has its own section at the end. :func:`sniff` tells the versions apart by the first
byte, so a decoder picks the codec without being told.
Layer 1: imports only :mod:`caecodec.errors` (and numpy).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import CAEError, check_int

CAE_MAGIC = b"CAE"
CAE_VERSION_FLOAT = 0
_CAE_HEADER = struct.Struct("<3sB4s")
CAE_V0_MIN_SIZE = _CAE_HEADER.size + 4  # header and CRC-32, no latent


def pack_float_latent(latent: np.ndarray, fingerprint: bytes) -> bytes:
    """The bytes of a version-0 ``.cae`` file for one latent vector (any shape, float32)."""
    latent = np.asarray(latent, dtype="<f4").ravel()
    if not np.all(np.isfinite(latent)):
        raise CAEError("The latent contains NaN or infinity; the model is broken.")
    body = _CAE_HEADER.pack(CAE_MAGIC, CAE_VERSION_FLOAT, bytes(fingerprint)) + latent.tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_float_latent(data: bytes, fingerprint: bytes, latent_size: int,
                        source: str = "the .cae data") -> np.ndarray:
    """Check and read a version-0 ``.cae`` file; returns the ``float32`` latent, flat.

    Every field is checked before use. Raises :class:`CAEError` for: too short, wrong
    magic (not a .cae file), unsupported version, model mismatch, wrong length
    (truncated or padded), failed CRC (corrupt), or non-finite values.
    """
    data = bytes(data)
    if len(data) == 0:
        raise CAEError(f"{source} is empty (0 bytes).")
    if data[:3] != CAE_MAGIC[:len(data[:3])]:
        raise CAEError(f"{source} is not a .cae file (it does not start with the bytes 'CAE').")
    if len(data) < _CAE_HEADER.size:
        raise CAEError(f"{source} is truncated: {len(data)} bytes is shorter than the header.")
    _, version, file_fp = _CAE_HEADER.unpack_from(data)
    if version != CAE_VERSION_FLOAT:
        raise CAEError(f"{source} uses .cae format version {version}; this code reads version "
                       f"{CAE_VERSION_FLOAT}. Update the course code or re-encode the image.")
    expected = _CAE_HEADER.size + 4 * latent_size + 4
    if len(data) != expected and file_fp != bytes(fingerprint):
        raise CAEError(f"{source} was written by a different model (fingerprint {file_fp.hex()}, "
                       f"a latent of {(len(data) - _CAE_HEADER.size - 4) / 4:g} numbers), but the "
                       f"model in use has fingerprint {bytes(fingerprint).hex()} and {latent_size}. "
                       "Decode with --model pointing at the model that encoded it.")
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long (extra bytes)"
        raise CAEError(f"{source} is {what}: {len(data)} bytes, expected {expected}.")
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise CAEError(f"{source} is corrupt: its checksum does not match its contents.")
    if file_fp != bytes(fingerprint):
        raise CAEError(f"{source} was written by a different model (fingerprint {file_fp.hex()}), "
                       f"but the model in use has fingerprint {bytes(fingerprint).hex()}. Decode "
                       "with --model pointing at the model that encoded it.")
    latent = np.frombuffer(data, dtype="<f4", count=latent_size, offset=_CAE_HEADER.size)
    if not np.all(np.isfinite(latent)):
        raise CAEError(f"{source} holds NaN or infinite values: it is corrupt.")
    return latent.astype(np.float32)


def cae_fields(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Split the bytes of a version-0 ``.cae`` file into its fields (no checks made).

    Returns ``(offset, size, name, field bytes)`` for magic, version, fingerprint, the
    latent and the CRC-32, following the layout comment of section 8.
    """
    data = bytes(data)
    n = _CAE_HEADER.size
    return [(0, 3, "magic", data[0:3]), (3, 1, "format version", data[3:4]),
            (4, 4, "model fingerprint", data[4:n]),
            (n, len(data) - n - 4, "latent, float32 little-endian", data[n:-4]),
            (len(data) - 4, 4, "CRC-32 of all bytes before it", data[-4:])]


CAE_V1_FIRST_BYTE = 0xC1
CAE_V2_FIRST_BYTE = 0xC2
CAE_V3_FIRST_BYTE = 0xC3   # the photo codec with its context model (caecodec.photo_context)
PHOTO_FIRST_BYTES = (CAE_V2_FIRST_BYTE, CAE_V3_FIRST_BYTE)
CAE_MAX_DIMENSION = 1 << 20  # refuse absurd claimed sizes before allocating anything
CAE_MAX_PIXELS = 1 << 26   # 67 million pixels (8192 x 8192): larger claims are refused
CAE_MAX_PIXELS_TEXT = "8192 x 8192"


#: The writer of each compact first byte, for the error that names it.
_WRITERS = {CAE_V1_FIRST_BYTE: "the learned digit codec (.cae version 1, 28x28 digits)",
            CAE_V2_FIRST_BYTE: "the photo codec (.cae version 2)",
            CAE_V3_FIRST_BYTE: "the photo codec with its context model (.cae version 3)",
            0xC4: "the lossless digit codec (.cae version 4)"}  # CAE_V4_FIRST_BYTE, defined below


def _refuse_other_format(data: bytes, source: str):
    """Raise the :class:`CAEError` for a file whose first byte is not the one expected:
    it names the codec that wrote it (the command line picks that codec by itself)."""
    if data[0] in _WRITERS:
        raise CAEError(f"{source} was written by {_WRITERS[data[0]]}; decode it with that codec "
                       "(the command line picks it from the first byte).")
    if data[:3] == CAE_MAGIC[:len(data[:3])]:
        raise CAEError(f"{source} is a version-0 .cae file (float latent); decode it without "
                       "--quality.")
    if data[0] >> 4 == 0xC:
        raise CAEError(f"{source} uses .cae format version {data[0] & 0xF}; this code reads "
                       "versions 0 to 4.")
    raise CAEError(f"{source} is not a .cae file (its first byte is 0x{data[0]:02x}).")


def header_crc(head: bytes, payload: bytes) -> int:
    """CRC-16 (CCITT) of a compact header and its payload, as versions 1 to 4 store it."""
    import binascii

    return binascii.crc_hqx(bytes(payload), binascii.crc_hqx(bytes(head), 0xFFFF))


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a LEB128 varint: 7 bits per byte, low bits first, high bit = more."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int, source: str) -> tuple[int, int]:
    """The varint at ``data[pos:]`` (at most 4 bytes) and the position after it; a
    :class:`CAEError` naming ``source`` if it is incomplete."""
    value = shift = 0
    for i in range(pos, min(len(data), pos + 4)):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if not data[i] & 0x80:
            return value, i + 1
    raise CAEError(f"{source} is truncated or corrupt: its image size field is incomplete.")


def pack_v1(quality: int, fingerprint: bytes, height: int, width: int, payload: bytes,
            first_byte: int = CAE_V1_FIRST_BYTE) -> bytes:
    """A complete ``.cae`` v1 file: the header (see the layout above) then ``payload``.

    ``first_byte=CAE_V2_FIRST_BYTE`` (or ``CAE_V3_FIRST_BYTE``) writes the same layout as
    version 2 (or 3), the photo codec's."""
    quality = check_int("quality", quality, 1, 15)
    if len(bytes(fingerprint)) < 1:
        raise CAEError("A model fingerprint of at least one byte is needed to write a .cae file.")
    height = check_int("height", height, 1, CAE_MAX_DIMENSION)
    width = check_int("width", width, 1, CAE_MAX_DIMENSION)
    if first_byte not in (CAE_V1_FIRST_BYTE, *PHOTO_FIRST_BYTES):
        raise CAEError(f"Unknown .cae first byte 0x{first_byte:02x}.")
    head = bytes([first_byte, quality, fingerprint[0]]) + varint(height) + varint(width)
    return head + struct.pack(">H", header_crc(head, payload)) + bytes(payload)


def unpack_v1(data: bytes, fingerprint: bytes | None = None, source: str = "the .cae data",
              expect_quality: int | None = None,
              first_byte: int = CAE_V1_FIRST_BYTE) -> tuple[int, int, int, int, bytes]:
    """Check a ``.cae`` v1 file and split it: ``(quality, model_byte, height, width, payload)``.

    ``first_byte=CAE_V2_FIRST_BYTE`` (or ``CAE_V3_FIRST_BYTE``) reads a photo-codec file
    instead, whose claimed size must also stay within :data:`CAE_MAX_PIXELS`.

    Checks, in order: not empty, the magic/version byte, a complete and sane size, the
    CRC (so a damaged byte is reported as corruption), then the quality and the model
    byte (against ``fingerprint`` if given). Raises :class:`CAEError` saying which check
    failed and what to do.
    """
    data = bytes(data)
    if not data:
        raise CAEError(f"{source} is empty (0 bytes).")
    if data[0] != first_byte:
        _refuse_other_format(data, source)
    if len(data) < 7:
        raise CAEError(f"{source} is truncated: {len(data)} bytes is shorter than the header.")
    quality, model_byte = data[1], data[2]
    height, pos = read_varint(data, 3, source)
    width, pos = read_varint(data, pos, source)
    if not (1 <= height <= CAE_MAX_DIMENSION and 1 <= width <= CAE_MAX_DIMENSION):
        raise CAEError(f"{source} is corrupt: it claims an image of {width}x{height} pixels.")
    if first_byte in PHOTO_FIRST_BYTES and height * width > CAE_MAX_PIXELS:
        raise CAEError(f"{source} claims an image of {width}x{height} pixels, more than the "
                       f"photo codec's limit of {CAE_MAX_PIXELS:,}; it is corrupt or not ours.")
    if len(data) < pos + 2:
        raise CAEError(f"{source} is truncated: the header ends early.")
    (crc,) = struct.unpack(">H", data[pos:pos + 2])
    payload = data[pos + 2:]
    if header_crc(data[:pos], payload) != crc:
        raise CAEError(f"{source} is corrupt or truncated: its checksum does not match.")
    if not 1 <= quality <= 15:
        raise CAEError(f"{source} is corrupt: quality {quality} is not a valid level.")
    if expect_quality is not None and quality != expect_quality:
        raise CAEError(f"{source} was written at quality {quality}, but the codec in use is "
                       f"quality {expect_quality}; decode it with --quality {quality}.")
    if fingerprint is not None and model_byte != fingerprint[0]:
        raise CAEError(f"{source} was written by a different model (model byte 0x{model_byte:02x}, "
                       f"this model has 0x{fingerprint[0]:02x}); decode it with the model that "
                       "encoded it.")
    return quality, model_byte, height, width, payload


def cae_v1_fields(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Split a ``.cae`` v1 file into its fields (checked with :func:`unpack_v1` first).

    Returns ``(offset, size, name, field bytes)`` for the magic/version byte, quality,
    model byte, height and width varints, CRC-16 and the payload (section 11's layout).
    """
    data = bytes(data)
    unpack_v1(data)
    _, pos_h = read_varint(data, 3, "the .cae data")
    _, pos_w = read_varint(data, pos_h, "the .cae data")
    return [(0, 1, "magic 0xC + version 1", data[0:1]), (1, 1, "quality", data[1:2]),
            (2, 1, "model byte (fingerprint[0])", data[2:3]),
            (3, pos_h - 3, "height (varint)", data[3:pos_h]),
            (pos_h, pos_w - pos_h, "width (varint)", data[pos_h:pos_w]),
            (pos_w, 2, "CRC-16 of header and payload", data[pos_w:pos_w + 2]),
            (pos_w + 2, len(data) - pos_w - 2, "range-coded payload", data[pos_w + 2:])]


def sniff(data: bytes) -> str:
    """Which ``.cae`` format ``data`` starts with: ``"v0"``, ``"v1"``, ``"v2"``, ``"v3"``
    (photo codecs), ``"v4"`` (lossless) or ``"unknown"``. Reads only the first bytes;
    checks nothing else."""
    head = bytes(data[:3])
    if head[:1] == bytes([CAE_V1_FIRST_BYTE]):
        return "v1"
    if head[:1] == bytes([CAE_V2_FIRST_BYTE]):
        return "v2"
    if head[:1] == bytes([CAE_V3_FIRST_BYTE]):
        return "v3"
    if head[:1] == bytes([0xC4]):  # CAE_V4_FIRST_BYTE (defined below, with version 4)
        return "v4"
    if head == CAE_MAGIC:
        return "v0"
    return "unknown"


# ------------------------------------------------------------------------------------------
# Version 4: the lossless digit codec (notebook 07)
# ------------------------------------------------------------------------------------------
# byte 0      0xC4: magic nibble 0xC and the version
# byte 1      model check: the first byte of the lossless model's fingerprint
# bytes 2..   image height, then width, each a LEB128 varint (28 and 28: one byte each)
# next 2      CRC-16 (CCITT) of the header before it and of the payload: checked before
#             decoding, and by `cae info`
# next 2      CRC-16 (CCITT) of the 784 decoded pixels: checked after decoding, so a decoder
#             whose probabilities differ from the encoder's refuses instead of returning a
#             wrong digit
# the rest    the range-coded payload
# For a 28x28 digit the header is 8 bytes.

CAE_V4_FIRST_BYTE = 0xC4
CAE_V4_SIDE = 28


def pixel_crc(pixels: np.ndarray) -> int:
    """CRC-16 (CCITT) of a digit's pixels, ``uint8`` row by row: the check decoding makes."""
    import binascii

    return binascii.crc_hqx(np.ascontiguousarray(pixels, np.uint8).tobytes(), 0xFFFF)


def pack_v4(fingerprint: bytes, height: int, width: int, pixels_crc: int, payload: bytes) -> bytes:
    """A complete ``.cae`` v4 (lossless) file: the header (see above), then ``payload``."""
    if len(bytes(fingerprint)) < 1:
        raise CAEError("A model fingerprint of at least one byte is needed to write a .cae file.")
    height = check_int("height", height, 1, CAE_MAX_DIMENSION)
    width = check_int("width", width, 1, CAE_MAX_DIMENSION)
    head = bytes([CAE_V4_FIRST_BYTE, fingerprint[0]]) + varint(height) + varint(width)
    return (head + struct.pack(">HH", header_crc(head, payload), check_int("pixel CRC", pixels_crc, 0, 0xFFFF))
            + bytes(payload))


def unpack_v4(data: bytes, fingerprint: bytes | None = None,
              source: str = "the .cae data") -> tuple[int, int, int, int, bytes]:
    """Check a ``.cae`` v4 file and split it: ``(model_byte, height, width, pixel_crc, payload)``.

    Checks, in order: not empty, the magic/version byte, a complete size of 28x28, the
    CRC over header and payload, then the model byte (against ``fingerprint`` if given).
    Raises :class:`CAEError` saying which check failed and what to do.
    """
    data = bytes(data)
    if not data:
        raise CAEError(f"{source} is empty (0 bytes).")
    if data[0] != CAE_V4_FIRST_BYTE:
        _refuse_other_format(data, source)
    if len(data) < 8:
        raise CAEError(f"{source} is truncated: {len(data)} bytes is shorter than the 8-byte header.")
    model_byte = data[1]
    height, pos = read_varint(data, 2, source)
    width, pos = read_varint(data, pos, source)
    if (height, width) != (CAE_V4_SIDE, CAE_V4_SIDE):
        raise CAEError(f"{source} is corrupt: it claims a {width}x{height} image, but lossless "
                       f".cae files hold 28x28 digits.")
    if len(data) < pos + 4:
        raise CAEError(f"{source} is truncated: the header ends early.")
    crc, pixels_crc = struct.unpack(">HH", data[pos:pos + 4])
    payload = data[pos + 4:]
    if header_crc(data[:pos], payload) != crc:
        raise CAEError(f"{source} is corrupt or truncated: its checksum does not match.")
    if fingerprint is not None and model_byte != fingerprint[0]:
        raise CAEError(f"{source} was written by a different lossless model (model byte "
                       f"0x{model_byte:02x}, this model has 0x{fingerprint[0]:02x}); decode it with "
                       "the model that encoded it (--model).")
    return model_byte, height, width, pixels_crc, payload


def cae_v4_fields(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Split a ``.cae`` v4 file into its fields (checked with :func:`unpack_v4` first):
    ``(offset, size, name, field bytes)``, as :func:`cae_v1_fields` does for version 1."""
    data = bytes(data)
    unpack_v4(data)
    _, pos_h = read_varint(data, 2, "the .cae data")
    _, pos_w = read_varint(data, pos_h, "the .cae data")
    return [(0, 1, "magic 0xC + version 4", data[0:1]),
            (1, 1, "model byte (fingerprint[0])", data[1:2]),
            (2, pos_h - 2, "height (varint)", data[2:pos_h]),
            (pos_h, pos_w - pos_h, "width (varint)", data[pos_h:pos_w]),
            (pos_w, 2, "CRC-16 of header and payload", data[pos_w:pos_w + 2]),
            (pos_w + 2, 2, "CRC-16 of the decoded pixels", data[pos_w + 2:pos_w + 4]),
            (pos_w + 4, len(data) - pos_w - 4, "range-coded payload", data[pos_w + 4:])]

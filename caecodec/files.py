"""The user's path: an image file -> a ``.cae`` file -> an image file.

:func:`encode_image_file` and :func:`decode_cae_file` are what the ``cae`` command runs.
Outputs are written atomically and never replace a file without ``force``. Decoding
picks the codec from the file's first byte. Nothing here imports ipywidgets or
matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .digit_codec import load_codec
from .errors import CAEError
from .fileio import check_output_path, write_output
from .formats import (
    CAE_MAGIC,
    CAE_V1_FIRST_BYTE,
    CAE_V2_FIRST_BYTE,
    CAE_V4_FIRST_BYTE,
    pack_float_latent,
    unpack_float_latent,
    unpack_v1,
)
from .images import image_to_digit, photo_to_gray_u8, to_uint8_images
from .modelio import decode_latents, encode_digits, load_model, model_fingerprint
from .photo_codec import load_photo_codec, photo_qualities


def encode_image_file(in_path, out_path, model_path=None, force: bool = False,
                      quality: int | None = None, mode: str = "digit", lossless: bool = False) -> dict:
    """Encode an image file into a ``.cae`` file.

    ``mode="photo"`` (needs ``quality``): the photo codec, for an image of any size; it
    is converted to grayscale and kept at its own size (``.cae`` format version 2). The
    returned dict then holds ``image`` ((H, W) uint8, what was encoded) and ``bpp``.
    ``mode="digit"`` (the default) is the 28x28 digit path described next.

    Without ``quality``: format version 0, the float latent of the improved CAE
    (``model_path`` or the shipped model). With ``quality`` (1..7): format version 1,
    really compressed by the learned codec of that quality (``model_path`` may point at
    another rate-distortion model). Returns a dict with the output path, its size in
    bytes and the 28x28 digit. The output is written atomically and an existing file is
    kept unless ``force``.

    ``lossless=True``: the lossless digit codec (``.cae`` version 4) for an image that is
    exactly 28x28 8-bit gray; see :func:`caecodec.lossless.encode_lossless_file`.
    """
    if lossless:
        from .lossless import encode_lossless_file
        return encode_lossless_file(in_path, out_path, model_path, force, quality, mode)
    out_path = Path(out_path)
    if mode not in ("digit", "photo"):
        raise CAEError(f"mode must be 'digit' or 'photo', got {mode!r}.")
    check_output_path(out_path, force)
    if mode == "photo":
        if quality is None:
            known = ", ".join(map(str, photo_qualities())) or "none shipped"
            raise CAEError(f"The photo codec needs a quality: add --quality N ({known}).")
        codec = load_photo_codec(quality, model_path)
        image = photo_to_gray_u8(in_path)
        data = codec.compress(image)
        write_output(out_path, data, force)
        return {"path": out_path, "bytes": len(data), "image": image,
                "bpp": 8.0 * len(data) / image.size}
    if quality is not None:
        codec = load_codec(quality, model_path)
        digit = image_to_digit(in_path)
        data = codec.compress(digit[None])[0]
        write_output(out_path, data, force)
        return {"path": out_path, "bytes": len(data), "digit": digit}
    digit = image_to_digit(in_path)
    autoencoder, encoder, _, _ = load_model(model_path)
    latent = encode_digits(encoder, digit)[0]
    data = pack_float_latent(latent, model_fingerprint(autoencoder))
    write_output(out_path, data, force)
    return {"path": out_path, "bytes": len(data), "digit": digit, "latent": latent}


def decode_cae_file(in_path, out_path, model_path=None, force: bool = False,
                    quality: int | None = None) -> dict:
    """Decode a ``.cae`` file (version 0, 1, 2 or 4, told apart by its first byte) into a PNG.

    Version 2 (photo codec) files decode to their own size as a grayscale ``uint8``
    ``(H, W)`` image; version 4 (lossless) to the exact ``uint8`` ``(28, 28)`` digit; versions
    0 and 1 to a 28x28 digit.

    For version 1 the quality is read from the file; a ``quality`` given here must match
    it. Returns a dict with the output path and the decoded image ``(28,28,1)`` in [0, 1].
    """
    import io

    from PIL import Image

    in_path, out_path = Path(in_path), Path(out_path)
    check_output_path(out_path, force)
    if in_path.is_dir():
        raise CAEError(f"Input {in_path} is a folder, not a .cae file.")
    if not in_path.is_file():
        raise CAEError(f"Input file {in_path} does not exist.")
    data = in_path.read_bytes()
    if data[:1] == bytes([CAE_V4_FIRST_BYTE]):  # the lossless digit codec: exact uint8 pixels
        from .lossless import decode_lossless_file
        return decode_lossless_file(data, in_path, out_path, model_path, force, quality)
    if data[:1] == bytes([CAE_V2_FIRST_BYTE]):
        file_quality, *_ = unpack_v1(data, source=str(in_path), expect_quality=quality,
                                     first_byte=CAE_V2_FIRST_BYTE)
        image = load_photo_codec(file_quality, model_path).decompress(data, source=str(in_path))
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=True)
        write_output(out_path, buf.getvalue(), force)
        return {"path": out_path, "image": image}
    if data[:1] == bytes([CAE_V1_FIRST_BYTE]):
        file_quality, *_ = unpack_v1(data, source=str(in_path), expect_quality=quality)
        codec = load_codec(file_quality, model_path)
        image = codec.decompress([data], source=str(in_path))[0]
    else:
        if quality is not None and data[:3] == CAE_MAGIC:
            raise CAEError(f"{in_path} is a version-0 .cae file (float latent); decode it "
                           "without --quality.")
        autoencoder, _, decoder, _ = load_model(model_path)
        latent = unpack_float_latent(data, model_fingerprint(autoencoder),
                                     int(np.prod(decoder.input_shape[1:])), source=str(in_path))
        image = decode_latents(decoder, latent)[0]
    buf = io.BytesIO()
    Image.fromarray(to_uint8_images(image), mode="L").save(buf, format="PNG", optimize=True)
    write_output(out_path, buf.getvalue(), force)
    return {"path": out_path, "image": image}

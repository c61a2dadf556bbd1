"""The user's path: an image file -> a ``.cae`` file -> an image file.

:func:`encode_image_file` and :func:`decode_cae_file` are what the ``cae`` command runs;
:func:`encode_image_folder` and :func:`decode_cae_folder` do the same for every file in a
folder, with the networks run once per batch. An image that already is an MNIST-style
digit is encoded as it is; other images are preprocessed (:func:`images.digit_from_image`).
Outputs are written atomically and never replace a file without ``force``. Decoding
picks the codec from the file's first byte. Nothing here imports ipywidgets or
matplotlib.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import formats
from .digit_codec import load_codec
from .errors import CAEError
from .fileio import check_output_path, write_output
from .formats import (
    CAE_MAGIC,
    CAE_V1_FIRST_BYTE,
    CAE_V4_FIRST_BYTE,
    PHOTO_FIRST_BYTES,
    pack_float_latent,
    unpack_float_latent,
    unpack_v1,
)
from .images import IMAGE_SUFFIXES, digit_from_image, photo_to_gray_u8, to_uint8_images
from .modelio import decode_latents, encode_digits, load_model, model_fingerprint
from .photo_codec import load_photo_codec, photo_qualities


def encode_image_file(in_path, out_path, model_path=None, force: bool = False,
                      quality: int | None = None, mode: str = "digit", preprocess: bool = True,
                      lossless: bool = False) -> dict:
    """Encode an image file into a ``.cae`` file.

    ``mode="photo"`` (needs ``quality``): the photo codec, for an image of any size; it
    is converted to grayscale and kept at its own size (``.cae`` format version 2). The
    returned dict then holds ``image`` ((H, W) uint8, what was encoded) and ``bpp``.
    ``mode="digit"`` (the default) is the 28x28 digit path described next.

    An image that already is an MNIST-style digit (28x28, gray, dark background) is
    encoded exactly as it is; any other image is made MNIST-like first, and the returned
    ``note`` says what was done (``""`` for none). ``preprocess=False`` skips that (the
    image must then be 28x28).

    Without ``quality``: format version 0, the float latent of the improved CAE
    (``model_path`` or the shipped model). With ``quality``: format version 1, really
    compressed by the learned codec of that quality (``model_path`` may point at another
    rate-distortion model). Returns a dict with the output path, its size in bytes, the
    28x28 digit and the note. The output is written atomically and an existing file is
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
    digit, note = digit_from_image(in_path, preprocess)
    if quality is not None:
        data = load_codec(quality, model_path).compress(digit[None])[0]
        write_output(out_path, data, force)
        return {"path": out_path, "bytes": len(data), "digit": digit, "note": note}
    autoencoder, encoder, _, _ = load_model(model_path)
    latent = encode_digits(encoder, digit)[0]
    data = pack_float_latent(latent, model_fingerprint(autoencoder))
    write_output(out_path, data, force)
    return {"path": out_path, "bytes": len(data), "digit": digit, "latent": latent, "note": note}


def decode_cae_file(in_path, out_path, model_path=None, force: bool = False,
                    quality: int | None = None) -> dict:
    """Decode a ``.cae`` file (version 0 to 4, told apart by its first byte) into a PNG.

    Version 2 and 3 (photo codec) files decode to their own size as a grayscale ``uint8``
    ``(H, W)`` image; version 4 (lossless) to the exact ``uint8`` ``(28, 28)`` digit;
    versions 0 and 1 to a 28x28 digit.

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
    if data[:1] and data[0] in PHOTO_FIRST_BYTES:
        file_quality, *_ = unpack_v1(data, source=str(in_path), expect_quality=quality,
                                     first_byte=data[0])
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


def _folder_jobs(in_dir, out_dir, suffixes, out_suffix: str, force: bool) -> list[tuple[Path, Path]]:
    """(input, output) pairs for every file in ``in_dir`` with one of ``suffixes``, sorted;
    every output is checked before anything is written."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise CAEError(f"Input folder {in_dir} does not exist.")
    inputs = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not inputs:
        raise CAEError(f"The folder {in_dir} holds no {' or '.join(suffixes)} files.")
    if out_dir.exists() and not out_dir.is_dir():
        raise CAEError(f"Output {out_dir} is a file; with an input folder, give an output folder.")
    jobs = [(p, out_dir / (p.stem + out_suffix)) for p in inputs]
    if out_dir.is_dir():
        for _, out in jobs:
            check_output_path(out, force)
    else:  # the folder is made only when the first file is written
        check_output_path(out_dir, force)
    return jobs


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CAEError(f"Cannot make the folder {folder}: {exc.strerror or exc}.") from None


def encode_image_folder(in_dir, out_dir, quality: int | None = None, model_path=None,
                        force: bool = False, preprocess: bool = True) -> list[dict]:
    """Encode every image in ``in_dir`` into ``out_dir/<name>.cae`` (digit mode).

    Each file gets exactly what :func:`encode_image_file` would write for it; the
    networks just run once over the whole batch. Returns one dict per file (``path``,
    ``bytes``, ``note``), in name order. Nothing is written if any input is unreadable
    or any output exists (without ``force``).
    """
    jobs = _folder_jobs(in_dir, out_dir, IMAGE_SUFFIXES, ".cae", force)
    prepared = [digit_from_image(src, preprocess) for src, _ in jobs]
    digits = np.stack([d for d, _ in prepared])
    if quality is not None:
        files = load_codec(quality, model_path).compress(digits)
    else:
        autoencoder, encoder, _, _ = load_model(model_path)
        fingerprint = model_fingerprint(autoencoder)
        files = [pack_float_latent(z, fingerprint) for z in encode_digits(encoder, digits)]
    out = []
    _make_folder(Path(out_dir))
    for (_, dst), data, (_, note) in zip(jobs, files, prepared):
        write_output(dst, data, force)
        out.append({"path": dst, "bytes": len(data), "note": note})
    return out


def decode_cae_folder(in_dir, out_dir, model_path=None, force: bool = False) -> list[dict]:
    """Decode every ``.cae`` file in ``in_dir`` into ``out_dir/<name>.png``.

    Digit-codec (v1) files of the same quality are decoded in one batch, each to exactly
    the PNG :func:`decode_cae_file` would write; other versions are decoded one by one.
    Returns one dict per file (``path``, ``image``), in name order. Every file is read,
    each digit-codec file decoded, before anything is written (files of the other
    versions are checked as they are decoded, one by one, at the end).
    """
    from PIL import Image

    jobs = _folder_jobs(in_dir, out_dir, (".cae",), ".png", force)
    datas = [src.read_bytes() for src, _ in jobs]
    images = [None] * len(jobs)
    by_quality: dict[int, list[int]] = {}
    for i, ((src, _), data) in enumerate(zip(jobs, datas)):
        if formats.sniff(data) == "unknown":
            unpack_v1(data, source=str(src))  # raises the precise "not a .cae file" error
        if data[:1] == bytes([CAE_V1_FIRST_BYTE]):
            by_quality.setdefault(unpack_v1(data, source=str(src))[0], []).append(i)
    for quality, members in by_quality.items():
        codec = load_codec(quality, model_path)
        decoded = codec.decompress([datas[i] for i in members], source=[str(jobs[i][0]) for i in members])
        for i, image in zip(members, decoded):
            images[i] = image
    out = []
    _make_folder(Path(out_dir))
    for i, (src, dst) in enumerate(jobs):
        if images[i] is None:  # not a digit-codec file: the single-file path
            out.append(decode_cae_file(src, dst, model_path, force))
            continue
        buf = io.BytesIO()
        Image.fromarray(to_uint8_images(images[i]), mode="L").save(buf, format="PNG", optimize=True)
        write_output(dst, buf.getvalue(), force)
        out.append({"path": dst, "image": images[i]})
    return out

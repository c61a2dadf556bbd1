"""The command line: ``cae encode|decode`` (also ``python -m caecodec`` and
``python cae_utils.py``).

Problems are printed as one line starting with ``error:``; the exit status is 0 (done),
1 (bad input) or 2 (bad usage).
"""
from __future__ import annotations

import sys

from .errors import CAEError

# The parser and ``cae info`` need no model, so Keras is imported only by encode/decode.
DEFAULT_MODEL_NAME = "models/improved_cae.keras"


def _build_parser(prog: str = "cae"):
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Encode an image into a .cae file with the course's convolutional "
                    "autoencoder, or decode a .cae file back into a PNG. Two modes: "
                    "'digit' (the default) turns any image into a 28x28 MNIST-like digit first; "
                    "'photo' (--mode photo --quality N) keeps the image at its own size, any "
                    "size up to 8192x8192, converted to grayscale. --lossless codes a 28x28 "
                    "grayscale digit exactly (every pixel comes back).",
        epilog=f"examples:  {prog} encode digit.png digit.cae --quality 3\n"
               f"           {prog} encode photo.jpg out.cae --mode photo --quality 3\n"
               f"           {prog} encode digit.png exact.cae --lossless\n"
               f"           {prog} decode out.cae out.png\n"
               f"           {prog} info out.cae",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{encode,decode,info}")
    enc = sub.add_parser("encode", help="image file -> .cae file",
                         description="Encode IN_IMAGE (PNG, JPEG, BMP, GIF, ...) into OUT.cae. "
                                     "With a folder as IN_IMAGE, every image in it is encoded "
                                     "into the folder OUT (digit mode).")
    enc.add_argument("input", metavar="IN_IMAGE")
    enc.add_argument("output", metavar="OUT.cae")
    enc.add_argument("--mode", choices=("digit", "photo"), default="digit",
                     help="digit (default): a 28x28 MNIST-like digit; photo: any size, grayscale, "
                          "the photo codec (needs --quality)")
    enc.add_argument("--no-preprocess", action="store_true",
                     help="digit mode: encode a 28x28 image as it is (gray levels only). Without "
                          "it, an MNIST-style digit (28x28, gray, dark background) is encoded "
                          "as it is and any other image is made MNIST-like first")
    enc.add_argument("--lossless", action="store_true",
                     help="the lossless digit codec (.cae v4): IN_IMAGE must be exactly 28x28 8-bit "
                          "gray, and decoding gives back every pixel; default model "
                          "models/lossless.keras")
    dec = sub.add_parser("decode", help=".cae file -> PNG image",
                         description="Decode IN.cae into a grayscale PNG. With a folder as "
                                     "IN.cae, every .cae file in it is decoded into the folder OUT.")
    dec.add_argument("input", metavar="IN.cae")
    dec.add_argument("output", metavar="OUT.png")
    for p in (enc, dec):
        p.add_argument("--quality", metavar="N", type=int, default=None,
                       help="learned codec quality, 1 = smallest file: digits 1..7 (.cae v1), "
                            "photos 1..6 (.cae v2). Without it, digit encode writes the float "
                            "latent (v0); decode reads the quality from the file.")
        p.add_argument("--model", metavar="PATH", default=None,
                       help=f"model file (.keras); default: the shipped {DEFAULT_MODEL_NAME},"
                            " models/rd_q<N>.keras with --quality, or models/photo_q<N>.keras "
                            "in photo mode")
        p.add_argument("--force", action="store_true", help="replace OUT if it already exists")
    info = sub.add_parser("info", help="what a .cae file holds (its header), without decoding it",
                          description="Check IN.cae's header and print its format, quality, size "
                                      "and bytes. Loads no model.")
    info.add_argument("input", metavar="IN.cae")
    return parser


def describe_file(path) -> str:
    """One line about a ``.cae`` file: format version, quality, image size, bytes.

    Reads the header with :mod:`caecodec.formats` only (no Keras, no model) and checks
    the CRC; a damaged or foreign file raises :class:`CAEError`."""
    from pathlib import Path

    from . import formats

    path = Path(path)
    if not path.is_file():
        raise CAEError(f"Input file {path} does not exist." if not path.exists()
                       else f"Input {path} is not a file.")
    data = path.read_bytes()
    kind = formats.sniff(data)
    if kind == "v0":
        if len(data) < formats.CAE_V0_MIN_SIZE:
            raise CAEError(f"{path} is truncated: {len(data)} bytes is shorter than the header.")
        n = (len(data) - formats.CAE_V0_MIN_SIZE) // 4
        return (f"{path}: .cae version 0 (float latent), {n} float32 numbers, model fingerprint "
                f"{data[4:8].hex()}, {len(data)} bytes")
    if kind == "v4":
        model_byte, h, w, _, payload = formats.unpack_v4(data, source=str(path))
        return (f"{path}: .cae version 4 (lossless digit codec), {w}x{h} pixels, model byte "
                f"0x{model_byte:02x}, {len(data)} bytes ({len(payload)} of payload, "
                f"{8 * len(data) / (h * w):.3f} bits per pixel)")
    if kind in ("v1", "v2", "v3"):
        first = data[0]
        quality, model_byte, h, w, payload = formats.unpack_v1(data, source=str(path), first_byte=first)
        what = {"v1": "learned digit codec", "v2": "photo codec",
                "v3": "photo codec with context model"}[kind]
        return (f"{path}: .cae version {kind[1]} ({what}), quality {quality}, {w}x{h} pixels, "
                f"model byte 0x{model_byte:02x}, {len(data)} bytes ({len(payload)} of payload, "
                f"{8 * len(data) / (h * w):.3f} bits per pixel)")
    formats.unpack_v1(data, source=str(path))  # raises the precise "not a .cae file" error
    raise CAEError(f"{path} is not a .cae file.")


def _run_folder(args) -> str:
    """``cae encode|decode FOLDER OUT_FOLDER``: every file in the folder; one summary line."""
    from .files import decode_cae_folder, encode_image_folder

    if args.command == "decode":
        done = decode_cae_folder(args.input, args.output, args.model, args.force)
        return f"wrote {len(done)} PNG files to {args.output}"
    if args.mode != "digit":
        raise CAEError("A folder can only be encoded in digit mode; encode photos one at a time.")
    if args.lossless:
        raise CAEError("A folder is encoded by the lossy digit codec only; encode lossless files one "
                       "at a time (cae encode IN.png OUT.cae --lossless).")
    done = encode_image_folder(args.input, args.output, args.quality, args.model, args.force,
                               preprocess=not args.no_preprocess)
    foreign = [d for d in done if d["note"]]
    line = (f"wrote {len(done)} .cae files to {args.output} "
            f"({sum(d['bytes'] for d in done) / len(done):.1f} bytes on average)")
    if foreign:
        line += (f"; {len(foreign)} foreign images were made MNIST-style, e.g. "
                 f"{foreign[0]['path'].stem}: {foreign[0]['note']}")
    return line


def main(argv: list[str] | None = None, prog: str = "cae") -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 bad input, 2 bad usage).

    Problems are printed to stderr as one line starting with ``error:``.
    """
    parser = _build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(describe_file(args.input))
            return 0
        from .files import decode_cae_file, encode_image_file

        from pathlib import Path

        if Path(args.input).is_dir():
            print(_run_folder(args))
            return 0
        if args.command == "encode":
            info = encode_image_file(args.input, args.output, args.model, args.force, args.quality,
                                     args.mode, preprocess=not args.no_preprocess,
                                     lossless=args.lossless)
            if info.get("note"):
                print(info["note"])
            extra = ""
            if args.lossless:
                extra = f", lossless 28x28, {info['bpp']:.3f} bits per pixel"
            elif args.mode == "photo":
                h, w = info["image"].shape
                extra = f", {w}x{h} grayscale, {info['bpp']:.3f} bits per pixel"
            print(f"wrote {info['path']} ({info['bytes']} bytes{extra})")
        else:
            info = decode_cae_file(args.input, args.output, args.model, args.force, args.quality)
            h, w = info["image"].shape[:2]
            print(f"wrote {info['path']} ({w}x{h} PNG)")
    except CAEError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0

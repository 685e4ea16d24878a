"""Images in and out: decode uploads safely, convert modes, fit to a model's size, encode results.

Arrays are float32 [C, H, W] in [0, 1] (one image) or [N, C, H, W].
"""

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

# MPO: the multi-picture JPEG many phones and cameras write (served as image/jpeg; its first picture).
FORMATS = {
    "PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
}  # fmt: skip
IMAGE_CONTENT_TYPES = frozenset({*FORMATS.values(), "image/jpg"})
FIT_MODES = ("center-crop", "resize", "pad", "none", "trim")
DEFAULT_FIT = "center-crop"
_RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Fitted:
    array: np.ndarray  # float32 [C, H, W] in [0, 1]
    description: str  # e.g. "center-crop 512x384 -> 64x64" (width x height)
    source_size: tuple[int, int]  # (width, height) after EXIF orientation, before fitting


# Images up to this many pixels are decoded and encoded on the event loop itself: a 64x64 PNG takes about
# 0.2 ms, less than handing it to a worker thread and back, while anything larger goes to a worker thread
# so a big upload never stalls the other connections. The header is read on the loop either way.
INLINE_PIXELS = 128 * 128


# A progressive JPEG has about 10 scans (libjpeg's default script), an embedded EXIF thumbnail a few more;
# libjpeg-turbo's own limit for its tools is 500.
MAX_JPEG_SCANS = 100


def jpeg_scans(data: bytes, stop_after: int) -> int:
    """Scans (SOS segments) of a JPEG's first picture, counted by walking its marker segments, so that
    metadata, an embedded thumbnail or data after the picture (a motion photo's video) are never
    counted; stops counting past `stop_after`."""
    i, n, scans = 2, len(data), 0  # after SOI
    while i + 1 < n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker == 0xD9:  # EOI: the end of the first picture
            break
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            if marker != 0xDA:
                continue
            scans += 1
            if scans > stop_after:
                break
            while (j := data.find(b"\xff", i)) != -1 and j + 1 < n:  # entropy-coded data up to a marker
                follower = data[j + 1]
                if follower == 0x00 or 0xD0 <= follower <= 0xD7:  # a stuffed 0xFF, or a restart marker
                    i = j + 2
                elif follower == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break
            else:
                break
    return scans


def open_image(data: bytes, *, max_pixels: int, field: str = "image") -> Image.Image:
    """The image with only its header read, checked: empty, undecodable, an unsupported format, or over
    `max_pixels` each raise here, before any pixel is decoded (so a decompression bomb costs nothing)."""
    if not data:
        raise InvalidInput(f"{field} is empty", field=field)
    try:
        with warnings.catch_warnings():
            # Pillow's warning threshold is the process-wide Image.MAX_IMAGE_PIXELS (the app sets it to
            # its own limit); the check below names the size instead. Its error, at twice that, stays.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # header only
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(
            f"{field} exceeds the pixel limit of {max_pixels} ({exc})", field=field
        ) from exc
    except Exception as exc:  # Pillow's parsers raise more than OSError on corrupt headers (ValueError, ...)
        raise InvalidInput(f"{field} is not a decodable image", field=field) from exc
    if opened.format not in FORMATS:
        raise UnsupportedMediaType(
            f"{field} is {opened.format}; supported formats: {', '.join(FORMATS)}", field=field
        )
    if opened.format in ("JPEG", "MPO") and (scans := jpeg_scans(data, MAX_JPEG_SCANS)) > MAX_JPEG_SCANS:
        # Each scan of a progressive JPEG is decoded over the whole image: a few KB of repeated scans cost
        # minutes of CPU. (An MPO, as phones write, is decoded from its first picture: the same check.)
        raise InvalidInput(
            f"{field} is a JPEG of {scans} scans; at most {MAX_JPEG_SCANS} are accepted", field=field
        )
    width, height = opened.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{field} is {width}x{height} = {width * height} pixels, over the pixel limit of {max_pixels}",
            field=field,
        )
    return opened


def decode(data: bytes | Image.Image, *, max_pixels: int, field: str = "image") -> Image.Image:
    """Decode PNG/JPEG/WebP/GIF (first frame) bytes, or an image from `open_image`; EXIF orientation
    applied."""
    opened = data if isinstance(data, Image.Image) else open_image(data, max_pixels=max_pixels, field=field)
    return upright(opened, field=field)


def upright(opened: Image.Image, *, field: str = "image") -> Image.Image:
    """An opened image's first frame, decoded, with its EXIF orientation applied (also what training on
    a folder reads its files with, so both see the same pixels)."""
    try:
        img: Image.Image = opened
        if getattr(opened, "is_animated", False):
            img = next(iter(ImageSequence.Iterator(opened))).copy()
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the common unrotated image
    except Exception as exc:  # a cut animation raises IndexError or struct.error, not only OSError
        raise InvalidInput(f"{field} is a truncated or corrupt {opened.format}", field=field) from exc
    return img


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) gray -> 8-bit L, scaled by the full 16-bit range."""
    a = np.asarray(img).astype(np.float64)
    scale = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.round(a / scale * 255), 0, 255).astype(np.uint8), "L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """RGB (channels=3) or L (channels=1); transparency is composited on white."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _sixteen_bit_to_l(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    mode = "RGB" if channels == 3 else "L"
    return img if img.mode == mode else img.convert(mode)


def fit(
    img: Image.Image,
    height: int,
    width: int,
    mode: str,
    *,
    multiple: int | None = None,
    field: str = "image",
    resample: Image.Resampling = _RESAMPLE,
) -> Image.Image:
    """Fit to height x width: `center-crop` (scale the short side, crop the centre), `resize` (stretch),
    `pad` (scale the long side, pad with black), `none` (keep; the size must match, or for a fully
    convolutional model (`multiple` set) each side must be a multiple of it) or `trim` (a fully
    convolutional model only: keep the size less what exceeds a multiple, cut evenly from both edges,
    at most `multiple` - 1 pixels per axis). The geometry depends on the sizes and the mode only, never on
    `resample`."""
    if mode == "trim" and not multiple:
        raise InvalidInput(
            f"fit=trim keeps the image's size, which only a fully convolutional model takes; this one "
            f"takes {width}x{height}: use center-crop, resize or pad",
            field="fit",
        )
    if img.size == (width, height) and mode in FIT_MODES:
        return img  # every mode leaves an image of the model's size as it is
    if mode == "resize":
        return img.resize((width, height), resample)
    if mode == "center-crop":
        return ImageOps.fit(img, (width, height), resample)
    if mode == "pad":
        return ImageOps.pad(img, (width, height), resample, color=0)
    if mode == "trim" and multiple:  # (checked above: trim needs a multiple)
        w, h = img.size
        keep_w, keep_h = w - w % multiple, h - h % multiple
        if not keep_w or not keep_h:
            raise InvalidInput(
                f"{field} is {w}x{h}; fit=trim needs sides of at least {multiple}", field="fit"
            )
        left, top = (w - keep_w) // 2, (h - keep_h) // 2
        return img.crop((left, top, left + keep_w, top + keep_h))
    if mode == "none":
        w, h = img.size
        if (w, h) == (width, height):
            return img
        if multiple and w % multiple == 0 and h % multiple == 0:
            return img
        need = f"{width}x{height}" + (f" or sides that are multiples of {multiple}" if multiple else "")
        raise InvalidInput(f"fit=none needs an image of {need}; {field} is {w}x{h}", field="fit")
    raise InvalidInput(f"fit must be one of {', '.join(FIT_MODES)}", field="fit")


def load_fitted(
    data: bytes | Image.Image,
    *,
    height: int,
    width: int,
    channels: int,
    mode: str,
    max_pixels: int,
    multiple: int | None = None,
    field: str = "image",
) -> Fitted:
    """decode -> channels -> fit -> float32 [C, H, W] in [0, 1], with a description of the fit."""
    img = to_channels(decode(data, max_pixels=max_pixels, field=field), channels)
    w0, h0 = img.size
    out = fit(img, height, width, mode, multiple=multiple, field=field)
    a = np.asarray(out, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return Fitted(np.ascontiguousarray(a), f"{mode} {w0}x{h0} -> {out.size[0]}x{out.size[1]}", (w0, h0))


def load_mask(
    data: bytes,
    *,
    height: int,
    width: int,
    mode: str,
    max_pixels: int,
    field: str = "mask",
) -> Fitted:
    """A mask image (white = missing) fitted like an image, as float32 [1, H, W] of 0 and 1: 1 wherever
    the fitted pixel covers any missing pixel of the upload.

    Same geometry as `load_fitted` (the same crop, stretch or padding), but each output pixel is the
    area average of the binary mask under it (box filter) instead of an interpolation, and any part
    missing makes it missing: a one-pixel stroke on a large photograph still removes every patch it
    crosses, where a smooth downscale would fade it below any threshold. A mask with transparency (strokes
    painted on a transparent layer) marks only its opaque white pixels: a transparent pixel is kept.
    """
    img = decode(data, max_pixels=max_pixels, field=field)
    w0, h0 = img.size
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        opaque = np.asarray(rgba)[..., 3] >= 128
        white = np.asarray(rgba.convert("L")) >= 128  # the colour channels' luminance, alpha aside
    else:
        white = np.asarray(to_channels(img, 1)) >= 128
        opaque = np.ones_like(white)
    missing = Image.fromarray((white & opaque).astype(np.float32), "F")
    out = fit(missing, height, width, mode, field=field, resample=Image.Resampling.BOX)
    a = (np.asarray(out) > 0).astype(np.float32)[None]
    return Fitted(a, f"{mode} {w0}x{h0} -> {out.size[0]}x{out.size[1]}", (w0, h0))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [C, H, W] in [0, 1] -> uint8 [H, W, C] (values clipped and rounded)."""
    # fmax/fmin return the number when the other operand is NaN: NaN -> 0, -inf -> 0, +inf -> 255, the same
    # as nan_to_num then clip, at half the cost
    return np.rint(np.fmin(np.fmax(image, 0.0), 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def to_pil(image: np.ndarray) -> Image.Image:
    """float [C, H, W] in [0, 1] -> 8-bit RGB or L image (values clipped)."""
    a = to_uint8(image)
    return Image.fromarray(a[..., 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type: 0 = grayscale, 2 = truecolour


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: np.ndarray) -> bytes:
    """float [C, H, W] in [0, 1] (C = 1 or 3) -> an 8-bit grayscale or RGB PNG file.

    Written here rather than by Pillow, whose PNG writer spends most of its time in Python around the
    compressor: every row gets PNG's Sub filter (each byte minus the same channel of the pixel to its
    left, one vectorised subtraction) and the rows are deflated with zlib's run-length strategy. On
    64x64 photographs that is less than half the CPU of Pillow at compress_level=1 (220 against 489 us in
    one run, 233 against 713 in a busier one), for files within 2% of its size (`python -m bench profile`
    measures both).
    """
    a = to_uint8(image)
    height, width, channels = a.shape
    rows = a.reshape(height, width * channels)
    filtered = np.empty((height, 1 + width * channels), np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1 : 1 + channels] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, 1 + channels :])  # wraps mod 256
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", deflate.compress(filtered.tobytes()) + deflate.flush()),
            _png_chunk(b"IEND", b""),
        )
    )


def grid(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Tile [N, C, H, W] row-major into one [C, H', W'] image with `gap` white pixels between tiles."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    out = np.ones((c, rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap), np.float32)
    for i in range(n):
        r, col = divmod(i, columns)
        out[:, r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = images[i]
    return out


def animation_bytes(frames: np.ndarray, fmt: str, frame_ms: int = 100) -> bytes:
    """[N, C, H, W] -> an animated GIF or WebP that loops forever."""
    pil = [to_pil(f) for f in frames]
    if fmt == "gif":
        pil = [p.convert("RGB").quantize(256) for p in pil]
    buf = io.BytesIO()
    pil[0].save(
        buf,
        fmt.upper(),
        save_all=True,
        append_images=pil[1:],
        duration=frame_ms,
        loop=0,
        **({"lossless": True} if fmt == "webp" else {}),
    )
    return buf.getvalue()

"""Decoding, mode conversion and fitting of uploaded images."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from app import imaging
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def fitted(data: bytes, mode: str = "resize", size: int = 8, channels: int = 3) -> imaging.Fitted:
    return imaging.load_fitted(data, height=size, width=size, channels=channels, mode=mode, max_pixels=10**6)


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert np.allclose(fitted(encode(img, "PNG")).array, 1.0)


def test_palette_gray_and_16_bit_are_converted() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 255, 0] + [0] * 765)
    a = fitted(encode(pal, "PNG")).array
    assert a.shape == (3, 8, 8) and np.allclose(a[1], 1.0) and np.allclose(a[0], 0.0)
    gray = fitted(encode(Image.new("L", (8, 8), 128), "PNG")).array
    assert np.allclose(gray, 128 / 255)
    sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert np.allclose(fitted(encode(sixteen, "PNG"), channels=1).array, 1.0)


def test_exif_orientation_is_respected() -> None:
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = imaging.decode(encode(img, "JPEG", exif=exif), max_pixels=10**6)
    assert out.size == (10, 20)


def test_gif_first_frame_and_webp() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 255, 255), (0, 0, 0))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.allclose(fitted(gif).array, 1.0)
    assert fitted(encode(frames[1], "WEBP", lossless=True)).array.max() == 0.0


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("center-crop", "center-crop 40x20 -> 8x8"),
        ("resize", "resize 40x20 -> 8x8"),
        ("pad", "pad 40x20 -> 8x8"),
    ],
)
def test_fit_modes_report_what_they_did(mode: str, expected: str) -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    out = fitted(encode(img, "PNG"), mode)
    assert out.description == expected and out.array.shape == (3, 8, 8)
    if mode == "pad":  # scaled to 8x4 and padded with black above and below
        assert out.array[:, 0].max() == 0.0 and out.array[:, 4].min() > 0.9


def test_fit_none_keeps_multiples_only_when_allowed() -> None:
    data = encode(Image.new("RGB", (12, 16)), "PNG")
    keep = imaging.load_fitted(data, height=8, width=8, channels=3, mode="none", max_pixels=10**6, multiple=4)
    assert keep.array.shape == (3, 16, 12)
    with pytest.raises(InvalidInput) as info:
        fitted(data, "none")
    assert info.value.field == "fit"


def test_fit_trim_cuts_the_remainder_evenly_for_a_fully_convolutional_model() -> None:
    a = np.zeros((19, 14, 3), np.uint8)  # 14 wide, 19 high: 2 and 3 pixels over a multiple of 4
    a[1:17, 1:13] = 255  # the part trim keeps: columns 1..12, rows 1..16
    data = encode(Image.fromarray(a), "PNG")
    kept = imaging.load_fitted(data, height=8, width=8, channels=3, mode="trim", max_pixels=10**6, multiple=4)
    assert kept.array.shape == (3, 16, 12) and kept.array.min() == 1.0
    assert kept.description == "trim 14x19 -> 12x16"
    for image in (data, encode(Image.new("RGB", (8, 8)), "PNG")):  # no multiple: a fixed-size model,
        with pytest.raises(InvalidInput, match="fully convolutional") as info:  # even at its own size
            fitted(image, "trim")
        assert info.value.field == "fit"
    with pytest.raises(InvalidInput, match="at least 4"):
        imaging.load_fitted(encode(Image.new("RGB", (3, 9)), "PNG"), height=8, width=8, channels=3,
                            mode="trim", max_pixels=10**6, multiple=4)  # fmt: skip


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries no pixel data (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [5_000, 100_000])  # under and over Pillow's own default guard
def test_decompression_bomb_is_refused_from_the_header(side: int) -> None:
    with pytest.raises(PayloadTooLarge, match="pixel limit of 1000000"):
        imaging.decode(png_header_only(side, side), max_pixels=10**6)


def test_a_jpeg_of_endless_scans_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    gray = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(gray, "L").save(buf, "JPEG", progressive=True)
    progressive = buf.getvalue()
    assert 1 < progressive.count(b"\xff\xda") <= imaging.MAX_JPEG_SCANS
    assert imaging.decode(progressive, max_pixels=10**6).size == (64, 64)  # a normal progressive JPEG
    last_scan = progressive[progressive.rindex(b"\xff\xda") : progressive.rindex(b"\xff\xd9")]
    bomb = progressive[: progressive.rindex(b"\xff\xd9")] + last_scan * 200 + b"\xff\xd9"
    with pytest.raises(InvalidInput, match="JPEG of 10. scans; at most 100"):  # counting stops there
        imaging.open_image(bomb, max_pixels=10**6)
    # only the first picture's segments count: bytes after it (a motion photo's video) are not scans
    trailing = progressive + np.random.default_rng(1).bytes(1 << 20)
    assert trailing.count(b"\xff\xda") > progressive.count(b"\xff\xda")  # a naive count is fooled
    assert imaging.jpeg_scans(trailing, 100) == imaging.jpeg_scans(progressive, 100)
    assert imaging.open_image(trailing, max_pixels=10**6).size == (64, 64)
    # an MPO (phones' multi-picture JPEG) is counted as a JPEG: its first picture
    mpo = io.BytesIO()
    Image.fromarray(gray, "L").save(mpo, "MPO", save_all=True, append_images=[Image.fromarray(gray, "L")])
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    assert imaging.jpeg_scans(mpo.getvalue(), 100) == 1


def test_unsupported_and_undecodable() -> None:
    with pytest.raises(UnsupportedMediaType, match="BMP"):
        imaging.decode(encode(Image.new("RGB", (4, 4)), "BMP"), max_pixels=100)
    with pytest.raises(InvalidInput):
        imaging.decode(b"not an image", max_pixels=100)


def _animation() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (80, 80), (0, 255, 0)), Image.new("RGB", (80, 80), (255, 0, 255))]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def _png_with(offset: int, patch: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[offset : offset + len(patch)] = patch
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        _animation()[:196],  # cut inside the second frame: IndexError inside Pillow
        _animation()[:204],  # a few bytes later: struct.error
        _png_with(8, b"\0\0\0\0"),  # IHDR length 0: ValueError from the header parser
        _png_with(33, b"\0\0\0\0"),  # IDAT length 0: SyntaxError
    ],
)
def test_corrupt_files_are_invalid_input_never_a_crash(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        imaging.load_fitted(data, height=8, width=8, channels=3, mode="center-crop", max_pixels=1 << 20)


def test_a_multi_picture_camera_jpeg_is_a_jpeg() -> None:
    out = io.BytesIO()
    first, second = Image.new("RGB", (12, 8), (200, 10, 10)), Image.new("RGB", (12, 8), (10, 10, 200))
    first.save(out, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    fitted = imaging.load_fitted(
        out.getvalue(), height=8, width=8, channels=3, mode="center-crop", max_pixels=1 << 20
    )
    assert fitted.array[0].mean() > 0.6 and fitted.array[2].mean() < 0.2  # the first picture, red


def test_open_image_reads_and_checks_the_header_only(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or real_load(self))
    opened = imaging.open_image(encode(Image.new("RGB", (40, 30)), "PNG"), max_pixels=10**6)
    assert opened.size == (40, 30) and decoded == []  # the header alone
    with pytest.raises(PayloadTooLarge, match="5000x5000"):
        imaging.open_image(png_header_only(5_000, 5_000), max_pixels=10**6)
    with pytest.raises(PayloadTooLarge):
        imaging.open_image(png_header_only(100_000, 100_000), max_pixels=10**6)  # Pillow refuses it outright
    with pytest.raises(InvalidInput, match="empty"):
        imaging.open_image(b"", max_pixels=100)
    with pytest.raises(InvalidInput, match="not a decodable image"):
        imaging.open_image(b"not an image", max_pixels=100)
    assert decoded == []
    # decode() finishes an opened image exactly as it decodes the bytes
    data = encode(Image.new("RGB", (40, 30), (10, 200, 30)), "PNG")
    finished = imaging.decode(imaging.open_image(data, max_pixels=10**6), max_pixels=10**6)
    np.testing.assert_array_equal(np.asarray(finished), np.asarray(imaging.decode(data, max_pixels=10**6)))


def test_to_pil_maps_non_finite_values_and_clips() -> None:
    image = np.array([[[np.nan, np.inf, -np.inf, 1.5, -0.2, 0.5, 1.0, 0.0]]], np.float32)
    assert np.asarray(imaging.to_pil(image)).tolist() == [[0, 255, 0, 255, 0, 128, 255, 0]]


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 64, 64), (3, 5, 17), (1, 1, 1), (3, 40, 7)])
def test_png_bytes_decodes_to_the_quantised_image(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.uniform(-0.1, 1.1, shape).astype(np.float32)
    image.flat[0] = np.nan
    expected = np.asarray(imaging.to_pil(image))
    decoded = Image.open(io.BytesIO(imaging.png_bytes(image)))
    decoded.load()  # Pillow checks every chunk's CRC and the zlib stream on load
    assert decoded.format == "PNG" and decoded.mode == ("L" if shape[0] == 1 else "RGB")
    assert decoded.size == (shape[2], shape[1])
    np.testing.assert_array_equal(np.asarray(decoded), expected)

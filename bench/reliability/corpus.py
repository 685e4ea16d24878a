"""The bad-input corpus: requests a careless or hostile client sends, and what each must get back.

A `Case` is one raw HTTP request (method, raw path with query, headers, body bytes) and its expected
answer: a 4xx status with the JSON error shape that names the problem, or, for valid but odd images
(1x1, 16-bit, CMYK, palette, alpha, animated GIF, EXIF-rotated), a 200 whose fit report shows the image
was read the right way up. `build(models, graphs)` makes the corpus for whatever models a server has
(the /v1/models entries and the /v2 graph metadata), so the same cases run in-process (tests) and
against a real server (bench). `judge(case, status, headers, body)` says what is wrong with an answer.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

BOUNDARY = "reliability-corpus-boundary"


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get."""

    id: str
    method: str
    target: str  # raw path and query, sent as is (no normalization of '..')
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] = (422,)  # acceptable statuses
    code: str | None = None  # the v1 error code, when the answer is an error
    says: str | None = None  # a phrase the error message must contain (case-insensitive)
    source_size: str | None = None  # 200 answers: "WxH" the fit report must start from


# ---- images -------------------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB and carries one tiny IDAT: a bomb by its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_bomb(side: int) -> bytes:
    """A real 1-bit side x side PNG of zeros: a few KB that decode to side^2 pixels (x3 bytes as RGB)."""
    return _save(Image.new("1", (side, side), 0), "PNG", optimize=True)


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim width x height."""
    data = bytearray(_save(_rgb(16, 16), "JPEG"))
    at = data.index(b"\xff\xc0")  # baseline start-of-frame: marker, length(2), precision(1), height, width
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(_rgb(40, 30), "JPEG", exif=exif)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _palette(transparent: bool) -> bytes:
    img = _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(img, "PNG", **({"transparency": 0} if transparent else {}))


def _cmyk_jpeg() -> bytes:
    return _save(_rgb().convert("CMYK"), "JPEG")


def _sixteen_bit() -> bytes:
    a = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    return _save(Image.fromarray(a), "PNG")


def _zip_tail() -> bytes:
    """The end-of-central-directory record of an empty ZIP: with it appended a PNG is also a ZIP."""
    return b"PK\x05\x06" + b"\0" * 18


PNG, JPEG, GIF = "image/png", "image/jpeg", "image/gif"
SCRIPT = b"<script>alert(1)</script>"


@dataclass(frozen=True)
class Sample:
    """An image upload: 4xx with a phrase the message must hold, or 200 from the given source size."""

    id: str
    data: bytes
    content_type: str
    status: int
    phrase: str  # for 4xx: in the error message; for 200: "WxH" the fit report starts from


def image_samples() -> list[Sample]:
    png, jpeg, noise = _save(_rgb(), "PNG"), _save(_rgb(), "JPEG"), np.random.default_rng(1).bytes(4096)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg">' + SCRIPT + b"</svg>"
    return [
        Sample("zero-bytes", b"", PNG, 422, "empty"),
        Sample("truncated-png", png[: len(png) // 2], PNG, 422, "truncated"),
        Sample("truncated-jpeg", jpeg[: len(jpeg) // 2], JPEG, 422, "truncated"),
        Sample("png-signature-only", png[:8], PNG, 422, "not a decodable image"),
        Sample("text-as-png", b"hello, this is not an image\n", PNG, 422, "not a decodable image"),
        Sample("random-bytes-as-jpeg", noise, JPEG, 422, "not a decodable image"),
        Sample("html-as-png", b"<html>" + SCRIPT + b"</html>", PNG, 422, "not a decodable image"),
        Sample("svg-as-png", svg, PNG, 422, "not a decodable image"),
        Sample("pdf-as-jpeg", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", JPEG, 422, "decodable"),
        Sample(
            "polyglot-gif-js", b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=alert(1);//", GIF, 422, "decodable"
        ),
        Sample("polyglot-png-zip", png + _zip_tail(), PNG, 200, "40x30"),
        Sample("polyglot-jpeg-html", jpeg + SCRIPT, JPEG, 200, "40x30"),
        Sample("bmp", _save(_rgb(), "BMP"), PNG, 415, "supported formats"),
        Sample("tiff", _save(_rgb(), "TIFF"), PNG, 415, "supported formats"),
        Sample("huge-dimensions-png", _png_header_only(100_000, 100_000), PNG, 413, "pixel limit"),
        Sample("huge-dimensions-jpeg", _jpeg_with_size(65_000, 65_000), JPEG, 413, "pixel limit"),
        Sample("decompression-bomb-png", _png_bomb(8192), PNG, 413, "pixel limit"),
        Sample("1x1", _save(_rgb(1, 1), "PNG"), PNG, 200, "1x1"),
        Sample("16-bit-gray", _sixteen_bit(), PNG, 200, "40x30"),
        Sample("cmyk-jpeg", _cmyk_jpeg(), JPEG, 200, "40x30"),
        Sample("palette", _palette(False), PNG, 200, "40x30"),
        Sample("palette-transparent", _palette(True), PNG, 200, "40x30"),
        Sample("rgba", _save(_rgb().convert("RGBA"), "PNG"), PNG, 200, "40x30"),
        Sample("gray-alpha", _save(_rgb().convert("LA"), "PNG"), PNG, 200, "40x30"),
        Sample("gray-jpeg", _save(_rgb().convert("L"), "JPEG"), JPEG, 200, "40x30"),
        Sample("animated-gif", _animated_gif(), GIF, 200, "40x30"),
        Sample("webp", _save(_rgb(), "WEBP", lossless=True), "image/webp", 200, "40x30"),
        Sample("png-labelled-jpeg", png, JPEG, 200, "40x30"),
        Sample("exif-rotate-180", _exif_jpeg(3), JPEG, 200, "40x30"),
        Sample("exif-rotate-90", _exif_jpeg(6), JPEG, 200, "30x40"),
        Sample("exif-rotate-270", _exif_jpeg(8), JPEG, 200, "30x40"),
        Sample("exif-transpose", _exif_jpeg(5), JPEG, 200, "30x40"),
        Sample("exif-orientation-invalid", _exif_jpeg(9), JPEG, 200, "40x30"),
    ]


# ---- request bodies and cases -------------------------------------------------------------------

_V1_CODE = {413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input"}


def refused(
    cid: str, target: str, body: bytes, headers: dict[str, str], status: int, says: str | None = None
) -> Case:
    """A POST that must be refused with `status` (and, on /v1, the matching error code)."""
    code = None if target.startswith("/v2") else _V1_CODE.get(status)
    return Case(cid, "POST", target, body, headers, (status,), code, says)


def multipart(parts: Sequence[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """(field, filename or None for a plain field, content type, data) -> (body, headers)."""
    out = io.BytesIO()
    for name, filename, ctype, data in parts:
        out.write(f"--{BOUNDARY}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue(), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def good_png() -> bytes:
    """A plain 40x30 RGB PNG."""
    return _save(_rgb(), "PNG")


def files(*names: str, data: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """A multipart body with a good PNG (or `data`) under each name."""
    good = good_png() if data is None else data
    return multipart([(n, f"{i}.png", PNG, good) for i, n in enumerate(names)])


def _json(doc: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(doc).encode(), {"content-type": "application/json"}


def _raw_json(text: str) -> tuple[bytes, dict[str, str]]:
    return text.encode(), {"content-type": "application/json"}


# ---- the endpoints that take images -------------------------------------------------------------


@dataclass(frozen=True)
class ImageEndpoint:
    """An operation that reads images: the field that carries the bad image, the other image fields
    it needs (filled with a good image), and whether it takes a raw image body."""

    model: str
    operation: str
    field: str = "image"
    others: tuple[str, ...] = ()
    raw: bool = True

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model}/{self.operation}"


_IMAGE_OPS = {  # operation -> (field, other image fields, raw body accepted)
    "reconstruct": ("image", (), True),
    "encode": ("image", (), True),
    "score": ("image", (), True),
    "tokens": ("images", (), True),
    "inpaint": ("image", (), True),
    "interpolate": ("start", ("end",), False),
    "traverse": ("image", (), True),
}


def image_endpoints(models: list[dict[str, Any]]) -> list[ImageEndpoint]:
    """Every image-reading operation of every ready model."""
    out = []
    for m in models:
        for op in m["operations"] if m.get("status") == "ready" else []:
            if op in _IMAGE_OPS:
                field_, others, raw = _IMAGE_OPS[op]
                out.append(ImageEndpoint(m["name"], op, field_, others, raw))
    return out


def _bad_images(ep: ImageEndpoint) -> Iterator[Case]:
    good = _save(_rgb(seed=2), "PNG")
    for s in image_samples():
        if ep.raw and s.id in ("zero-bytes", "text-as-png", "png-labelled-jpeg"):  # raw bodies too
            body, headers = s.data, {"content-type": s.content_type}
        else:
            body, headers = multipart(
                [(ep.field, "x", s.content_type, s.data)] + [(o, "g.png", PNG, good) for o in ep.others]
            )
        cid = f"{ep.model}/{ep.operation}/{s.id}"
        if s.status == 200:
            yield Case(cid, "POST", ep.path, body, headers, (200,), source_size=s.phrase)
        else:
            yield refused(cid, ep.path, body, headers, s.status, s.phrase)


def _bad_forms(ep: ImageEndpoint, max_images: int) -> Iterator[Case]:
    base, path, good = f"{ep.model}/{ep.operation}", ep.path, _save(_rgb(), "PNG")
    yield refused(f"{base}/wrong-multipart-field", path, *files("file"), 422, "this operation takes")
    as_text = multipart([(ep.field, None, None, b"not a file")])
    yield refused(f"{base}/image-as-text-field", path, *as_text, 422, "must be a file")
    no_boundary = {"content-type": "multipart/form-data"}
    yield Case(f"{base}/multipart-without-boundary", "POST", path, b"--x\r\n\r\n", no_boundary, (400, 422))
    garbage = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    yield Case(f"{base}/garbage-multipart", "POST", path, b"\x00\xff" * 64, garbage, (400, 422))
    yield refused(f"{base}/text-plain", path, b"hello", {"content-type": "text/plain"}, 415, "not accepted")
    yield refused(f"{base}/no-content-type", path, good, {}, 415, "not accepted")
    many = files(*([ep.field] * (max_images + 1)), *ep.others)
    yield refused(f"{base}/too-many-images", path, *many, 422)
    if ep.field == "image" and ep.operation != "score":  # score takes several images in one field
        yield refused(f"{base}/two-images-one-field", path, *files("image", "image"), 422, "send one")


# ---- JSON, query and name cases -----------------------------------------------------------------


def _nested(key: str, depth: int) -> str:
    return f'{{"{key}": ' + "[" * depth + "]" * depth + "}"


def _vae_json(name: str, z: int, max_images: int) -> Iterator[Case]:
    decode, interp = f"/v1/models/{name}/decode", f"/v1/models/{name}/interpolate"
    zeros = ", 0" * (z - 1)
    docs: list[tuple[str, tuple[bytes, dict[str, str]], str]] = [
        ("latent-nan", _raw_json(f'{{"latent": [NaN{zeros}]}}'), "nan"),
        ("latent-infinity", _raw_json(f'{{"latent": [Infinity{zeros}]}}'), "infinite"),
        ("latent-1e999", _raw_json(f'{{"latent": [1e999{zeros}]}}'), "infinite"),
        ("latent-string", _json({"latent": "zero"}), "latent"),
        ("latent-object", _json({"latent": {"a": 1}}), "latent"),
        ("latent-bool", _json({"latent": True}), "latent"),
        ("latent-null", _json({"latent": None}), "missing"),
        ("latent-ragged", _json({"latent": [[0.0] * z, [0.0]]}), "latent"),
        ("latent-wrong-length", _json({"latent": [0.0] * (z + 1)}), "shape"),
        ("latent-empty", _json({"latent": []}), "empty"),
        ("latent-3-axes", _json({"latent": [[[0.0] * z]]}), "shape"),
        ("latents-over-limit", _json({"latent": [[0.0] * z] * (max_images + 1)}), "limit"),
        ("body-json-array", _json([0.0] * z), "json object"),
        ("body-invalid-json", _raw_json('{"latent": [0, '), "not valid json"),
        ("body-deeply-nested", _raw_json(_nested("latent", 100_000)), "json lists"),  # refused unparsed
        ("body-nested-past-the-parser", _raw_json(_nested("latent", 4_000)), "not valid json"),
    ]
    for cid, (body, headers), says in docs:
        yield refused(f"{name}/decode/{cid}", decode, body, headers, 422, says)
    end = json.dumps([0.0] * z)
    yield refused(
        f"{name}/interpolate/start-nan",
        interp,
        *_raw_json(f'{{"start": [NaN{zeros}], "end": {end}}}'),
        422,
        "nan",
    )
    yield refused(
        f"{name}/interpolate/end-wrong-shape",
        interp,
        *_json({"start": [0.0] * z, "end": [0.0] * (z + 2)}),
        422,
        "shape",
    )


def _vq_json(m: dict[str, Any], max_pixels: int) -> Iterator[Case]:
    name, latent = m["name"], m["latent"]
    k, d, dim = int(latent["codebook_size"]), int(latent["downsample"]), int(latent["code_dim"])
    decode, interp = f"/v1/models/{name}/decode", f"/v1/models/{name}/interpolate"
    h = m["input"]["height"] // d
    side = int(max_pixels**0.5) // d + 1  # the smallest square grid that decodes past the pixel limit
    docs: list[tuple[str, tuple[bytes, dict[str, str]], int, str]] = [
        ("tokens-out-of-range", _json({"tokens": [[k] * h] * h}), 422, "outside"),
        ("tokens-negative", _json({"tokens": [[-1] * h] * h}), 422, "outside"),
        ("tokens-fractional", _json({"tokens": [[0.5] * h] * h}), 422, "integers"),
        ("tokens-nan", _raw_json('{"tokens": [[NaN]]}'), 422, "nan"),
        ("tokens-1-axis", _json({"tokens": [0] * h}), 422, "grid"),
        ("tokens-4-axes", _json({"tokens": [[[[0] * h] * h]]}), 422, "grid"),
        ("tokens-huge", _json({"tokens": [[2**70] * h] * h}), 422, "outside"),
        ("tokens-string", _json({"tokens": "abc"}), 422, "tokens"),
        ("tokens-grid-over-pixel-limit", _json({"tokens": [[0] * side] * side}), 413, "pixels"),
        ("body-deeply-nested", _raw_json(_nested("tokens", 100_000)), 422, "json lists"),
        ("body-nested-past-the-parser", _raw_json(_nested("tokens", 4_000)), 422, "not valid json"),
    ]
    for cid, (body, headers), status, says in docs:
        yield refused(f"{name}/decode/{cid}", decode, body, headers, status, says)
    steps = 64
    grid_side = int((max_pixels / steps) ** 0.5) // d + 1  # 64 frames of this grid pass the pixel limit
    big = np.zeros((dim, grid_side, grid_side), int).tolist()
    yield refused(
        f"{name}/interpolate/z_e-over-pixel-limit",
        f"{interp}?steps={steps}",
        *_json({"start": big, "end": big}),
        413,
        "pixels",
    )


def _query_cases(m: dict[str, Any]) -> Iterator[Case]:
    name, ops = m["name"], set(m["operations"])
    none: tuple[bytes, dict[str, str]] = (b"", {})
    image, two = files("image"), files("start", "end")
    queries: list[tuple[str, str, tuple[bytes, dict[str, str]]]] = []
    per_op = {
        "interpolate": (
            ("steps=0", "steps=1", "steps=1000000", "steps=abc", "method=cubic", "format=bmp"),
            two,
        ),
        "inpaint": (
            (
                "mask_ratio=1",
                "mask_ratio=1.5",
                "mask_ratio=0",
                "mask_ratio=-0.1",
                "mask_ratio=nan",
                "mask_ratio=inf",
                "seed=-1",
                f"seed={2**64}",
            ),
            image,
        ),
        "sample": (("n=0", "n=1000000", "seed=-5", "format=gif"), none),
        "traverse": (("steps=0", "steps=1000000", "dims=a,b", "dims=99999", "low=nan", "high=1e309"), none),
        "reconstruct": (("fit=stretch", "format=tiff"), image),
        "encode": (("fit=stretch", "format=csv"), image),
        "score": (("fit=stretch", "samples=1000000", "samples=-1"), image),
    }
    for op, (qs, request) in per_op.items():
        queries += [(op, q, request) for q in qs if op in ops]
    for op, q, (body, headers) in queries:
        yield refused(
            f"{name}/{op}/query-{q}", f"/v1/models/{name}/{op}?{q}", body, headers, 422, q.split("=")[0]
        )
    if "inpaint" in ops:
        path, img = f"/v1/models/{name}/inpaint", _save(_rgb(), "PNG")
        for cid, mask, query, says in (
            ("mask-and-ratio", _save(Image.new("L", (40, 30), 255), "PNG"), "?mask_ratio=0.5", "either"),
            ("mask-wrong-size", _save(Image.new("L", (10, 10), 255), "PNG"), "", "sizes must match"),
            ("mask-not-an-image", b"junk", "", "mask"),
        ):
            body, headers = multipart([("image", "a.png", PNG, img), ("mask", "m.png", PNG, mask)])
            yield refused(f"{name}/inpaint/{cid}", path + query, body, headers, 422, says)


# Model names a client might use to reach outside the registry; each must be a plain 404.
BAD_NAMES = (
    "nope",
    "..",
    "%2E%2E",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "vae%2F..%2Fvae",
    "..%5C..%5Cwindows",
    "%00",
    "vae%00",
    "~",
    "%252E%252E",
    "a" * 2000,
)


def _name_cases(operations: set[str], graphs: list[str]) -> Iterator[Case]:
    image = files("image")
    empty_json = (b"{}", {"content-type": "application/json"})
    for bad in BAD_NAMES:
        label = bad if len(bad) < 40 else f"{bad[:8]}...({len(bad)})"
        yield Case(f"name/{label}/get", "GET", f"/v1/models/{bad}", expect=(404,))
        yield Case(f"name/{label}/codebook", "GET", f"/v1/models/{bad}/codebook", expect=(404,))
        for op in sorted(operations - {"codebook"}):
            yield Case(f"name/{label}/{op}", "POST", f"/v1/models/{bad}/{op}", *image, expect=(404,))
        yield Case(f"graph/{label}", "GET", f"/v2/models/{bad}", expect=(404,))
        yield Case(f"graph/{label}/ready", "GET", f"/v2/models/{bad}/ready", expect=(404,))
        yield Case(f"graph/{label}/infer", "POST", f"/v2/models/{bad}/infer", *empty_json, expect=(404,))
    for g in graphs[:1]:  # a real graph name with a traversal around it
        for bad in (f"..%2F{g}", f"{g}%2F..", f"{g}%00", f"../{g}"):
            yield Case(f"graph/{bad}/infer", "POST", f"/v2/models/{bad}/infer", *empty_json, expect=(404,))
    yield Case("name/literal-dot-segments", "GET", "/v1/models/../../etc/passwd", expect=(404,))


def _v2_cases(graph: str, meta: dict[str, Any], max_images: int) -> Iterator[Case]:
    path, inputs = f"/v2/models/{graph}/infer", meta["inputs"]
    first = inputs[0]

    def tensor(spec: dict[str, Any], batch: int = 1, **over: Any) -> dict[str, Any]:
        shape = [batch] + [d if d >= 0 else 4 for d in spec["shape"][1:]]
        zeros = [0] * int(np.prod(shape))
        return {"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": zeros} | over

    def request(**first_over: Any) -> list[dict[str, Any]]:
        return [tensor(first, **first_over)] + [tensor(s) for s in inputs[1:]]

    count = int(np.prod(tensor(first)["shape"]))
    rank = len(first["shape"])
    docs: list[tuple[str, Any, dict[str, str], int]] = [
        ("invalid-json", b'{"inputs": [', {}, 400),
        ("deeply-nested", _nested("inputs", 100_000).encode(), {}, 400),
        ("nested-past-the-parser", _nested("inputs", 4_000).encode(), {}, 400),
        ("not-an-object", [1, 2, 3], {}, 400),
        ("inputs-not-a-list", {"inputs": "image"}, {}, 400),
        ("inputs-item-not-an-object", {"inputs": [*request(), 5]}, {}, 400),
        ("input-name-not-a-string", {"inputs": [{"name": 3, "shape": [1], "datatype": "FP32"}]}, {}, 400),
        ("missing-input", {"inputs": []}, {}, 400),
        ("unknown-input", {"inputs": [*request(), tensor(first) | {"name": "extra"}]}, {}, 400),
        ("duplicate-input", {"inputs": [*request(), tensor(first)]}, {}, 400),
        ("datatype-fp64", {"inputs": request(datatype="FP64")}, {}, 400),
        ("datatype-list", {"inputs": request(datatype=["FP32"])}, {}, 400),
        ("shape-negative", {"inputs": request(shape=[-1] + [1] * (rank - 1))}, {}, 400),
        ("shape-strings", {"inputs": request(shape=["a"] * rank)}, {}, 400),
        ("shape-wrong-rank", {"inputs": request(shape=[1])}, {}, 400),
        ("batch-zero", {"inputs": request(batch=0, data=[])}, {}, 400),
        ("batch-over-limit", {"inputs": request(batch=max_images + 1, data=[])}, {}, 413),
        ("data-count-mismatch", {"inputs": request(data=[0, 0])}, {}, 400),
        ("data-strings", {"inputs": request(data=["x"] * count)}, {}, 400),
        ("parameters-a-list", {"inputs": request(parameters=[1])}, {}, 400),
        ("binary-size-float", {"inputs": request(parameters={"binary_data_size": 4.0})}, {}, 400),
        ("binary-size-too-big", {"inputs": request(parameters={"binary_data_size": 10**12})}, {}, 400),
        ("unknown-output", {"inputs": request(), "outputs": [{"name": "nope"}]}, {}, 400),
        ("outputs-not-objects", {"inputs": request(), "outputs": ["x"]}, {}, 400),
        ("id-a-list", {"inputs": request(), "id": [1]}, {}, 400),
        ("request-parameters-a-string", {"inputs": request(), "parameters": "binary"}, {}, 400),
        (
            "header-length-beyond-body",
            {"inputs": request()},
            {"inference-header-content-length": "999999"},
            400,
        ),
        ("header-length-not-a-number", {"inputs": request()}, {"inference-header-content-length": "-5"}, 400),
    ]
    if first["datatype"] == "FP32":
        nan = np.full(count, np.nan, np.float32).tobytes()
        head = json.dumps({"inputs": request(parameters={"binary_data_size": len(nan)}, data=None)}).encode()
        text = json.dumps({"inputs": request()}).replace('"data": [0', '"data": [NaN', 1).encode()
        docs += [
            ("data-nan", text, {}, 400),
            ("binary-nan", head + nan, {"inference-header-content-length": str(len(head))}, 400),
        ]
    if first["datatype"] == "INT64":  # token ids outside the codebook: refused before the graph's lookup
        docs.append(("tokens-out-of-range", {"inputs": request(data=[2**40] * count)}, {}, 400))
    if any(d < 0 for d in first["shape"][1:]):  # dynamic spatial axes: the pixel limit from the shape alone
        big = [1] + [d if d >= 0 else 100_000 for d in first["shape"][1:]]
        docs.append(("spatial-over-pixel-limit", {"inputs": request(shape=big, data=[])}, {}, 413))
    for cid, doc, extra, status in docs:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        yield refused(
            f"{graph}/infer/{cid}", path, body, {"content-type": "application/json"} | extra, status
        )


def build(
    models: list[dict[str, Any]],
    graphs: dict[str, dict[str, Any]],
    *,
    max_images: int,
    max_pixels: int,
    max_body_bytes: int,
) -> list[Case]:
    """The whole corpus for a server's models (/v1/models entries) and graphs (v2 metadata by name)."""
    cases: list[Case] = []
    for ep in image_endpoints(models):
        cases += _bad_images(ep)
        cases += _bad_forms(ep, max_images)
    for m in (m for m in models if m.get("status") == "ready"):
        if m["kind"] in ("vae", "beta_vae"):
            cases += _vae_json(m["name"], int(m["latent"]["shape"][0]), max_images)
        if m["kind"] == "vqvae":
            cases += _vq_json(m, max_pixels)
        cases += _query_cases(m)
    cases += _name_cases({op for m in models for op in m.get("operations", [])}, sorted(graphs))
    for g, meta in sorted(graphs.items()):
        cases += _v2_cases(g, meta, max_images)
    if models:
        over = b"\0" * (max_body_bytes + 1)
        path = f"/v1/models/{models[0]['name']}/reconstruct"
        cases.append(refused("body-over-limit", path, over, {"content-type": PNG}, 413, "exceeds"))
    cases.append(Case("unknown-route", "GET", "/v1/nothing-here", expect=(404,), code="not_found"))
    return cases


def judge(case: Case, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with an answer to `case`, or None when it is right."""
    if status >= 500:
        return f"server error {status}: {body[:200]!r}"
    if status not in case.expect:
        return f"status {status}, expected {case.expect}: {body[:200]!r}"
    ctype = headers.get("content-type", "")
    if status >= 400:
        if not ctype.startswith("application/json"):
            return f"error with content type {ctype!r}"
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"error body is not the JSON error shape: {body[:200]!r}"
        v2 = case.target.startswith("/v2")
        message = error if v2 else error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            return f"error without a message: {body[:200]!r}"
        if not v2 and case.code and error.get("code") != case.code:
            return f"error code {error.get('code')!r}, expected {case.code!r}"
        if case.says and case.says.lower() not in message.lower():
            return f"message {message!r} does not say {case.says!r}"
        if status == 429 and "retry-after" not in headers:
            return "429 without Retry-After"
        return None
    if case.source_size:
        fit = headers.get("x-image-fit", "")
        if fit and f" {case.source_size} ->" not in fit:
            return f"X-Image-Fit {fit!r} does not start from {case.source_size}"
    return None

"""The v1 operations on a model: POST /v1/models/{name}/<operation>.

Each endpoint: resolve the model and check the operation (404 naming the supported ones), read and fit
the images, run the kind's adapter (app/kinds.py) through the batchers, and answer in the requested
format. Images come as multipart fields or as a raw body with an image content type.
"""

import asyncio
import base64
import io
import math
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app import imaging
from app.batching import INLINE_MAX_VALUES, off_loop
from app.deps import RegistryDep, SettingsDep, VersionedRoute, require_api_key, serving
from app.errors import InvalidInput, PayloadTooLarge, error_responses
from app.kinds import MAEAdapter, VAEAdapter, VQVAEAdapter
from app.manifest import Manifest
from app.operations import (
    compose_inpaint,
    interpolate,
    mse_psnr,
    patch_mask_from_pixels,
    per_patch_mse,
    random_patch_masks,
    reparameterize,
    sample_prior,
    traverse,
)
from app.registry import Model, usable_cores
from app.settings import Settings
from app.uploads import LARGE_JSON_BYTES, Upload, json_numbers, read_upload

router = APIRouter(
    route_class=VersionedRoute,
    prefix="/v1/models/{name}",
    tags=["operations"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 404, 413, 415, 422, 429, 500, 503),
)

FitQuery = Annotated[
    Literal["center-crop", "resize", "pad", "none", "trim"],
    Query(
        description="How an image of another size is fitted: center-crop (scale the short side, crop), "
        "resize (stretch), pad (scale the long side, pad black), none (keep; VQ-VAE accepts "
        "any size whose sides are multiples of its downsample factor), trim (VQ-VAE: keep the size "
        "less the remainder beyond such a multiple, cut evenly from both edges). Reported in X-Image-Fit."
    ),
]
SeedQuery = Annotated[int, Query(ge=0, le=2**63 - 1, description="Seed of numpy's default_rng.")]

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "A PNG image"}}


def _body(
    fields: dict[str, str],
    *,
    required: tuple[str, ...] = ("image",),
    raw: bool = True,
    json_schema: dict[str, Any] | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    """OpenAPI request body for endpoints that parse their own uploads (multipart or raw image)."""
    binary = {"type": "string", "format": "binary"}
    props: dict[str, Any] = {}
    for name, desc in fields.items():
        props[name] = (
            {"type": "array", "items": binary, "description": desc}
            if name == "images"
            else {**binary, "description": desc}
        )
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": props, "required": list(required)}}
    }
    if raw:
        content |= {t: {"schema": binary} for t in _IMAGE_TYPES}
    if json_schema:
        content["application/json"] = {"schema": json_schema}
    return {"requestBody": {"required": body_required, "content": content}}


def _wants(request: Request, format: str | None, default: str) -> str:
    if format:
        return format
    return "json" if "application/json" in request.headers.get("accept", "") else default


def _b64png(image: np.ndarray) -> str:
    return base64.b64encode(imaging.png_bytes(image)).decode()


async def _png(image: np.ndarray, fit: str | None = None) -> Response:
    # Large images are encoded on a worker thread: zlib releases the GIL, so the event loop keeps reading
    # requests and the encode overlaps with the next batch. Small ones (imaging.INLINE_PIXELS) cost less
    # to encode here than the hand-off to a thread and back.
    headers = {"X-Image-Fit": fit} if fit else None
    body = await off_loop(image.shape[-1] * image.shape[-2], imaging.INLINE_PIXELS, imaging.png_bytes, image)
    return Response(body, media_type="image/png", headers=headers)


def _npy(array: np.ndarray, headers: dict[str, str] | None = None) -> Response:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/x-npy", headers=headers)


def _fit_header(fits: list[str]) -> dict[str, str]:
    return {"X-Image-Fit": "; ".join(fits)} if fits else {}


_DECODE_AT_ONCE = max(2, usable_cores())


async def _fitted(
    data: list[bytes], m: Manifest, model: Model, settings: Settings, fit: str, field: str
) -> tuple[np.ndarray, list[imaging.Fitted]]:
    """Decode and fit images to the model's input; [N, C, H, W] plus what was done to each."""
    if not data:
        raise InvalidInput(f"missing image field {field!r}", field=field)
    multiple = None
    if model.adapter is not None and model.adapter.fully_convolutional:
        multiple = m.spatial_multiple or int(m.latent.get("downsample") or 1)

    def load(b: bytes | Image.Image) -> imaging.Fitted:
        return imaging.load_fitted(
            b,
            height=m.height,
            width=m.width,
            channels=m.channels,
            mode=fit,
            max_pixels=settings.max_pixels,
            multiple=multiple,
            field=field,
        )

    def load_all(part: list[bytes | Image.Image]) -> list[imaging.Fitted]:
        return [load(b) for b in part]

    if len(data) == 1:
        opened = imaging.open_image(data[0], max_pixels=settings.max_pixels, field=field)  # header only
        one = await off_loop(opened.width * opened.height, imaging.INLINE_PIXELS, load, opened)
        return one.array[None], [one]

    # Two limits, both from the headers before any image is decoded (the opened headers are what the
    # decoders below take, so none is read twice): what the images hold as sent, which decoding costs
    # whatever the fit, and what they come to at the model's input, as for latents and v2 tensors.
    headers = [imaging.open_image(b, max_pixels=settings.max_pixels, field=field) for b in data]
    sent = sum(img.width * img.height for img in headers)
    if sent > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"{len(data)} images in {field!r} hold {sent} pixels as sent, over the limit of "
            f"{settings.max_request_pixels} pixels decoded for one request (AESERVE_MAX_REQUEST_PIXELS); "
            "send fewer or smaller images",
            field=field,
        )
    sources: list[bytes | Image.Image] = list(headers)
    total = sent if fit in ("none", "trim") else len(data) * m.height * m.width  # trim: all but a few
    if total > settings.max_pixels:
        raise PayloadTooLarge(
            f"{len(data)} images in {field!r} come to {total} pixels at the model's input, over the pixel "
            f"limit of {settings.max_pixels} for one request; send fewer or smaller images",
            field=field,
        )
    # One worker thread per core, each decoding its share one image after another: Pillow releases the
    # GIL while it decodes, so a bulk request uses every core, at most one full-size image per thread is
    # in memory at once, and a request costs one thread hand-off per core rather than one per image.
    shares = min(_DECODE_AT_ONCE, len(data))
    step = -(-len(data) // shares)
    parts = await asyncio.gather(
        *(run_in_threadpool(load_all, sources[i : i + step]) for i in range(0, len(sources), step))
    )
    fitted = [f for part in parts for f in part]
    if len({f.array.shape for f in fitted}) > 1:
        raise InvalidInput(
            f"images kept at different sizes (fit={fit}); send one size per request", field=field
        )
    return np.stack([f.array for f in fitted]), fitted


async def _json_array(upload: Upload, field: str, dtype: type) -> np.ndarray:
    """`_array` of a field of the JSON body, in a worker thread when the body is large."""
    return await off_loop(upload.size, LARGE_JSON_BYTES, _array, upload.json.get(field), field, dtype)


def _b64pngs(images: np.ndarray) -> list[str]:
    return [_b64png(i) for i in images]


def _array(value: Any, field: str, dtype: type) -> np.ndarray:
    """A JSON list as a finite array, or InvalidInput naming the field."""
    if value is None:
        raise InvalidInput(f"missing field {field!r}", field=field)
    try:
        # object arrays (integers beyond int64, range-checked below) become float64 here
        a = json_numbers(value).astype(np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"{field} must be a (nested) list of numbers of a regular shape", field=field
        ) from exc
    if a.size == 0:
        raise InvalidInput(f"{field} is empty", field=field)
    if not np.all(np.isfinite(a)):
        raise InvalidInput(f"{field} contains NaN or infinite values", field=field)
    if dtype is np.int64:
        if not np.all(a == np.round(a)):
            raise InvalidInput(f"{field} must hold integers", field=field)
        if np.abs(a).max() >= 2**62:  # would not survive the cast to int64
            raise InvalidInput(f"{field} holds integers outside the int64 range", field=field)
        return a.astype(np.int64)
    if np.abs(a).max() > np.finfo(np.float32).max:  # would become infinite in float32
        raise InvalidInput(f"{field} holds values beyond the float32 range", field=field)
    return a.astype(np.float32)


def _check_latent(z: np.ndarray, m: Manifest, model: Model, field: str) -> np.ndarray:
    """A continuous latent of one image -> [1, ...]; its shape must be the kind's latent shape."""
    adapter = model.adapter
    if isinstance(adapter, VQVAEAdapter):
        d = adapter.code_dim(m)
        ok = z.ndim == 3 and z.shape[0] == d
        expected = f"[{d}, h, w]"
    else:
        assert adapter is not None
        shape = adapter.latent_shape(m, m.height, m.width)
        ok = z.shape == shape
        expected = str(list(shape))
    if not ok:
        raise InvalidInput(f"{field} has shape {list(z.shape)}; expected {expected}", field=field)
    return z[None]


def _check_tokens(tokens: np.ndarray, model: Model, field: str) -> np.ndarray:
    """Token grid(s) [h, w] or [N, h, w] -> [N, h, w], every token in [0, K)."""
    k = 0 if model.codebook is None else int(model.codebook.shape[0])
    if tokens.ndim == 2:
        tokens = tokens[None]
    if tokens.ndim != 3:
        raise InvalidInput(
            f"{field} must be a grid [h, w] or grids [n, h, w]; got {tokens.ndim} axes", field=field
        )
    if tokens.min() < 0 or tokens.max() >= k:
        raise InvalidInput(f"{field} holds tokens outside [0, {k})", field=field)
    return tokens


def _check_output(
    model: Model, m: Manifest, settings: Settings, input_name: str, shape: tuple[int, ...]
) -> None:
    """The request limits for what a latent or token request will decode, checked before running it:
    at most MAX_IMAGES images and MAX_PIXELS pixels in all."""
    assert model.adapter is not None
    if shape[0] > settings.max_images:
        raise InvalidInput(
            f"{shape[0]} {input_name} items in one request; the limit is {settings.max_images}",
            field=input_name,
        )
    pixels = model.adapter.pixels(m, input_name, list(shape))
    if pixels > settings.max_pixels:
        raise PayloadTooLarge(
            f"{input_name} of shape {list(shape)} decodes to {pixels} pixels; "
            f"the limit is {settings.max_pixels}",
            field=input_name,
        )


def _psnr(x: float) -> float | None:
    return None if math.isinf(x) else x  # JSON has no infinity: identical images give null


@router.post(
    "/reconstruct",
    summary="Reconstruct an image",
    openapi_extra=_body({"image": "The image"}),
    responses={
        200: {
            "content": {"image/png": {}, "application/json": {}},
            "description": "PNG (default) or JSON with base64 PNG, MSE and PSNR",
        }
    },
)
async def reconstruct(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    format: Annotated[Literal["png", "json"] | None, Query(description="png, or json (also Accept)")] = None,
) -> Response:
    """Encode and decode one image. JSON adds MSE and PSNR (dB, peak 1) against the fitted input.
    MAE reconstructs as trained: a fixed seeded 75% mask, visible patches kept, the rest predicted."""
    model = serving(request, registry, name)
    m, adapter = model.require("reconstruct")
    upload = await read_upload(request, max_images=settings.max_images)
    x, fitted = await _fitted([upload.one("image")], m, model, settings, fit, "image")
    recon = await adapter.reconstruct(model, x)
    if _wants(request, format, "png") == "json":
        mse, psnr = mse_psnr(x[0], recon[0])
        return JSONResponse(
            {"image": _b64png(recon[0]), "mse": mse, "psnr": _psnr(psnr), "fit": fitted[0].description},
            headers=_fit_header([fitted[0].description]),
        )
    return await _png(recon[0], fitted[0].description)


@router.post(
    "/encode",
    summary="Encode an image (or many) to latents",
    openapi_extra=_body(
        {"image": "One image", "images": "Many images: repeat the field; arrays gain a leading axis"},
        required=(),
    ),
    responses={
        200: {
            "content": {"application/json": {}, "application/x-npy": {}},
            "description": "JSON (default) or .npy of the main array",
        }
    },
)
async def encode(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    format: Annotated[
        Literal["json", "npy"],
        Query(
            description="json, or npy: the main array "
            "(VAE: the sample if requested, else the mean; VQ-VAE: tokens; MAE: embedding)"
        ),
    ] = "json",
    sample: Annotated[bool, Query(description="VAE kinds: add z = mean + exp(logvar/2)*eps")] = False,
    seed: SeedQuery = 0,
    z_e: Annotated[
        bool, Query(description="VQ-VAE: add z_e, the continuous latent [D, h, w] (D floats per token)")
    ] = False,
) -> Response:
    """VAE kinds: {"mean", "logvar"} (and "sample"); VQ-VAE: {"tokens": [[...]], "codebook_size"} (and "z_e");
    MAE: {"embedding"}. One image under `image`; many under `images` (repeated), and then every array
    has a leading axis, one row per image in upload order, and `fit` is a list. A row is what that image
    alone would give (a sample's eps is drawn from `seed` for each image the same way)."""
    model = serving(request, registry, name)
    m, adapter = model.require("encode")
    if sample and not isinstance(adapter, VAEAdapter):
        raise InvalidInput(f"sample=true applies to the VAE kinds, not {m.kind}", field="sample")
    if z_e and not isinstance(adapter, VQVAEAdapter):
        raise InvalidInput(f"z_e=true applies to the VQ-VAE, not {m.kind}", field="z_e")
    upload = await read_upload(request, fields=("image", "images"), max_images=settings.max_images)
    many = upload.images("images", required=False)
    if many and upload.images("image", required=False):
        raise InvalidInput("send one image as 'image' or many as 'images', not both", field="images")
    field = "images" if many else "image"
    x, fitted = await _fitted(many or [upload.one("image")], m, model, settings, fit, field)
    arrays = await adapter.encode(model, x)
    if not z_e:
        arrays.pop("z_e", None)
    if sample:
        mean, logvar = arrays["mean"], arrays["logvar"]
        arrays["sample"] = np.concatenate(
            [
                reparameterize(mean[i : i + 1], logvar[i : i + 1], np.random.default_rng(seed))
                for i in range(len(x))
            ]
        )
    fits = [f.description for f in fitted]
    headers = _fit_header(fits)
    rows = (lambda a: a) if many else (lambda a: a[0])  # many: keep the leading axis
    if format == "npy":
        main = "sample" if sample else next(iter(arrays))
        return _npy(rows(arrays[main]), headers | {"X-Array": main})

    def render() -> JSONResponse:
        body: dict[str, Any] = {k: rows(v).tolist() for k, v in arrays.items()}
        if model.codebook is not None:
            body["codebook_size"] = int(model.codebook.shape[0])
        if sample:
            body["seed"] = seed
        body["fit"] = fits if many else fits[0]
        return JSONResponse(body, headers=headers)

    # JSON for a full photograph's arrays (z_e: tens of MB) is seconds of work
    return await off_loop(sum(a.size for a in arrays.values()), INLINE_MAX_VALUES, render)


_DECODE_SCHEMA = {
    "type": "object",
    "properties": {
        "latent": {"type": "array", "items": {}, "description": "VAE kinds: [Z] or [N, Z]"},
        "tokens": {"type": "array", "items": {}, "description": "VQ-VAE: [h, w] or [N, h, w] token ids"},
    },
}


@router.post(
    "/decode",
    summary="Decode a latent or a token grid to an image",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _DECODE_SCHEMA}}}
    },
    responses=_PNG,
)
async def decode(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    format: Annotated[Literal["png", "json"] | None, Query(description="png, or json (base64 PNGs)")] = None,
) -> Response:
    """VAE kinds: {"latent": [...]}; VQ-VAE: {"tokens": [[...]]}. Several latents give a PNG grid.
    Wrong shapes, NaN/inf and out-of-range tokens -> 422 naming the field."""
    model = serving(request, registry, name)
    m, adapter = model.require("decode")
    upload = await read_upload(request, max_images=settings.max_images, allow_json=True)
    if not isinstance(upload.json, dict):
        raise InvalidInput("send a JSON object", field="body")
    if isinstance(adapter, VQVAEAdapter):
        tokens = _check_tokens(await _json_array(upload, "tokens", np.int64), model, "tokens")
        _check_output(model, m, settings, "tokens", tokens.shape)
        images = await adapter.decode_tokens(model, tokens)
    else:
        z = await _json_array(upload, "latent", np.float32)
        zdim = adapter.latent_shape(m, m.height, m.width)[0]
        given = list(z.shape)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != zdim:
            raise InvalidInput(f"latent has shape {given}; expected [{zdim}] or [n, {zdim}]", field="latent")
        _check_output(model, m, settings, "latent", z.shape)
        images = await adapter.from_latent(model, z)
    if _wants(request, format, "png") == "json":
        return JSONResponse({"images": await off_loop(images.size, INLINE_MAX_VALUES, _b64pngs, images)})
    columns = math.ceil(math.sqrt(len(images)))
    return await _png(images[0] if len(images) == 1 else imaging.grid(images, columns))


async def _endpoints(
    upload: Upload, m: Manifest, model: Model, settings: Settings, fit: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The two continuous latents of an interpolation, from JSON latents or from two images."""
    assert model.adapter is not None
    if upload.json is not None:
        if not isinstance(upload.json, dict):
            raise InvalidInput("send a JSON object with start and end", field="body")
        za = _check_latent(await _json_array(upload, "start", np.float32), m, model, "start")
        zb = _check_latent(await _json_array(upload, "end", np.float32), m, model, "end")
        if za.shape != zb.shape:
            raise InvalidInput("start and end latents differ in shape", field="end")
        return za[0], zb[0], []
    xa, fa = await _fitted([upload.one("start")], m, model, settings, fit, "start")
    xb, fb = await _fitted([upload.one("end")], m, model, settings, fit, "end")
    if xa.shape != xb.shape:
        raise InvalidInput("start and end kept at different sizes (fit=none); send one size", field="end")
    z = await model.adapter.to_latent(model, np.concatenate([xa, xb]))
    return z[0], z[1], [f.description for f in (*fa, *fb)]


@router.post(
    "/interpolate",
    summary="Interpolate between two images or latents",
    openapi_extra=_body(
        {"start": "First image", "end": "Last image"},
        required=("start", "end"),
        raw=False,
        json_schema={
            "type": "object",
            "properties": {"start": {"type": "array", "items": {}}, "end": {"type": "array", "items": {}}},
        },
    ),
    responses={
        200: {
            "content": {"image/png": {}, "image/gif": {}, "image/webp": {}, "application/json": {}},
            "description": "A PNG strip, an animated GIF/WebP, or JSON frames",
        }
    },
)
async def interpolate_route(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    steps: Annotated[int, Query(ge=2, description="Frames, both ends included (<= AESERVE_MAX_STEPS)")] = 8,
    method: Annotated[Literal["lerp", "slerp"], Query(description="Linear or spherical")] = "lerp",
    format: Annotated[
        Literal["png", "gif", "webp", "json"] | None,
        Query(description="png strip, gif, webp (animated), json (base64 PNG frames)"),
    ] = None,
) -> Response:
    """VAE kinds interpolate the encoder mean; VQ-VAE interpolates the continuous encoder output z_e and
    runs decoder_continuous (quantize, decode) on each step."""
    model = serving(request, registry, name)
    m, adapter = model.require("interpolate")
    if steps > settings.max_steps:
        raise InvalidInput(f"steps {steps} exceeds the limit {settings.max_steps}", field="steps")
    upload = await read_upload(
        request, fields=("start", "end"), max_images=settings.max_images, allow_json=True
    )
    za, zb, fits = await _endpoints(upload, m, model, settings, fit)
    _check_output(model, m, settings, "z_e" if za.ndim == 3 else "latent", (steps, *za.shape))
    frames = await adapter.from_latent(model, interpolate(za, zb, steps, method))
    headers = _fit_header(fits)
    chosen = _wants(request, format, "png")
    if chosen == "json":
        encoded = await off_loop(frames.size, INLINE_MAX_VALUES, _b64pngs, frames)
        return JSONResponse(
            {"frames": encoded, "steps": steps, "method": method, "fit": fits}, headers=headers
        )
    if chosen in ("gif", "webp"):
        animation = await off_loop(frames.size, INLINE_MAX_VALUES, imaging.animation_bytes, frames, chosen)
        return Response(animation, media_type=f"image/{chosen}", headers=headers)
    grid = await off_loop(
        frames.size, INLINE_MAX_VALUES, lambda: imaging.png_bytes(imaging.grid(frames, steps))
    )
    return Response(grid, media_type="image/png", headers=headers)


@router.post(
    "/inpaint",
    summary="Fill masked patches (MAE)",
    openapi_extra=_body({"image": "The image", "mask": "Optional PNG, white = missing"}, raw=True),
    responses={
        200: {
            "content": {"image/png": {}, "application/json": {}},
            "description": "PNG (default) or JSON with the patch mask and per-patch error",
        }
    },
)
async def inpaint(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    mask_ratio: Annotated[
        float | None,
        Query(gt=0, lt=1, description="Random patches to remove (when no mask field; default 0.75)"),
    ] = None,
    seed: SeedQuery = 0,
    format: Annotated[Literal["png", "json"] | None, Query(description="png, or json")] = None,
) -> Response:
    """Visible pixels stay the original's; missing patches come from the reconstruct graph. A mask
    image (same size as the image, white = missing) removes every patch it touches."""
    model = serving(request, registry, name)
    m, adapter = model.require("inpaint")
    assert isinstance(adapter, MAEAdapter)
    upload = await read_upload(request, fields=("image", "mask"), max_images=settings.max_images)
    x, fitted = await _fitted([upload.one("image")], m, model, settings, fit, "image")
    mask_bytes = upload.optional("mask")
    p, length = adapter.patch(m), adapter.num_patches(m)
    if mask_bytes is not None:
        if mask_ratio is not None:
            raise InvalidInput("send either a mask image or mask_ratio, not both", field="mask_ratio")
        mask = await run_in_threadpool(
            imaging.load_mask,
            mask_bytes,
            height=m.height,
            width=m.width,
            mode=fit,
            max_pixels=settings.max_pixels,
        )
        if mask.source_size != fitted[0].source_size:
            raise InvalidInput(
                f"mask is {mask.source_size}, image is {fitted[0].source_size}; sizes must match",
                field="mask",
            )
        masks = patch_mask_from_pixels(mask.array[0] >= 0.5, p)[None]
        source = "mask image"
    else:
        ratio = 0.75 if mask_ratio is None else mask_ratio
        masks = random_patch_masks(1, length, ratio, np.random.default_rng(seed))
        source = f"random patches, mask_ratio {ratio}, seed {seed}"
    prediction = await adapter.predict(model, x, masks)
    filled = compose_inpaint(x, prediction, masks, p)
    if _wants(request, format, "png") == "json":
        grid_shape = (m.height // p, m.width // p)
        return JSONResponse(
            {
                "image": _b64png(filled[0]),
                "mask": masks[0].reshape(grid_shape).astype(int).tolist(),
                "patch_error": per_patch_mse(x, prediction, p)[0].reshape(grid_shape).tolist(),
                "masked_patches": int(masks.sum()),
                "mask_source": source,
                "fit": fitted[0].description,
            },
            headers=_fit_header([fitted[0].description]),
        )
    return await _png(filled[0], fitted[0].description)


def _many(upload: Upload) -> list[bytes]:
    return upload.images("images", required=False) + upload.images("image", required=False)


@router.post(
    "/tokens",
    summary="Token grids of many images (VQ-VAE)",
    openapi_extra=_body({"images": "Repeat the field for each image"}, required=("images",)),
    responses={
        200: {
            "content": {"application/json": {}, "application/x-npy": {}},
            "description": "JSON grids or one stacked int64 .npy [N, h, w]",
        }
    },
)
async def tokens(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    format: Annotated[Literal["json", "npy"], Query(description="json or npy (int64 [N, h, w])")] = "json",
) -> Response:
    """How to build a data set for a downstream generator: one token grid per uploaded image."""
    model = serving(request, registry, name)
    m, adapter = model.require("tokens")
    upload = await read_upload(
        request, fields=("images", "image"), max_images=settings.max_images, raw_field="images"
    )
    x, fitted = await _fitted(_many(upload), m, model, settings, fit, "images")
    grids = (await adapter.encode(model, x))["tokens"]
    fits = [f.description for f in fitted]
    if format == "npy":
        return _npy(grids.astype(np.int64), _fit_header(fits))
    assert model.codebook is not None
    return JSONResponse(
        {
            "tokens": grids.tolist(),
            "shape": list(grids.shape),
            "codebook_size": int(model.codebook.shape[0]),
            "fit": fits,
        },
        headers=_fit_header(fits),
    )


@router.post("/sample", summary="Images from the prior (VAE kinds)", responses=_PNG)
async def sample(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    n: Annotated[int, Query(ge=1, description="How many images")] = 16,
    seed: SeedQuery = 0,
    format: Annotated[Literal["png", "json"] | None, Query(description="png grid, or json")] = None,
) -> Response:
    """z ~ N(0, I) from numpy's default_rng(seed), decoded; the same seed gives the same images."""
    model = serving(request, registry, name)
    m, adapter = model.require("sample")
    if n > settings.max_samples:
        raise InvalidInput(f"n {n} exceeds the limit {settings.max_samples}", field="n")
    z = sample_prior(n, adapter.latent_shape(m, m.height, m.width)[0], np.random.default_rng(seed))
    images = await adapter.from_latent(model, z)
    if _wants(request, format, "png") == "json":
        return JSONResponse({"images": [_b64png(i) for i in images], "latents": z.tolist(), "seed": seed})
    return await _png(imaging.grid(images, math.ceil(math.sqrt(n))))


@router.post(
    "/traverse",
    summary="Sweep each latent dimension (VAE kinds)",
    openapi_extra=_body(
        {"image": "Optional: traverse around this image's code"}, required=(), body_required=False
    ),
    responses=_PNG,
)
async def traverse_route(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    low: Annotated[float, Query(ge=-100, le=100, description="First value of each dimension")] = -3.0,
    high: Annotated[float, Query(ge=-100, le=100, description="Last value of each dimension")] = 3.0,
    steps: Annotated[int, Query(ge=2, description="Values per dimension (at most AESERVE_MAX_STEPS)")] = 7,
    dims: Annotated[str | None, Query(description="Comma-separated dimensions (default: all)")] = None,
    format: Annotated[Literal["png", "json"] | None, Query(description="png grid, or json")] = None,
) -> Response:
    """One grid row per dimension, sweeping it from low to high around the image's mean code (or
    around zero when no image is sent)."""
    model = serving(request, registry, name)
    m, adapter = model.require("traverse")
    if steps > settings.max_steps:
        raise InvalidInput(f"steps {steps} exceeds the limit {settings.max_steps}", field="steps")
    zdim = adapter.latent_shape(m, m.height, m.width)[0]
    try:
        chosen = list(range(zdim)) if dims is None else [int(d) for d in dims.split(",") if d.strip()]
    except ValueError as exc:
        raise InvalidInput("dims must be comma-separated integers", field="dims") from exc
    if not chosen or any(not 0 <= d < zdim for d in chosen):
        raise InvalidInput(f"dims must lie in [0, {zdim})", field="dims")
    if len(set(chosen)) != len(chosen):
        raise InvalidInput("dims names a dimension twice", field="dims")
    count = len(chosen) * steps  # the grid's images, each decoded at the model's size
    if count > settings.max_images:
        raise PayloadTooLarge(
            f"{len(chosen)} dims x {steps} steps decode to {count} images; the limit is "
            f"{settings.max_images} (AESERVE_MAX_IMAGES): ask for fewer dims or steps",
            field="dims",
        )
    if (pixels := adapter.pixels(m, "latent", [count, zdim])) > settings.max_pixels:
        raise PayloadTooLarge(
            f"{len(chosen)} dims x {steps} steps decode to {count} images, {pixels} pixels; the limit is "
            f"{settings.max_pixels} (AESERVE_MAX_PIXELS): ask for fewer dims or steps",
            field="dims",
        )
    upload = await read_upload(request, max_images=settings.max_images, allow_empty=True)
    fits: list[str] = []
    image = upload.optional("image")
    if image is not None:
        x, fitted = await _fitted([image], m, model, settings, fit, "image")
        z0 = (await adapter.to_latent(model, x))[0]
        fits = [fitted[0].description]
    else:
        z0 = np.zeros(zdim, np.float32)
    rows = traverse(z0, low, high, steps).reshape(zdim, steps, zdim)[chosen].reshape(-1, zdim)
    images = await adapter.from_latent(model, rows)
    if _wants(request, format, "png") == "json":
        encoded = await off_loop(images.size, INLINE_MAX_VALUES, _b64pngs, images)
        return JSONResponse(
            {
                "dims": chosen,
                "values": np.linspace(low, high, steps).tolist(),
                "images": [encoded[r * steps : (r + 1) * steps] for r in range(len(chosen))],
                "fit": fits,
            },
            headers=_fit_header(fits),
        )
    response = await _png(imaging.grid(images, steps))
    response.headers.update(_fit_header(fits))
    return response


@router.post(
    "/score",
    summary="Per-image anomaly score",
    openapi_extra=_body({"image": "One image; repeat the field (or use images) for several"}),
    responses={200: {"description": "JSON scores with the method used"}},
)
async def score(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    fit: FitQuery = "center-crop",
    samples: Annotated[
        int | None,
        Query(
            ge=0,
            le=64,
            description="VAE kinds: 0 = one pass with eps=0 "
            "(default), k = mean over k seeded samples. MAE: 0 = plain reconstruction MSE, k = mean "
            "masked-patch MSE over k seeded 75% masks (default 4). VQ-VAE: ignored.",
        ),
    ] = None,
    seed: SeedQuery = 0,
) -> dict[str, Any]:
    """Higher is more anomalous. VAE kinds: negative ELBO in bits/dim (elbo graph). VQ-VAE:
    reconstruction MSE. MAE: masked-patch MSE (or reconstruction MSE with samples=0). The response
    says which."""
    model = serving(request, registry, name)
    m, adapter = model.require("score")
    upload = await read_upload(request, fields=("image", "images"), max_images=settings.max_images)
    k = samples if samples is not None else (4 if isinstance(adapter, MAEAdapter) else 0)
    count = len(_many(upload))
    if count * max(k, 1) > settings.max_images:  # every sample is one more image through the graph
        raise InvalidInput(
            f"{count} images x {max(k, 1)} samples = {count * max(k, 1)} model inputs; "
            f"the limit is {settings.max_images}",
            field="samples",
        )
    x, fitted = await _fitted(_many(upload), m, model, settings, fit, "image")
    result = await adapter.score(model, x, samples=k, seed=seed)
    return {
        "scores": result.values.tolist(),
        "method": result.method,
        "unit": result.unit,
        "fit": [f.description for f in fitted],
    }

"""Non-learned baselines the models are measured against, on the very same inputs.

- inpainting (MAE): fill the removed patches with the mean of the visible pixels, or with OpenCV's
  Telea inpainting;
- compression (VQ-VAE tokens): JPEG and WebP from Pillow at the largest quality that fits a byte budget.

Images are float `[N, C, H, W]` (or one `[C, H, W]`) in `[0, 1]`, as everywhere in evaluation.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


def mean_fill(images: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """Replace the masked pixels by the mean of the visible ones, per image and per channel.

    images `[N, C, H, W]`; pixel_mask `[N, 1, H, W]`, 1 = removed. Returns float32 `[N, C, H, W]`.
    """
    keep = 1.0 - pixel_mask.astype(np.float64)
    visible = keep.sum(axis=(2, 3))  # [N, 1]
    if np.any(visible == 0):
        raise ValueError("mean_fill needs at least one visible pixel per image")
    means = (images.astype(np.float64) * keep).sum(axis=(2, 3)) / visible  # [N, C]
    filled = images * keep + means[:, :, None, None] * (1.0 - keep)
    return filled.astype(np.float32)


def telea_fill(images: np.ndarray, pixel_mask: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """OpenCV `cv2.inpaint(..., INPAINT_TELEA)` of the masked pixels, image by image.

    OpenCV inpaints 8-bit images, so each image is rounded to uint8 first (as a user of the baseline
    would feed it); the mask is the removed patches, whose pixels are blanked first: Telea's gradient
    term reads neighbours not yet filled, so it would otherwise see some of what it must guess.
    Returns float32 `[N, C, H, W]` in `[0, 1]`.
    """
    out = np.empty(images.shape, dtype=np.float32)
    for i, (img, m) in enumerate(zip(images, pixel_mask, strict=True)):
        hwc = np.clip(np.rint(np.moveaxis(img, 0, -1) * 255.0), 0, 255).astype(np.uint8)
        hidden = m[0] > 0.5
        hwc[hidden] = 0
        mask8 = hidden.astype(np.uint8) * 255
        src = hwc[:, :, 0] if hwc.shape[2] == 1 else np.ascontiguousarray(hwc)
        filled = cv2.inpaint(src, mask8, radius, cv2.INPAINT_TELEA)
        out[i] = np.moveaxis(filled.reshape(hwc.shape), -1, 0).astype(np.float32) / 255.0
    return out


@dataclass(frozen=True)
class CodecResult:
    """One image coded by a standard codec at a byte budget."""

    codec: str  # "jpeg" or "webp"
    quality: int | None  # the chosen quality; None when even the lowest quality exceeds the budget
    bytes: int  # size of the encoded file (at quality 1 when the budget is unreachable)
    decoded: np.ndarray  # float32 [C, H, W] in [0, 1]: what the decoder gives back

    @property
    def within_budget(self) -> bool:
        return self.quality is not None


def encode_at_budget(image: np.ndarray, codec: str, max_bytes: int) -> CodecResult:
    """Code one image `[C, H, W]` with JPEG or WebP at the highest quality whose file fits `max_bytes`.

    Quality 1..100 is searched by bisection: file size grows with quality for these codecs (checked in
    the tests on photographs), so bisection finds the largest fitting quality in 7 encodes.
    """
    pil = _to_pil(image)
    lo, hi, best = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = _encode(pil, codec, q)
        if len(data) <= max_bytes:
            best, lo = (q, data), q + 1
        else:
            hi = q - 1
    if best is None:
        data = _encode(pil, codec, 1)
        return CodecResult(codec, None, len(data), _decode(data, image.shape[0]))
    return CodecResult(codec, best[0], len(best[1]), _decode(best[1], image.shape[0]))


def _to_pil(image: np.ndarray) -> Image.Image:
    hwc = np.clip(np.rint(np.moveaxis(image, 0, -1) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)


def _encode(pil: Image.Image, codec: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if codec == "jpeg":
        pil.save(buf, format="JPEG", quality=quality)
    elif codec == "webp":
        pil.save(buf, format="WEBP", quality=quality, method=6)
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return buf.getvalue()


def _decode(data: bytes, channels: int) -> np.ndarray:
    pil = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)

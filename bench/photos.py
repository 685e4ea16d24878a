"""Request payloads: PNG crops of scikit-image's bundled photographs at a model's input size.

Real photographs, so PNG decode and encode cost what they cost on real uploads (noise or flat images
compress very differently). `BENCH_PHOTOS=<folder>` reads the photographs from a folder instead (the GPU
machine has no scikit-image; bench/gpu_check.sh carries the same files there).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def photo_files() -> list[Path]:
    """The photographs: $BENCH_PHOTOS/*.png|jpg, else the training data set's (scikit-image's files)."""
    if os.environ.get("BENCH_PHOTOS"):
        folder = Path(os.environ["BENCH_PHOTOS"])
        return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    from training.data.photos import TRAIN_PHOTOS, VAL_PHOTOS, photo_folder

    return [photo_folder() / name for name in (*TRAIN_PHOTOS, *VAL_PHOTOS)]


def crops(n: int, height: int, width: int, channels: int, *, seed: int = 0) -> list[Image.Image]:
    """n random crops (RGB, or L for channels=1), cycling through the photographs."""
    rng = np.random.default_rng(seed)
    photos = []
    for path in photo_files():
        with Image.open(path) as im:
            photos.append(im.convert("RGB" if channels == 3 else "L"))
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        x = int(rng.integers(0, photo.width - width + 1))
        y = int(rng.integers(0, photo.height - height + 1))
        out.append(photo.crop((x, y, x + width, y + height)))
    return out


def png_crops(n: int, height: int, width: int, channels: int, *, seed: int = 0) -> list[bytes]:
    """n crops as PNG files (bytes)."""
    encoded = []
    for img in crops(n, height, width, channels, seed=seed):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        encoded.append(buf.getvalue())
    return encoded


def arrays(n: int, height: int, width: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """n crops as float32 [n, C, H, W] in [0, 1] (the graphs' input)."""
    a = np.stack(
        [np.asarray(img, np.float32) / 255.0 for img in crops(n, height, width, channels, seed=seed)]
    )
    return np.ascontiguousarray(a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2))

"""`shapes`: a procedural dSprites (Matthey et al., 2017), rendered on the fly.

3 shapes x 6 scales x 40 orientations x 32 x 32 positions = 737,280 binary images, indexed like the
original: the flat index is row-major over (shape, scale, orientation, pos_x, pos_y), pos_y fastest.
Nothing is cached: an image is a few vectorized numpy comparisons on a [S, S] grid (tens of µs).

Geometry (coordinates normalized to [0, 1], x = column, y = row, y pointing down):
  - a shape's "radius" is 0.16 * scale, and every shape fits inside that disk; centres run over
    0.18 ... 0.82, so the whole sprite stays inside the frame at every scale and orientation;
  - orientation rotates the sprite by theta (counter-clockwise on screen);
  - square: half-side 0.7 R; ellipse: semi-axes R and R/2 (long axis along x at theta = 0);
    heart: the curve (x² + y² − 1)³ = x² y³, tip pointing down at theta = 0.
"""

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.convert import to_tensor

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280

# The value of each factor's classes; shape's "value" is its class index.
FACTOR_VALUES: tuple[np.ndarray, ...] = (
    np.arange(3, dtype=np.float64),
    np.linspace(0.5, 1.0, 6),
    np.arange(40) * (2 * math.pi / 40),  # [0, 2π), 40 steps
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)

_RADIUS = 0.16  # sprite radius at scale 1, as a fraction of the image side
_MARGIN = 0.18  # centre range [_MARGIN, 1 - _MARGIN]: a pixel clear of the border at S = 64
VAL_FRACTION = 0.05
_SPLIT_SEED = 20170301  # fixed, so the held-out images never depend on a run's seed


def classes_of(indices: np.ndarray | int) -> np.ndarray:
    """Flat indices [N] -> factor classes int64 [N, 5] in FACTOR_NAMES order."""
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= NUM_IMAGES):
        raise IndexError(f"shapes index out of range [0, {NUM_IMAGES})")
    return np.stack(np.unravel_index(flat, FACTOR_SIZES), axis=1).astype(np.int64)


def indices_of(classes: np.ndarray) -> np.ndarray:
    """Factor classes int64 [N, 5] -> flat indices int64 [N] (inverse of `classes_of`)."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    return np.asarray(np.ravel_multi_index(tuple(classes.T), FACTOR_SIZES), dtype=np.int64)


def values_of(classes: np.ndarray) -> np.ndarray:
    """Factor classes int64 [N, 5] -> factor values float64 [N, 5] (scale, radians, [0, 1] positions)."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    return np.stack([FACTOR_VALUES[j][classes[:, j]] for j in range(len(FACTOR_SIZES))], axis=1)


def sample_indices(n: int, rng: np.random.Generator, *, pool: np.ndarray | None = None) -> np.ndarray:
    """`n` flat indices drawn uniformly with replacement (from `pool` if given), int64 [n]."""
    drawn = rng.integers(0, NUM_IMAGES if pool is None else len(pool), size=n, dtype=np.int64)
    return drawn if pool is None else np.asarray(pool[drawn], dtype=np.int64)


def render(classes: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Rasterize sprites: factor classes int64 [N, 5] -> binary uint8 images [N, S, S] (0 or 1).

    A pixel is on when its centre lies inside the shape (no anti-aliasing: the data are binary).
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    values = values_of(classes)
    values = values.astype(np.float32)  # float32 halves the work; the grid is coarse anyway
    radius = _RADIUS * values[:, 1]  # [N]
    theta = values[:, 2]
    centre_x = _MARGIN + values[:, 3] * (1 - 2 * _MARGIN)
    centre_y = _MARGIN + values[:, 4] * (1 - 2 * _MARGIN)
    grid = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    # Offsets of every pixel centre from the sprite centre, in units of the radius: [N, S, S].
    dx = (grid[None, None, :] - centre_x[:, None, None]) / radius[:, None, None]
    dy = (grid[None, :, None] - centre_y[:, None, None]) / radius[:, None, None]
    # Into the sprite's own frame: undo a counter-clockwise-on-screen rotation (y points down).
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    lx = cos * dx - sin * dy
    ly = sin * dx + cos * dy
    out = np.zeros(lx.shape, dtype=bool)
    for shape_id, inside in enumerate((_square, _ellipse, _heart)):
        rows = classes[:, 0] == shape_id
        if rows.any():
            out[rows] = inside(lx[rows], ly[rows])
    return out.astype(np.uint8)


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) <= 0.7


def _ellipse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x**2 + (y / 0.5) ** 2 <= 1.0


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The curve spans x in ±1.14, y in [-1, 1.24] (y up); scale by 1.25 and lift by 0.12 so that
    # it is centred and fits the unit disk. Screen y points down, so flip it.
    hx = x * 1.25
    hy = -y * 1.25 + 0.12
    return (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0


def split_indices(split: str) -> np.ndarray:
    """The flat indices of `split` ("train", "val" or "all"), int64, sorted.

    A fixed seeded permutation holds out VAL_FRACTION (5 %, 36,864 images) for validation.
    """
    if split == "all":
        return np.arange(NUM_IMAGES, dtype=np.int64)
    permutation = np.random.default_rng(_SPLIT_SEED).permutation(NUM_IMAGES)
    n_val = round(NUM_IMAGES * VAL_FRACTION)
    chosen = permutation[:n_val] if split == "val" else permutation[n_val:]
    return np.sort(chosen).astype(np.int64)


class ShapesDataset(Dataset[torch.Tensor]):
    """dSprites images of one split as float32 [channels, S, S] tensors with values in {0, 1}.

    Item `i` is the image with flat index `self.indices[i]`; `factors(i)` gives its ground truth.
    """

    def __init__(self, split: str = "train", *, image_size: int = 64, channels: int = 1) -> None:
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be train, val or all, not {split!r}")
        self.split = split
        self.image_size = image_size
        self.channels = channels
        self.indices = split_indices(split)  # int64 [len], about 5.6 MB for the train split

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = render(classes_of(self.indices[i]), self.image_size)[0]
        return to_tensor(image * np.uint8(255), self.channels)

    def images(self, flat_indices: np.ndarray) -> torch.Tensor:
        """Render many flat (not split-relative) indices at once: float32 [N, channels, S, S]."""
        batch = render(classes_of(flat_indices), self.image_size).astype(np.float32)
        tensor = torch.from_numpy(batch)[:, None]
        return tensor.expand(-1, self.channels, -1, -1).contiguous()

    def factors(self, i: int) -> dict[str, dict[str, float | int]]:
        """Ground truth of item `i`: {"classes": {name: int}, "values": {name: float}}."""
        classes = classes_of(self.indices[i])
        values = values_of(classes)[0]
        return {
            "classes": dict(zip(FACTOR_NAMES, (int(c) for c in classes[0]), strict=True)),
            "values": dict(zip(FACTOR_NAMES, (float(v) for v in values), strict=True)),
        }

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` flat indices drawn uniformly from this split, int64 [n]."""
        return sample_indices(n, rng, pool=self.indices)

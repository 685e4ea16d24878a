"""Data sets for training and evaluation.

`make_dataset(spec, split)` is the one entry point: `spec` is `shapes` (procedural dSprites, gray),
`photos` (crops of scikit-image's bundled photographs, RGB) or a folder of images (RGB). The names
win over a folder of the same name; write `./shapes` to mean the folder.
"""

from pathlib import Path

from training.data.folder import FolderDataset
from training.data.photos import PhotosDataset
from training.data.shapes import ShapesDataset
from training.errors import UserError

BUILTIN = ("shapes", "photos")
ImageDataset = ShapesDataset | PhotosDataset | FolderDataset
SPLITS = ("train", "val")

__all__ = [
    "BUILTIN",
    "FolderDataset",
    "ImageDataset",
    "PhotosDataset",
    "ShapesDataset",
    "default_channels",
    "make_dataset",
]


def default_channels(spec: str) -> int:
    """The channel count a data set has natively: 1 for shapes, 3 for photos and folders."""
    return 1 if spec == "shapes" else 3


def make_dataset(
    spec: str | Path,
    split: str,
    *,
    image_size: int = 64,
    channels: int | None = None,
    seed: int = 0,
    length: int | None = None,
) -> ImageDataset:
    """The `split` ("train" or "val") of data set `spec`; items are float32 [C, S, S] in [0, 1].

    channels: 1 or 3, converting gray <-> RGB as needed (None: the data set's own, see
    `default_channels`). seed: the photos' crop stream (the shapes and folder splits are fixed).
    length: crops per epoch for `photos` (ignored by the others). Raises `UserError` for a bad path.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    spec = str(spec)
    channels = default_channels(spec) if channels is None else channels
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if spec == "shapes":
        return ShapesDataset(split, image_size=image_size, channels=channels)
    if spec == "photos":
        return PhotosDataset(split, image_size=image_size, channels=channels, seed=seed, length=length)
    if not spec.strip():  # Path("") is the current directory: never scan it by accident
        raise UserError("data is empty; give shapes, photos or a folder of images")
    return FolderDataset(Path(spec).expanduser(), split, image_size=image_size, channels=channels)

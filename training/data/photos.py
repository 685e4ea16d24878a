"""`photos`: random crops of the natural colour photographs that ship inside scikit-image.

Only files lying in the installed `skimage/data` folder are used (no download). The split is by
source photograph, never by crop, so no validation crop shares pixels with a training crop:

  train: astronaut, coffee, motorcycle_left, motorcycle_right, hubble_deep_field, retina, ihc
  val:   chelsea, rocket

The two motorcycle views are a stereo pair of one scene, so they stay together in train. The gray
pictures (camera, coins, moon, ...) are left out: the set is RGB throughout.

A crop: pick a photo uniformly, a square side log-uniform in [image_size, min(H, W) / 2] (scale
jitter: from native resolution to a half-photo view), a uniform position, a horizontal flip with
p = 0.5, then resize to image_size (Pillow's antialiased bilinear). Crop i of epoch e is drawn from
a generator seeded by (seed, e, i), so runs replay exactly; the validation crops use a fixed seed.
"""

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from training.data.convert import to_tensor

TRAIN_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)
VAL_PHOTOS = ("chelsea.png", "rocket.jpg")
DEFAULT_EPOCH_CROPS = 10_000  # one "epoch" of training crops
DEFAULT_VAL_CROPS = 512
_VAL_SEED = 1_000_003  # fixed: validation crops never depend on a run's seed


def photo_folder() -> Path:
    """The folder of scikit-image's bundled data files."""
    import skimage.data  # imported here: only this data set needs scikit-image

    return Path(skimage.data.__file__).parent


@functools.cache
def _load(name: str) -> Image.Image:
    # Decoded once per process (about 20 MB for all nine); crops then work on the PIL image.
    with Image.open(photo_folder() / name) as image:
        return image.convert("RGB")


class PhotosDataset(Dataset[torch.Tensor]):
    """Crops of one split's photographs as float32 [channels, S, S] tensors in [0, 1].

    `length` crops make an epoch; call `set_epoch(e)` to draw epoch e's crops (train only).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int = 64,
        channels: int = 3,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, not {split!r}")
        self.split = split
        self.names = TRAIN_PHOTOS if split == "train" else VAL_PHOTOS
        self.image_size = image_size
        self.channels = channels
        self.seed = seed if split == "train" else _VAL_SEED
        self.length = length or (DEFAULT_EPOCH_CROPS if split == "train" else DEFAULT_VAL_CROPS)
        self.epoch = 0
        self.photos = [_load(name) for name in self.names]

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of crops for `epoch` (validation crops stay fixed)."""
        if self.split == "train":
            self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        photo = self.photos[int(rng.integers(len(self.photos)))]
        return to_tensor(self._crop(photo, rng), self.channels)

    def _crop(self, photo: Image.Image, rng: np.random.Generator) -> np.ndarray:
        """One random square crop of `photo`, resized: uint8 [S, S, 3]."""
        width, height = photo.size
        smallest = min(self.image_size, width, height)
        largest = max(smallest, min(width, height) // 2)
        side = int(round(np.exp(rng.uniform(np.log(smallest), np.log(largest)))))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        size = (self.image_size, self.image_size)
        crop = photo.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        array = np.asarray(crop)
        if rng.random() < 0.5:
            array = array[:, ::-1]
        return array

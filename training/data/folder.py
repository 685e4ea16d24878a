"""A folder of the user's own images (PNG, JPEG, WebP; searched recursively).

Every image is decoded once when the data set is built, converted to RGB as the service converts
uploads (app.imaging), resized so its shorter side is image_size and centre-cropped, and kept as uint8
(12 KB per image at 64 x 64, so 10,000 images take about 120 MB). Decoding up front is what lets an
unreadable file be skipped and counted before training starts instead of failing half-way through an epoch.

Split (over the readable files): files are ordered by a CRC32 of their path relative to the folder
and the first 5 % (at least one, when there are two or more) are validation; adding files moves few
others between splits.
With a single image both splits are that image.
"""

import functools
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from app import imaging
from training.data.convert import to_tensor
from training.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
VAL_FRACTION = 0.05
log = logging.getLogger(__name__)


def find_images(root: Path) -> list[Path]:
    """Image files under `root` by extension (case-insensitive), sorted; raises UserError for a bad path.

    Symbolic links are followed, to folders and to files, so a folder of links to a larger collection
    trains on what they point at; a folder or file reached twice (two links to it, or a link to a parent)
    counts once. A link that points nowhere is kept, so that it is reported and counted as unreadable.
    Hidden files and folders (a name starting with ".") are left out: `.ipynb_checkpoints/` and the
    like hold copies of the real images, which would otherwise be trained on twice."""
    if not root.exists():
        raise UserError(f"data path {str(root)!r} does not exist")
    if not root.is_dir():
        raise UserError(f"data path {str(root)!r} is not a folder (expected shapes, photos or a folder)")

    def refuse(exc: OSError) -> None:
        raise UserError(f"cannot read data folder {str(exc.filename)!r}: {exc.strerror}")

    files: list[Path] = []
    seen_folders: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, onerror=refuse, followlinks=True):
        here = os.stat(folder)
        if (here.st_dev, here.st_ino) in seen_folders:
            subfolders.clear()
            continue
        seen_folders.add((here.st_dev, here.st_ino))

        def real_first(name: str, folder: str = folder) -> tuple[bool, str]:
            """Real folders and files before links, so a real path is the one kept when both lead there."""
            return os.path.islink(os.path.join(folder, name)), name

        subfolders[:] = sorted((d for d in subfolders if not d.startswith(".")), key=real_first)
        for name in sorted(names, key=real_first):
            path = Path(folder, name)
            if name.startswith(".") or path.suffix.lower() not in EXTENSIONS:
                continue
            if path.is_file():
                target = path.stat()
                if (target.st_dev, target.st_ino) in seen_files:
                    continue
                seen_files.add((target.st_dev, target.st_ino))
                files.append(path)
            elif path.is_symlink() and not path.exists():
                files.append(path)  # dangling: load_image fails, and it is skipped and counted
    if not files:
        raise UserError(f"no images ({', '.join(EXTENSIONS)}) found under {str(root)!r}")
    return sorted(files)


def load_image(path: Path, image_size: int) -> np.ndarray:
    """Decode `path` (first frame) as the service does: EXIF orientation applied, 16-bit gray scaled,
    transparency composited on white, then the short side resized to image_size and centre-cropped
    (app.imaging's conversion and fit=center-crop, so a model sees the same pixels in training and
    when served). uint8 [S, S, 3]."""
    with Image.open(path) as image:
        rgb = imaging.to_channels(imaging.upright(image, field=str(path)), 3)
    return np.asarray(imaging.fit(rgb, image_size, image_size, "center-crop"))


class FolderDataset(Dataset[torch.Tensor]):
    """One split of a folder's images as float32 [channels, S, S] tensors in [0, 1].

    `self.files` are this split's images; `self.skipped` the folder's unreadable files (both splits).
    """

    def __init__(self, root: str | Path, split: str = "train", *, image_size: int = 64, channels: int = 3):
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, not {split!r}")
        self.root = Path(root)
        self.split = split
        self.channels = channels
        files = find_images(self.root)
        stamp = tuple((p, *_stamp(p)) for p in files)
        readable, images, skipped = _decode_folder(self.root, image_size, stamp)
        keep = [i for i, path in enumerate(readable) if path in _split(self.root, list(readable), split)]
        self.files = [readable[i] for i in keep]
        self.skipped = list(skipped)
        self.images = images[keep]  # uint8 [N, S, S, 3]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(self.images[i], self.channels)


def _stamp(path: Path) -> tuple[int, int]:
    """(modification time in ns, size) of the file, or of the link itself when it points nowhere."""
    info = path.stat() if path.exists() else path.lstat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=1)
def _decode_folder(
    root: Path, image_size: int, stamp: tuple[tuple[Path, int, int], ...]
) -> tuple[tuple[Path, ...], np.ndarray, tuple[Path, ...]]:
    """Decode every file once: (readable paths, uint8 [N, S, S, 3], unreadable paths).

    Cached on the files' paths, times and sizes, so the train and val splits share one decoding pass.
    """
    readable: list[Path] = []
    skipped: list[Path] = []
    arrays = []
    for path, _, _ in stamp:
        try:
            arrays.append(load_image(path, image_size))
            readable.append(path)
        except Exception as exc:  # Pillow raises SyntaxError, struct.error, ... on corrupt files
            log.warning("skipping unreadable image %s: %s", path, exc)
            skipped.append(path)
    if skipped:
        log.warning("%d unreadable image(s) skipped in %s", len(skipped), root)
    if not arrays:
        raise UserError(f"no readable images in {str(root)!r} ({len(skipped)} unreadable file(s) skipped)")
    return tuple(readable), np.stack(arrays), tuple(skipped)


def _split(root: Path, files: list[Path], split: str) -> set[Path]:
    if len(files) == 1:
        return set(files)
    ordered = sorted(files, key=lambda p: (zlib.crc32(p.relative_to(root).as_posix().encode()), p))
    n_val = min(max(1, int(len(files) * VAL_FRACTION)), len(files) - 1)
    return set(ordered[:n_val] if split == "val" else ordered[n_val:])

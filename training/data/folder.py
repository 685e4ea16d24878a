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


def find_images(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under `root` by extension (case-insensitive), sorted, and the entries that could not be
    read: (files, [(path, reason)]). Raises UserError for a bad or unreadable `root`, or no images.

    Symbolic links are followed, to folders and to files, so a folder of links to a larger collection
    trains on what they point at. A file reached by several paths counts once, under a path without links
    where it has one (else the first in sorted order), so adding a link moves nothing between splits. A
    link back to a folder being walked is not followed again. A subfolder that cannot be listed, a link
    that points nowhere and a file that cannot be reached are reported, not fatal.
    Hidden files and folders (a name starting with ".") are left out: `.ipynb_checkpoints/` and the
    like hold copies of the real images, which would otherwise be trained on twice."""
    if not root.exists():
        raise UserError(f"data path {str(root)!r} does not exist")
    if not root.is_dir():
        raise UserError(f"data path {str(root)!r} is not a folder (expected shapes, photos or a folder)")
    try:
        os.scandir(root).close()
    except OSError as exc:
        raise UserError(f"cannot read data folder {str(root)!r}: {exc.strerror}") from exc
    found: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    real_root = os.path.realpath(root)
    _walk(root, frozenset({real_root}), found, unreadable)
    by_file: dict[tuple[int, int], list[Path]] = {}
    for path in found:
        info = path.stat()
        by_file.setdefault((info.st_dev, info.st_ino), []).append(path)

    def linked(path: Path) -> bool:  # reached through a link, to the file or to a folder in between
        return os.path.realpath(path) != os.path.join(real_root, path.relative_to(root))

    files = [min(paths, key=lambda p: (linked(p), p)) for paths in by_file.values()]
    if not files:
        also = f" ({len(unreadable)} unreadable file(s) or folder(s))" if unreadable else ""
        raise UserError(f"no images ({', '.join(EXTENSIONS)}) found under {str(root)!r}{also}")
    return sorted(files), sorted(unreadable)


def _walk(
    folder: Path, ancestors: frozenset[str], found: list[Path], unreadable: list[tuple[Path, str]]
) -> None:
    """Add the image files under `folder` to `found`, following links; `ancestors`: the real paths of
    the folders being walked, which a link must not lead back into (a cycle)."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        unreadable.append((folder, f"folder not readable: {exc.strerror}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                real = os.path.realpath(path)
                if real not in ancestors:
                    _walk(path, ancestors | {real}, found, unreadable)
            elif path.suffix.lower() in EXTENSIONS:
                if entry.is_file():
                    found.append(path)
                elif entry.is_symlink() and not path.exists():
                    unreadable.append((path, f"broken symbolic link to {os.readlink(path)}"))
        except OSError as exc:
            unreadable.append((path, exc.strerror or str(exc)))


def decode_image(path: Path, channels: int) -> Image.Image:
    """Decode `path` (first frame) as the service decodes an upload: EXIF orientation applied, 16-bit
    gray scaled, transparency composited on white; RGB (channels 3) or gray (1), at full size."""
    with Image.open(path) as image:
        return imaging.to_channels(imaging.upright(image, field=str(path)), channels)


def load_image(path: Path, image_size: int) -> np.ndarray:
    """`decode_image` in RGB, then the short side resized to image_size and centre-cropped (app.imaging's
    fit=center-crop, so a model sees the same pixels in training and when served). uint8 [S, S, 3]."""
    return np.asarray(imaging.fit(decode_image(path, 3), image_size, image_size, "center-crop"))


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
        files, unreadable = find_images(self.root)
        stamp = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        readable, images, skipped = _decode_folder(self.root, image_size, stamp, tuple(unreadable))
        keep = [i for i, path in enumerate(readable) if path in _split(self.root, list(readable), split)]
        self.files = [readable[i] for i in keep]
        self.skipped = list(skipped)
        self.images = images[keep]  # uint8 [N, S, S, 3]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(self.images[i], self.channels)


@functools.lru_cache(maxsize=1)
def _decode_folder(
    root: Path,
    image_size: int,
    stamp: tuple[tuple[Path, int, int], ...],
    unreadable: tuple[tuple[Path, str], ...],
) -> tuple[tuple[Path, ...], np.ndarray, tuple[Path, ...]]:
    """Decode every file once: (readable paths, uint8 [N, S, S, 3], skipped paths), where the skipped are
    `unreadable` (what the walk could not reach) and the files that failed to decode, each warned about.

    Cached on the files' paths, times and sizes, so the train and val splits share one decoding pass.
    """
    readable: list[Path] = []
    skipped: list[Path] = []
    for path, reason in unreadable:
        log.warning("skipping %s: %s", path, reason)
        skipped.append(path)
    arrays = []
    for path, _, _ in stamp:
        try:
            arrays.append(load_image(path, image_size))
            readable.append(path)
        except Exception as exc:  # Pillow raises SyntaxError, struct.error, ... on corrupt files
            log.warning("skipping unreadable image %s: %s", path, exc)
            skipped.append(path)
    if skipped:
        log.warning("%d unreadable file(s) or folder(s) skipped in %s", len(skipped), root)
    if not arrays:
        raise UserError(
            f"no readable images in {str(root)!r} ({len(skipped)} unreadable file(s) or folder(s) skipped)"
        )
    return tuple(readable), np.stack(arrays), tuple(skipped)


def _split(root: Path, files: list[Path], split: str) -> set[Path]:
    if len(files) == 1:
        return set(files)
    ordered = sorted(files, key=lambda p: (zlib.crc32(p.relative_to(root).as_posix().encode()), p))
    n_val = min(max(1, int(len(files) * VAL_FRACTION)), len(files) - 1)
    return set(ordered[:n_val] if split == "val" else ordered[n_val:])

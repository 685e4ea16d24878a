"""Data sets: procedural shapes, scikit-image photo crops, a user's folder."""

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import make_dataset, shapes
from training.data import photos as photos_module
from training.errors import UserError


def test_shapes_size_and_split() -> None:
    train, val = make_dataset("shapes", "train"), make_dataset("shapes", "val")
    assert shapes.NUM_IMAGES == 737_280
    assert len(train) + len(val) == 737_280
    assert len(val) == 36_864  # 5 % held out
    assert np.intersect1d(train.indices, val.indices).size == 0


def test_shapes_items_are_binary_and_deterministic() -> None:
    a, b = make_dataset("shapes", "train"), make_dataset("shapes", "train")
    for i in (0, 12_345, len(a) - 1):
        x = a[i]
        assert x.shape == (1, 64, 64) and x.dtype == torch.float32
        assert set(x.unique().tolist()) <= {0.0, 1.0} and x.sum() > 0
        assert torch.equal(x, b[i])
    assert make_dataset("shapes", "val", channels=3)[0].shape == (3, 64, 64)


def test_shapes_factors_of_a_known_index() -> None:
    # heart (2), scale 1.0 (5), orientation 10/40 of a turn, pos_x 31, pos_y 0; pos_y varies fastest.
    flat = (((2 * 6 + 5) * 40 + 10) * 32 + 31) * 32 + 0
    data = shapes.ShapesDataset("all")
    factors = data.factors(flat)
    assert factors["classes"] == {"shape": 2, "scale": 5, "orientation": 10, "pos_x": 31, "pos_y": 0}
    assert factors["values"]["scale"] == pytest.approx(1.0)
    assert factors["values"]["orientation"] == pytest.approx(np.pi / 2)
    assert factors["values"]["pos_x"] == pytest.approx(1.0) and factors["values"]["pos_y"] == 0.0
    image = data[flat][0]
    rows, cols = torch.nonzero(image, as_tuple=True)
    # pos_x = 1 puts the sprite at the right, pos_y = 0 at the top; it never touches the border.
    assert cols.float().mean() > 44 and rows.float().mean() < 20
    assert image[0].sum() == 0 and image[:, -1].sum() == 0
    assert shapes.indices_of(shapes.classes_of(np.array([flat, 7])))[0] == flat


def test_shapes_factors_move_the_sprite() -> None:
    small, large = shapes.render(np.array([[0, 0, 0, 16, 16], [0, 5, 0, 16, 16]]))
    assert large.sum() > 3 * small.sum()  # area grows with scale² (0.5 -> 1.0)
    left, right = shapes.render(np.array([[1, 3, 0, 0, 16], [1, 3, 0, 31, 16]]))
    assert np.nonzero(left)[1].mean() < np.nonzero(right)[1].mean()
    kinds = shapes.render(np.array([[k, 5, 3, 16, 16] for k in range(3)]))
    assert len({im.tobytes() for im in kinds}) == 3


def test_shapes_sample_indices_stay_in_split() -> None:
    val = make_dataset("shapes", "val")
    drawn = val.sample_indices(1000, np.random.default_rng(0))
    assert np.isin(drawn, val.indices).all()
    assert np.array_equal(drawn, val.sample_indices(1000, np.random.default_rng(0)))


def test_photos_split_by_source_photograph() -> None:
    assert not set(photos_module.TRAIN_PHOTOS) & set(photos_module.VAL_PHOTOS)
    for name in photos_module.TRAIN_PHOTOS + photos_module.VAL_PHOTOS:
        assert (photos_module.photo_folder() / name).is_file()
    train = make_dataset("photos", "train", length=100)
    val = make_dataset("photos", "val")
    assert train.names == photos_module.TRAIN_PHOTOS and val.names == photos_module.VAL_PHOTOS
    assert len(train) == 100


def test_photos_crops_are_seeded() -> None:
    a = make_dataset("photos", "train", seed=1, length=8)
    b = make_dataset("photos", "train", seed=1, length=8)
    x = a[3]
    assert x.shape == (3, 64, 64) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, b[3])
    a.set_epoch(1)
    assert not torch.equal(x, a[3])
    assert torch.equal(make_dataset("photos", "val", seed=5)[7], make_dataset("photos", "val", seed=9)[7])
    assert make_dataset("photos", "val", channels=1, image_size=32)[0].shape == (1, 32, 32)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (70, 70), dtype=np.uint8)).save(tmp_path / "a" / "b" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (64, 90, 3), dtype=np.uint8)).save(tmp_path / "a" / "photo.JPG")
    Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(tmp_path / "a" / "pic.webp")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden: a notebook's copies, left out
    shutil.copy(tmp_path / "rgb.png", tmp_path / ".ipynb_checkpoints" / "rgb-checkpoint.png")
    shutil.copy(tmp_path / "rgb.png", tmp_path / "a" / ".rgb.png")
    return tmp_path


def test_folder_recursive_with_skips(image_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        train = make_dataset(image_folder, "train", image_size=32)
        val = make_dataset(image_folder, "val", image_size=32)
    names = {p.name for p in train.files + val.files}
    assert names == {"rgb.png", "gray.png", "photo.JPG", "pic.webp"}
    assert len(val) == 1 and not set(train.files) & set(val.files)
    assert [p.name for p in train.skipped] == ["broken.png"] and train.skipped == val.skipped
    assert "broken.png" in caplog.text
    for x in [train[i] for i in range(len(train))] + [val[0]]:
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1


def test_folder_follows_links_once_and_counts_dangling_ones(
    image_folder: Path, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(image_folder / "a" / "b", elsewhere / "more")
    (elsewhere / "more" / "gray.png").rename(elsewhere / "more" / "linked.png")
    (image_folder / "more").symlink_to(elsewhere / "more")  # a folder of images kept elsewhere
    (image_folder / "same").symlink_to(elsewhere / "more")  # the same folder again: counted once
    (image_folder / "a" / "up").symlink_to(image_folder)  # a cycle: must end, and add nothing
    (image_folder / "copy.png").symlink_to(image_folder / "rgb.png")  # a file reached twice: once
    (image_folder / "a" / "0b").symlink_to(image_folder / "a" / "b")  # walked before b/: b/ still wins
    (image_folder / "gone.png").symlink_to(image_folder / "missing.png")  # dangling: unreadable
    (image_folder / "z").mkdir()
    shutil.copy(image_folder / "rgb.png", image_folder / "z" / "real.png")
    (image_folder / "a" / "alias.png").symlink_to(image_folder / "z" / "real.png")  # found first, not kept
    with caplog.at_level(logging.WARNING):
        train, val = make_dataset(image_folder, "train"), make_dataset(image_folder, "val")
    files = sorted(p.relative_to(image_folder).as_posix() for p in train.files + val.files)
    assert files == ["a/b/gray.png", "a/photo.JPG", "a/pic.webp", "more/linked.png", "rgb.png", "z/real.png"]
    assert sorted(p.name for p in train.skipped) == ["broken.png", "gone.png"]
    assert "broken symbolic link to" in caplog.text


def test_folder_skips_a_subfolder_it_cannot_list(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subfolder the user may not list (a disk's lost+found) is skipped and counted; an unreadable root
    is an error. The permission error is injected: these tests run as root, whom chmod does not stop."""
    scandir = os.scandir

    def denied(path: object) -> object:
        if Path(str(path)).name in ("a", "locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", denied)
    data = make_dataset(image_folder, "train")
    assert [p.name for p in data.files] == ["rgb.png"]  # the one image outside a/
    assert [p.name for p in data.skipped] == ["a"]
    (image_folder / "locked").mkdir()
    (image_folder / "locked" / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match="cannot read data folder .*locked.*Permission denied"):
        make_dataset(image_folder / "locked", "train")


def test_folder_gray_becomes_rgb_and_back(image_folder: Path) -> None:
    for split in ("train", "val"):
        rgb, gray = make_dataset(image_folder, split), make_dataset(image_folder, split, channels=1)
        for i, path in enumerate(rgb.files):
            x = rgb[i]
            # Only the gray file has three equal planes; channels=1 gives one plane for every file.
            assert (path.name == "gray.png") == (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]))
            assert gray[i].shape == (1, 64, 64)


def test_folder_reads_awkward_files_as_the_service_does(tmp_path: Path) -> None:
    """Transparency, EXIF rotation and 16-bit gray become the same pixels in training as in an upload
    to the service (app.imaging), and a PNG corrupt enough to make Pillow raise SyntaxError is skipped."""
    import io

    from app import imaging

    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 255, (40, 60, 4), dtype=np.uint8)
    rgba[:, :30, 3] = 0  # half transparent: white in both, not the colour stored under it
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    turned = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(turned).save(tmp_path / "turned.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 65535, (32, 48), dtype=np.uint16)).save(tmp_path / "deep.png")
    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, "PNG")
    broken = bytearray(good.getvalue())
    broken[33:37] = b"\0\0\0\0"  # the IDAT chunk's length
    (tmp_path / "idat.png").write_bytes(bytes(broken))
    data = make_dataset(tmp_path, "train", image_size=16)
    both = data.files + make_dataset(tmp_path, "val", image_size=16).files
    assert {p.name for p in both} == {"alpha.png", "turned.jpg", "deep.png"}
    assert [p.name for p in data.skipped] == ["idat.png"]
    for i, path in enumerate(data.files):
        served = imaging.load_fitted(
            path.read_bytes(), height=16, width=16, channels=3, mode="center-crop", max_pixels=1 << 20
        )
        assert np.array_equal(data[i].numpy(), served.array), path.name


@pytest.mark.parametrize("case", ["missing", "empty", "file", "only_broken"])
def test_folder_errors(tmp_path: Path, case: str) -> None:
    path = tmp_path / "data"
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_text("x")
    elif case == "only_broken":
        path.mkdir()
        (path / "bad.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError) as info:
        make_dataset(path, "train")
    assert "\n" not in str(info.value) and str(path) in str(info.value)

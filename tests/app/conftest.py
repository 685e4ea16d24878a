"""Fixtures for the service tests: apps over the session's tiny artifacts (tests/conftest.py)."""

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings

KINDS = ("vae", "beta_vae", "vqvae", "mae")


def image_bytes(
    width: int = 40, height: int = 30, mode: str = "RGB", fmt: str = "PNG", seed: int = 0
) -> bytes:
    """A random image of the given size, mode and format."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    rgb.convert(mode).save(buf, fmt)
    return buf.getvalue()


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    """Settings for a test app; the environment is ignored for the fields given here."""
    values: dict[str, object] = {
        "model_dir": model_dir,
        "log_format": "text",
        "log_level": "WARNING",
        "providers": "cpu",
        "max_delay_ms": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(name="image_bytes")
def image_bytes_fixture() -> object:
    return image_bytes


@pytest.fixture(name="make_settings")
def make_settings_fixture() -> object:
    return make_settings


@pytest.fixture(scope="module")
def client(tiny_artifacts: Path) -> Iterator[TestClient]:
    """One app with all four tiny models, lifespan running."""
    with TestClient(create_app(make_settings(tiny_artifacts))) as c:
        yield c


@pytest.fixture
def artifact_copy(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifacts that a test may damage."""
    dest = tmp_path / "models"
    shutil.copytree(tiny_artifacts, dest)
    return dest

"""aeserve: the FastAPI service over exported autoencoder artifacts (ONNX Runtime only, never torch)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version


def version() -> str:
    """The installed package version ("0+unknown" when run from a bare checkout)."""
    try:
        return _package_version("aeserve")
    except PackageNotFoundError:
        return "0+unknown"

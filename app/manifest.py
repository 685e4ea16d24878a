"""Reading an artifact's manifest.json (docs/ARTIFACT.md) into typed fields the service uses."""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
# A model's name is a path segment of its routes and a folder name in a Triton repository.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ManifestError(ValueError):
    """The artifact folder cannot be served; the message says why (shown as the model's reason)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float32" | "int64"
    shape: tuple[int | str, ...]  # ints are fixed axes, strings are dynamic axis names


@dataclass(frozen=True)
class GraphSpec:
    name: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    height: int
    width: int
    channels: int
    spatial_multiple: int | None  # set for fully convolutional graphs (VQ-VAE)
    latent: dict[str, Any]
    likelihood: str | None
    patch_size: int | None
    num_patches: int | None
    graphs: dict[str, GraphSpec]
    files: dict[str, dict[str, Any]]
    metrics: dict[str, float]
    model_card: str | None  # file name of the model card inside the folder
    raw: dict[str, Any] = field(repr=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def positive_int(value: Any, field: str) -> int:
    """A positive integer field; "64", 64.0, true and the like are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ManifestError(f"manifest.json: {field} must be a positive integer, not {value!r}")
    return value


def _optional_int(value: Any, field: str) -> int | None:
    return None if value is None else positive_int(value, field)


def _tensors(items: Any, where: str) -> tuple[TensorSpec, ...]:
    try:
        return tuple(TensorSpec(str(t["name"]), str(t["dtype"]), tuple(t["shape"])) for t in items)
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{where}: malformed tensor list ({exc})") from exc


def read_manifest(folder: Path) -> Manifest:
    """Parse `folder/manifest.json`; raise ManifestError with a one-line reason when it cannot be used."""
    path = folder / "manifest.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError("manifest.json is missing") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest.json is unreadable: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError("manifest.json is not a JSON object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"format_version {raw.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    try:
        inp = raw["input"]
        graphs = {
            g: GraphSpec(
                g,
                str(spec["file"]),
                str(spec["sha256"]),
                _tensors(spec["inputs"], f"graph {g}"),
                _tensors(spec["outputs"], f"graph {g}"),
            )
            for g, spec in raw["graphs"].items()
        }
        name = str(raw.get("name") or folder.name)
        if not NAME.fullmatch(name):
            raise ManifestError(f"name {name!r} must be letters, digits, '_', '-' or '.' (it names routes)")
        files = dict(raw.get("files") or {})
        if any(
            not isinstance(v, dict)
            or not isinstance(v.get("file"), str)
            or not isinstance(v.get("sha256"), str)
            for v in files.values()
        ):
            raise ManifestError(
                "manifest.json: each entry of files must be an object with a file name and its sha256"
            )
        card = raw.get("model_card")
        if card is not None and not isinstance(card, str):
            raise ManifestError(f"manifest.json: model_card must be a file name, not {card!r}")
        return Manifest(
            name=name,
            kind=str(raw["kind"]),
            height=positive_int(inp["height"], "input.height"),
            width=positive_int(inp["width"], "input.width"),
            channels=positive_int(inp["channels"], "input.channels"),
            spatial_multiple=_optional_int(inp.get("spatial_multiple"), "input.spatial_multiple"),
            latent=dict(raw.get("latent") or {}),
            likelihood=raw.get("likelihood"),
            patch_size=_optional_int(raw.get("patch_size"), "patch_size"),
            num_patches=_optional_int(raw.get("num_patches"), "num_patches"),
            graphs=graphs,
            files=files,
            metrics={k: float(v) for k, v in (raw.get("metrics") or {}).items()},
            model_card=card,
            raw=raw,
        )
    except ManifestError:
        raise
    except KeyError as exc:
        raise ManifestError(f"manifest.json lacks the field {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"manifest.json mistypes a field: {exc}") from exc


def verified_file(folder: Path, file: str, sha256: str, what: str) -> Path:
    """The path of an artifact file after checking it exists inside the folder and matches its sha256."""
    path = (folder / file).resolve()
    if folder.resolve() not in path.parents:
        raise ManifestError(f"{what}: file {file!r} lies outside the artifact folder")
    if not path.is_file():
        raise ManifestError(f"{what}: {file} is missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise ManifestError(
            f"{what}: {file} sha256 {actual[:12]}… does not match the manifest's {sha256[:12]}…"
        )
    return path

"""Service settings: every knob is an `AESERVE_*` environment variable (pydantic-settings)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The bundled default models (docs/ARTIFACT.md): `<repo>/artifacts/<name>/`.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "artifacts"
# What /docs loads when AESERVE_DOCS_ASSETS names a local copy of Swagger UI.
DOCS_ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def missing_docs_assets(folder: Path) -> list[str]:
    """The files of DOCS_ASSET_FILES that `folder` lacks."""
    return [name for name in DOCS_ASSET_FILES if not (folder / name).is_file()]


class Settings(BaseSettings):
    """Configuration of one service process. `Settings()` reads `AESERVE_*` from the environment."""

    model_config = SettingsConfigDict(env_prefix="AESERVE_", extra="ignore")

    # Models
    model_dir: Path = Field(
        default=DEFAULT_MODEL_DIR, description="Folder of artifact folders (<name>/manifest.json)."
    )
    providers: Literal["auto", "cuda", "cpu"] = Field(
        default="auto",
        description="auto: CUDA when it really loads, else CPU; cuda: refuse to start without it.",
    )
    strict_startup: bool = Field(default=False, description="Fail start-up when any model cannot load.")
    warmup: bool = Field(default=True, description="Run every graph once before reporting ready.")
    strict_readiness: bool = Field(
        default=True,
        description="Report not ready (503) while any model is unavailable, as Triton does by default; "
        "false: ready once started, serving the models that loaded.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="CPU threads per session; 0 = cores / workers."
    )
    workers: int = Field(
        default=1, ge=1, description="Server worker processes sharing the cores (thread sizing)."
    )
    intra_op_spinning: bool = Field(
        default=False,
        description="Let ONNX Runtime's CPU threads spin between operators instead of sleeping: "
        "lower latency per run, at the price of busy cores while a run's threads wait.",
    )

    # Dynamic batching, per graph
    max_batch_size: int = Field(
        default=32,
        ge=1,
        description="Most items the batcher merges into one run (a larger request runs alone).",
    )
    max_delay_ms: float = Field(default=5.0, ge=0, description="Longest wait for a batch to fill, in ms.")
    max_queue: int = Field(default=256, ge=1, description="Most requests waiting per graph; more -> 429.")
    inline_when_idle: bool = Field(
        default=True,
        description="Run a one-image batch on the event loop thread when it is the only request in flight "
        "(no thread hand-off: lower latency at light load).",
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After seconds sent with a 429.")
    max_inflight: int = Field(
        default=256,
        ge=1,
        description="Most POST requests being handled at once; more -> 429 before the body is read "
        "(bounds memory at about max_inflight x max_body_bytes).",
    )

    # Request limits
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest request body in bytes.")
    max_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        description=(
            "Largest decoded image, width*height; also the most pixels one request's images may come to "
            "at the model's input (several images kept at their size with fit=none)."
        ),
    )
    max_request_pixels: int = Field(
        default=8 * 4096 * 4096,
        ge=1,
        description="Most pixels one request's images may hold as sent (what decoding them costs), summed.",
    )
    max_images: int = Field(default=256, ge=1, description="Most images in one request (bulk tokens).")
    max_steps: int = Field(default=64, ge=2, description="Most interpolation/traversal steps.")
    max_samples: int = Field(
        default=64, ge=1, description="Most images from the prior in one sample request."
    )

    # Access and operations
    api_key: SecretStr | None = Field(
        default=None, description="Bearer key required on all routes but health, docs and the playground."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins (comma-separated); empty = CORS off."
    )
    docs_assets: Path | None = Field(
        default=None,
        description="Folder holding Swagger UI's swagger-ui-bundle.js and swagger-ui.css (npm package "
        "swagger-ui-dist, version 5; redoc.standalone.js too for /redoc), which /docs loads from this "
        "server. Unset: the copy the fastapi-offline package installs, and the jsDelivr CDN only where "
        "that package is missing.",
    )
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET"] = Field(
        default="INFO", description="Python logging level (any case; WARN and FATAL as Python reads them)."
    )
    git_revision: str | None = Field(default=None, description="Set at image build; else `git rev-parse`.")

    @field_validator("api_key", "docs_assets", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """AESERVE_API_KEY= (as docker compose passes an unset variable) means no key, not the key '';
        AESERVE_DOCS_ASSETS= the installed copy, not the folder '.'."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)  # logging's own aliases

    @field_validator("docs_assets")
    @classmethod
    def _docs_assets_hold_swagger_ui(cls, value: Path | None) -> Path | None:
        if value is not None:
            missing = missing_docs_assets(value)
            if missing:
                raise ValueError(f"{value} holds no {' or '.join(missing)} (from swagger-ui-dist 5)")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

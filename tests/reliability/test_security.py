"""Security: the API key (constant-time, health and docs open), no pickle on the serving path, names
never used as paths, every limit enforced before the expensive work, a non-root container."""

import ast
import inspect
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import ImageFile

from app import deps, imaging
from app.main import create_app
from bench.reliability.corpus import _png_header_only, files, good_png
from tests.app.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed(tiny_artifacts: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_artifacts, api_key=KEY))) as c:
        yield c


def test_the_key_guards_everything_but_health_and_docs(keyed: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"):
        assert keyed.get(path).status_code == 200, path
    for method, path in (
        ("GET", "/v1/models"), ("GET", "/v1/models/vae"), ("GET", "/metrics"), ("GET", "/v1/version"),
        ("POST", "/v1/admin/reload"), ("GET", "/v2/models/vae_decoder"),
        ("POST", "/v2/models/vae_decoder/infer"), ("POST", "/v1/models/vae/sample"),
    ):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            r = keyed.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert "error" in r.json()
    assert keyed.get("/v1/models", headers=auth).status_code == 200
    assert keyed.post("/v1/admin/reload", headers=auth).json()["rejected"] == {}


def test_the_docs_hold_no_data(keyed: TestClient, tiny_artifacts: Path) -> None:
    """/docs and /openapi.json stay open (decided in docs/RELIABILITY.md): they describe the routes and
    nothing of the deployment: no model names, paths or keys."""
    text = keyed.get("/openapi.json").text
    assert KEY not in text and str(tiny_artifacts) not in text
    assert "vae_decoder" not in text and "sha256" not in text


def test_the_key_is_compared_in_constant_time() -> None:
    source = inspect.getsource(deps.require_api_key)
    tree = ast.parse(source)
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "hmac.compare_digest" in calls
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    # the only comparison allowed is "is None" (no key configured / no credentials); never == on secrets
    assert all(all(isinstance(op, ast.Is | ast.IsNot) for op in c.ops) for c in compares)


def test_no_pickle_on_the_serving_path() -> None:
    for path in sorted((REPO / "app").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|torch)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path, call)


def test_checkpoints_are_safetensors(tiny_checkpoints: dict[str, Path]) -> None:
    for checkpoint in tiny_checkpoints.values():
        names = {p.name for p in checkpoint.iterdir()}
        assert "model.safetensors" in names
        assert not any(n.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")) for n in names), names


def test_names_never_become_paths(artifact_copy: Path) -> None:
    """A valid artifact next to the model folder cannot be reached through the name, a model card
    or a graph file that points outside the artifact folder is refused."""
    outside = artifact_copy.parent / "secret"
    shutil.copytree(artifact_copy / "vae", outside)
    manifest = artifact_copy / "beta_vae" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"README.md"', '"../../secret/manifest.json"'))
    vq = artifact_copy / "vqvae" / "manifest.json"
    vq.write_text(vq.read_text().replace('"encoder.onnx"', '"../secret/encoder.onnx"'))
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        for name in ("..%2Fsecret", "%2E%2E%2Fsecret", "secret", "..%5Csecret"):
            assert c.get(f"/v1/models/{name}").status_code == 404
            assert (
                c.post(f"/v1/models/{name}/reconstruct", files={"image": ("a.png", good_png())}).status_code
                == 404
            )
        assert c.get("/v1/models/beta_vae").json()["model_card"] is None
        vqvae = c.get("/v1/models/vqvae").json()
        assert vqvae["status"] == "unavailable" and "outside the artifact folder" in vqvae["reason"]


def test_limits_come_before_the_expensive_work(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pixels before decoding, image count before decoding any, steps and sample counts before running."""
    decoded: list[object] = []
    fitted: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    real_fit = imaging.load_fitted
    monkeypatch.setattr(imaging, "load_fitted", lambda *a, **k: fitted.append(1) or real_fit(*a, **k))
    registry = client.app.state.registry
    ran = lambda: sum(g.batcher.stats.requests for g in registry.graphs.values())  # noqa: E731
    before = ran()
    bomb = client.post(
        "/v1/models/vae/reconstruct",
        content=_png_header_only(100_000, 100_000),
        headers={"content-type": "image/png"},
    )
    assert bomb.status_code == 413 and decoded == []
    fitted.clear()  # the bomb reached load_fitted, which refused it from the header alone
    s = client.app.state.settings
    body, headers = files(*(["images"] * (s.max_images + 1)))
    assert client.post("/v1/models/vqvae/tokens", content=body, headers=headers).status_code == 422
    assert client.post("/v1/models/vae/sample", params={"n": s.max_samples + 1}).status_code == 422
    latent = registry.models["vae"].manifest.latent["shape"][0]
    z = [[0.0] * latent] * (s.max_images + 1)
    assert client.post("/v1/models/vae/decode", json={"latent": z}).status_code == 422
    body, headers = files(*(["image"] * 8))
    assert (
        client.post("/v1/models/mae/score", params={"samples": 64}, content=body, headers=headers).status_code
        == 422
    )
    assert fitted == [] and ran() == before


def test_the_body_limit_is_checked_before_reading(client: TestClient) -> None:
    """Content-Length over the limit is answered 413 without reading one byte of the body."""
    reads: list[object] = []
    app = client.app
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/models/vae/reconstruct", "raw_path": b"/v1/models/vae/reconstruct", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(10**12).encode())],
    }  # fmt: skip
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        reads.append(1)
        return {"type": "http.request", "body": b"", "more_body": True}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    assert client.portal is not None
    client.portal.call(app, scope, receive, send)
    assert sent[0]["status"] == 413 and reads == []


def test_the_container_runs_as_non_root() -> None:
    stages = re.split(r"^FROM\s+", (REPO / "Dockerfile").read_text(), flags=re.M)[1:]
    runtime = [s for s in stages if re.search(r"^CMD\s", s, re.M)]
    assert len(runtime) >= 2  # the cpu and gpu targets
    for stage in runtime:
        users = re.findall(r"^USER\s+(\S+)", stage, re.M)
        assert users and users[-1] not in ("root", "0") and int(users[-1].split(":")[0]) >= 1000, stage[:60]
        after_user = stage[stage.rindex("USER") :]
        assert "CMD" in after_user  # the server starts as that user

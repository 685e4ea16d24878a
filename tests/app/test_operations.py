"""Metrics, request ids, auth, CORS, body limits, overload, version, and batching through HTTP."""

import asyncio
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.registry import LARGE_RUN_VALUES


def test_metrics_count_requests_batches_and_providers(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    client.post("/v1/models/vae/encode", files={"image": ("x.png", image_bytes(), "image/png")})
    text = client.get("/metrics").text
    assert 'aeserve_requests_total{model="vae",route="/v1/models/{name}/encode",status="200"}' in text
    assert 'aeserve_graph_provider{graph="vae_encoder",provider="CPUExecutionProvider"} 1.0' in text
    assert 'aeserve_batch_size_count{graph="vae_encoder"}' in text
    assert 'aeserve_queue_seconds_count{graph="vae_encoder"}' in text
    assert 'aeserve_compute_seconds_count{graph="vae_encoder"}' in text
    assert 'aeserve_queue_depth{graph="vae_encoder"} 0.0' in text
    assert "aeserve_request_seconds_bucket" in text


def test_request_id_in_and_out(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_version(client: TestClient) -> None:
    v = client.get("/v1/version").json()
    assert set(v["runtime"]) == {"onnxruntime", "numpy", "python"}
    assert "CPUExecutionProvider" in v["providers"]["available"]
    assert v["providers"]["in_use"]["vqvae_decoder"] == "CPUExecutionProvider"
    assert v["git_revision"]


def test_api_key_guards_everything_but_health(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tiny_artifacts, api_key="s3cret", git_revision="abc1234"))
    with TestClient(app) as c:
        for path in ("/v1/models", "/metrics", "/v2/models/vae_decoder", "/v2", "/v1/version"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/models").json()["error"]["code"] == "unauthorized"
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert c.get(path).status_code == 200
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/version", headers=auth).json()["git_revision"] == "abc1234"
        assert (
            "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "http://x.org"}).headers
        )


def test_an_empty_api_key_is_no_key(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    """docker compose passes `AESERVE_API_KEY: ${AESERVE_API_KEY:-}`: empty must mean off, not the key ''."""
    for empty in ("", " "):
        with TestClient(create_app(make_settings(tiny_artifacts, api_key=empty))) as c:
            assert c.get("/v1/models").status_code == 200
            assert c.get("/v1/models", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_max_pixels_holds_for_a_requests_images_in_all(
    tiny_artifacts: Path, make_settings, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    """Each image passes the per-image limit, but kept at their size (fit=none) four of them do not."""
    with TestClient(create_app(make_settings(tiny_artifacts, max_pixels=3 * 64 * 64))) as c:
        one = ("images", ("a.png", image_bytes(64, 64), "image/png"))
        assert c.post("/v1/models/vqvae/tokens?fit=none", files=[one] * 3).status_code == 200
        r = c.post("/v1/models/vqvae/tokens?fit=none", files=[one] * 4)
        assert r.status_code == 413 and "16384 pixels" in r.json()["error"]["message"]
        assert r.json()["error"]["field"] == "images"
        fitted = c.post("/v1/models/vqvae/tokens", files=[one] * 4)  # fitted to the model's 16x16 first
        assert fitted.status_code == 200 and fitted.json()["shape"] == [4, 4, 4]


def test_a_large_run_uses_the_weights_that_were_loaded(
    artifact_copy: Path, make_settings, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    """Over registry.LARGE_RUN_VALUES (3 x 1184^2 values) a run gets a session of its own, made from the
    files on disk only while they are the ones loaded: a reload may have rejected what is there now."""
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        big = ("images", ("big.png", image_bytes(1184, 1184), "image/png"))
        first = c.post("/v1/models/vqvae/tokens?fit=none", files=[big])
        assert first.status_code == 200 and first.json()["shape"] == [1, 296, 296]
        for file in (artifact_copy / "vqvae").iterdir():  # replaced on disk after loading
            if file.suffix in (".onnx", ".bin"):
                file.write_bytes(b"replaced")
        again = c.post("/v1/models/vqvae/tokens?fit=none", files=[big])
        assert again.status_code == 200 and again.json()["tokens"] == first.json()["tokens"]


def test_a_small_token_grid_that_decodes_to_a_large_image_is_a_large_run(client: TestClient) -> None:
    """A token grid is 1/48 of the image it decodes to (x16 pixels, x3 channels): its run is sized by the
    image, so the arena of the served session does not keep a full photograph's activations."""
    decoder = client.app.state.registry.graph("vqvae_decoder").session  # type: ignore[attr-defined]
    side = 300  # 90,000 tokens -> a 1200 x 1200 RGB image: 4.3 M values, over LARGE_RUN_VALUES
    assert side * side < LARGE_RUN_VALUES < 3 * (4 * side) ** 2
    assert decoder._large({"tokens": np.zeros((1, side, side), np.int64)})
    assert not decoder._large({"tokens": np.zeros((1, 16, 16), np.int64)})
    r = client.post("/v1/models/vqvae/decode?format=json", json={"tokens": [[[3] * side] * side]})
    assert r.status_code == 200


def test_steps_follow_the_max_steps_setting(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    """AESERVE_MAX_STEPS is the one cap on interpolation and traversal steps, above 64 too."""
    with TestClient(create_app(make_settings(tiny_artifacts, max_steps=80))) as c:
        z = [0.0] * c.get("/v1/models/vae").json()["latent"]["shape"][0]
        body = {"start": z, "end": [1.0] * len(z)}
        frames = c.post("/v1/models/vae/interpolate?steps=80&format=json", json=body).json()["frames"]
        assert len(frames) == 80
        r = c.post("/v1/models/vae/interpolate?steps=81", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == "steps"


def test_cors_when_configured(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(tiny_artifacts, cors_origins="http://x.org"))) as c:
        r = c.get("/healthz", headers={"Origin": "http://x.org"})
        assert r.headers["access-control-allow-origin"] == "http://x.org"


def test_body_limits(tiny_artifacts: Path, make_settings, image_bytes) -> None:  # type: ignore[no-untyped-def]
    with TestClient(
        create_app(make_settings(tiny_artifacts, max_body_bytes=2000, max_images=2, max_pixels=50 * 50))
    ) as c:
        big = bytes(5000)
        r = c.post("/v1/models/vae/reconstruct", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the streaming cap must stop it
            for _ in range(5):
                yield bytes(1000)

        r = c.post("/v1/models/vae/reconstruct", content=chunks(), headers={"content-type": "image/png"})
        assert r.status_code == 413
        # a traversal's grid counts against the images: 2 dims x 2 steps are 4 > 2
        assert c.post("/v1/models/vae/traverse?steps=2&dims=0").status_code == 200
        r = c.post("/v1/models/vae/traverse?steps=2&dims=0,1")
        message = r.json()["error"]["message"]
        assert r.status_code == 413 and "4 images; the limit is 2 (AESERVE_MAX_IMAGES): ask for" in message
        r = c.post(
            "/v2/models/vae_decoder/infer", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and isinstance(r.json()["error"], str)
        files = [("images", (f"{i}.png", image_bytes(8, 8), "image/png")) for i in range(3)]
        r = c.post("/v1/models/vqvae/tokens", files=files)
        assert r.status_code == 422 and r.json()["error"]["field"] == "images"
        r = c.post(
            "/v1/models/vae/reconstruct",
            content=flat_png(60, 60),  # compresses far below the body limit, but has too many pixels
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 413 and "pixel limit" in r.json()["error"]["message"]
        # the refusals the body limit answers before routing count under their route and model too
        text = c.get("/metrics").text
        counted = 'aeserve_requests_total{model="vae",route="%s",status="413"} %s'
        assert counted % ("/v1/models/{name}/reconstruct", "3.0") in text
        assert counted % ("/v2/models/{graph}/infer", "1.0") in text
        assert 'route="unmatched",status="413"' not in text


def test_an_unexpected_error_keeps_the_error_shape(tiny_artifacts: Path, make_settings, capsys) -> None:  # type: ignore[no-untyped-def]
    """A bug (here a route added to fail on purpose) answers 500 in the JSON error shape of its API, with
    the request id its traceback is logged under and every header other answers carry (CORS included),
    not Starlette's plain-text 500."""
    app = create_app(make_settings(tiny_artifacts, cors_origins=["https://example.org"]))

    @app.get("/v1/broken")
    @app.get("/v2/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        origin = {"Origin": "https://example.org"}
        r = c.get("/v1/broken", headers={"X-Request-ID": "rid-1", **origin})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        message = r.json()["error"]["message"]
        assert message == "internal error in request rid-1; the server log has the details"
        assert r.headers["x-request-id"] == "rid-1" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.get("/v2/broken", headers={"X-Request-ID": "rid-2"})
        assert r.status_code == 500 and r.json() == {
            "error": "internal error in request rid-2; the server log has the details"
        }
        assert c.get("/healthz").status_code == 200
    logged = capsys.readouterr().err
    assert "internal error in request rid-1" in logged and "RuntimeError: a bug" in logged


def test_a_traversal_grid_counts_against_the_pixel_limit(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(tiny_artifacts, max_pixels=50 * 50))) as c:
        assert c.post("/v1/models/vae/traverse?steps=2&dims=0").status_code == 200  # 2 x 32 x 32 = 2,048
        r = c.post("/v1/models/vae/traverse?steps=3&dims=0")  # 3,072 pixels > 2,500
        assert r.status_code == 413 and "(AESERVE_MAX_PIXELS): ask for fewer dims or steps" in (
            r.json()["error"]["message"]
        )


def flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 0).save(buf, "PNG")
    return buf.getvalue()


def run_with_lifespan(app, fn):  # type: ignore[no-untyped-def]
    """Run `fn(client)` against the app with its lifespan, concurrently-capable (httpx + ASGITransport)."""

    async def main():  # type: ignore[no-untyped-def]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await fn(c)

    return asyncio.run(main())


def test_concurrent_requests_coalesce_and_equal_unbatched(
    tiny_artifacts: Path, make_settings, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tiny_artifacts, max_delay_ms=300, max_batch_size=16))
    images = [image_bytes(seed=i) for i in range(6)]

    async def encode(c: httpx.AsyncClient, img: bytes) -> list[float]:
        r = await c.post("/v1/models/vae/encode", files={"image": ("x.png", img, "image/png")})
        return r.json()["mean"]  # type: ignore[no-any-return]

    async def scenario(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        together = await asyncio.gather(*(encode(c, img) for img in images))
        alone = [await encode(c, img) for img in images]
        return together, alone, app.state.registry.graphs["vae_encoder"].batcher.stats

    together, alone, stats = run_with_lifespan(app, scenario)
    assert stats.largest_batch > 1  # concurrent requests shared a run
    np.testing.assert_allclose(np.array(together), np.array(alone), rtol=1e-5, atol=1e-6)


def test_full_queue_answers_429_with_retry_after(tiny_artifacts: Path, make_settings, image_bytes) -> None:  # type: ignore[no-untyped-def]
    app = create_app(
        make_settings(tiny_artifacts, max_delay_ms=500, max_batch_size=64, max_queue=1, retry_after_s=3)
    )

    async def scenario(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        body = {"latent": [0.0, 0.0, 0.0, 0.0]}
        return await asyncio.gather(*(c.post("/v1/models/vae/decode", json=body) for _ in range(5)))

    responses = run_with_lifespan(app, scenario)
    statuses = sorted(r.status_code for r in responses)
    # One request may be running and one waiting (queue of 1, held 500 ms to fill); the rest are refused.
    assert set(statuses) == {200, 429} and statuses.count(200) <= 2
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "3" and refused.json()["error"]["code"] == "overloaded"


def test_npy_codebook_is_plain(client: TestClient) -> None:
    data = client.get("/v1/models/vqvae/codebook").content
    assert np.load(io.BytesIO(data), allow_pickle=False).dtype == np.float32


def test_openapi_describes_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert len(operations) >= 22 and all(op.get("summary") for op in operations)
    reconstruct = spec["paths"]["/v1/models/{name}/reconstruct"]["post"]
    assert {"multipart/form-data", "image/png"} <= set(reconstruct["requestBody"]["content"])
    assert any(p["name"] == "fit" and p.get("description") for p in reconstruct["parameters"])
    assert client.get("/docs").status_code == 200


def test_docs_load_swagger_ui_from_the_folder_aeserve_docs_assets_names(tmp_path: Path) -> None:
    from app.settings import Settings

    (tmp_path / "swagger-ui-bundle.js").write_text("window.marker = 'ours';\n")
    (tmp_path / "swagger-ui.css").write_text("body {}\n")
    with TestClient(create_app(Settings(model_dir=tmp_path / "none", docs_assets=tmp_path))) as c:
        html = c.get("/docs").text
        assert 'src="/docs-assets/swagger-ui-bundle.js"' in html and "cdn." not in html
        assert c.get("/docs-assets/swagger-ui-bundle.js").text == "window.marker = 'ours';\n"
        assert c.get("/redoc").status_code == 404  # no redoc.standalone.js here: no page that needs a CDN
    (tmp_path / "swagger-ui.css").unlink()
    with pytest.raises(ValueError, match="holds no swagger-ui.css"):
        Settings(docs_assets=tmp_path)


def test_json_logs_carry_the_request_id(client: TestClient, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    import logging

    from app import logs

    logs.configure("json", "INFO")
    try:
        client.get("/healthz", headers={"X-Request-ID": "log-42"})
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("request_id") == "log-42"]
        assert access and access[-1]["path"] == "/healthz" and access[-1]["status"] == 200
    finally:
        logs.configure("text", "WARNING")
        logging.getLogger("app").handlers.clear()


def test_the_playground_is_sent_with_a_content_security_policy(client: TestClient) -> None:
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in client.get("/static/playground.js").headers
    api = client.get("/v1/models")
    assert api.headers["x-content-type-options"] == "nosniff" and "content-security-policy" not in api.headers


def test_text_logs_cannot_be_forged_through_a_request_path(client: TestClient, capsys) -> None:  # type: ignore[no-untyped-def]
    import logging

    from app import logs

    logs.configure("text", "INFO")
    try:
        client.get("/x%0aINFO    app.admin reload: loaded")
        err = capsys.readouterr().err
        assert "\\x0aINFO    app.admin reload" in err
        assert not any(line.startswith("INFO    app.admin reload") for line in err.splitlines())
    finally:
        logs.configure("text", "WARNING")
        logging.getLogger("app").handlers.clear()


def test_only_a_refused_start_up_loses_its_traceback_in_uvicorns_log() -> None:
    import logging

    from app.logs import RefusalWithoutTraceback

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, None)

    keep = RefusalWithoutTraceback().filter
    assert not keep(record('Traceback (most recent call last):\n  File "x"\napp.errors.StartupError: no GPU'))
    assert keep(record('Traceback (most recent call last):\n  File "x"\nRuntimeError: a bug of ours'))
    assert keep(record("Application startup failed. Exiting."))
    chained = (  # a bug of ours raised while a refusal was being handled: its traceback stays
        'Traceback (most recent call last):\napp.errors.StartupError: no GPU\n\nDuring handling of the above '
        'exception, another exception occurred:\n\nTraceback (most recent call last):\nRuntimeError: a bug\n'
    )
    assert keep(record(chained))


def test_the_pixels_a_request_sends_are_bounded_whatever_the_fit(  # type: ignore[no-untyped-def]
    tiny_artifacts: Path, make_settings, image_bytes
) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, max_request_pixels=4000))) as c:
        two = [("images", (f"{i}.png", image_bytes(40, 40, seed=i), "image/png")) for i in range(2)]
        assert c.post("/v1/models/vae/encode", files=two).status_code == 200  # 3,200 pixels as sent
        three = [("images", (f"{i}.png", image_bytes(40, 40, seed=i), "image/png")) for i in range(3)]
        r = c.post("/v1/models/vae/encode", files=three)  # 4,800: over, though 3 x 32 x 32 once fitted
        assert r.status_code == 413 and "AESERVE_MAX_REQUEST_PIXELS" in r.json()["error"]["message"]

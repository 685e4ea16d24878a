"""The Open Inference Protocol v2 over the raw graphs: metadata, JSON and binary tensors, errors."""

import gzip
import json
import time
import zlib

import numpy as np
from fastapi.testclient import TestClient


def test_server_health_and_metadata(client: TestClient) -> None:
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "statistics"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/vqvae_encoder").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("z_e", "FP32"), ("tokens", "INT64")]
    assert client.get("/v2/models/beta_vae_decoder/ready").json()["ready"] is True
    assert client.get("/v2/models/vqvae_encoder/versions/1").status_code == 200


def test_json_round_trip_matches_v1(client: TestClient) -> None:
    z = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    r = client.post(
        "/v2/models/vae_decoder/infer",
        json={
            "id": "abc",
            "inputs": [{"name": "latent", "shape": [2, 4], "datatype": "FP32", "data": z.tolist()}],
        },
    )
    assert r.status_code == 200
    out = r.json()
    assert out["id"] == "abc" and out["model_name"] == "vae_decoder"
    image = np.array(out["outputs"][0]["data"], np.float32).reshape(out["outputs"][0]["shape"])
    assert image.shape == (2, 3, 32, 32)
    tokens = client.post(
        "/v2/models/vqvae_decoder/infer",
        json={"inputs": [{"name": "tokens", "shape": [1, 4, 4], "datatype": "INT64", "data": [3] * 16}]},
    )
    assert tokens.json()["outputs"][0]["shape"] == [1, 3, 16, 16]


def binary_request(inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """A request in the binary tensor extension, as tritonclient builds it."""
    types = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    header = {
        "inputs": [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": types[a.dtype],
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a in inputs.items()
        ],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
    }
    head = json.dumps(header).encode()
    body = head + b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in inputs.values())
    return body, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def test_binary_round_trip_equals_json(client: TestClient) -> None:
    x = np.random.default_rng(1).random((2, 3, 16, 16)).astype(np.float32)
    body, headers = binary_request({"image": x}, ["tokens", "z_e"])
    r = client.post("/v2/models/vqvae_encoder/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    blobs, offset = {}, n
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = np.int64 if o["datatype"] == "INT64" else np.float32
        blobs[o["name"]] = np.frombuffer(r.content[offset : offset + size], dtype).reshape(o["shape"])
        offset += size
    assert [o["name"] for o in head["outputs"]] == ["tokens", "z_e"]
    as_json = client.post(
        "/v2/models/vqvae_encoder/infer",
        json={
            "inputs": [
                {"name": "image", "shape": [2, 3, 16, 16], "datatype": "FP32", "data": x.reshape(-1).tolist()}
            ]
        },
    ).json()
    json_tokens = next(o for o in as_json["outputs"] if o["name"] == "tokens")
    assert np.array_equal(blobs["tokens"].reshape(-1), json_tokens["data"])
    v1 = client.post(
        "/v2/models/vqvae_encoder/infer",
        json={
            "parameters": {"binary_data_output": True},
            "inputs": [
                {"name": "image", "shape": [2, 3, 16, 16], "datatype": "FP32", "data": x.reshape(-1).tolist()}
            ],
        },
    )
    assert v1.headers["content-type"] == "application/octet-stream"
    trailing, headers = binary_request({"image": x}, ["tokens"])
    r = client.post("/v2/models/vqvae_encoder/infer", content=trailing + b"\0" * 8, headers=headers)
    assert r.status_code == 400 and "8 bytes follow the last binary input" in r.json()["error"]


def test_errors_follow_the_protocol(client: TestClient) -> None:
    def infer(graph: str, inputs: list[dict]) -> tuple[int, dict]:  # type: ignore[type-arg]
        r = client.post(f"/v2/models/{graph}/infer", json={"inputs": inputs})
        return r.status_code, r.json()

    status, body = infer(
        "vae_decoder", [{"name": "latent", "shape": [1, 4], "datatype": "INT64", "data": [0] * 4}]
    )
    assert status == 400 and "FP32" in body["error"] and isinstance(body["error"], str)
    status, body = infer(
        "vae_decoder", [{"name": "latent", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}]
    )
    assert status == 400 and "shape" in body["error"]
    status, body = infer(
        "vae_decoder", [{"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": [0] * 3}]
    )
    assert status == 400
    status, body = infer(
        "vae_elbo", [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]
    )
    assert status == 400 and "missing ['eps']" in body["error"]
    status, body = infer("vae.decoder", [])
    assert status == 404 and "vae_decoder" in body["error"]
    r = client.post(
        "/v2/models/vae_decoder/infer", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    # A fully convolutional graph's free sides: images in multiples of the downsampling factor (4 for the
    # tiny VQ-VAE), token grids of at least 1x1; otherwise ONNX Runtime's shape error would be a 500.
    for shape in ([1, 3, 1, 1], [1, 3, 6, 6], [1, 3, 0, 8]):
        count = int(np.prod(shape))
        status, body = infer(
            "vqvae_encoder", [{"name": "image", "shape": shape, "datatype": "FP32", "data": [0.0] * count}]
        )
        assert status == 400 and "multiples of 4" in body["error"], (shape, body)
    status, body = infer(
        "vqvae_decoder", [{"name": "tokens", "shape": [1, 0, 0], "datatype": "INT64", "data": []}]
    )
    assert status == 400 and "at least one row" in body["error"]
    status, body = infer(
        "vqvae_encoder", [{"name": "image", "shape": [1, 3, 4, 8], "datatype": "FP32", "data": [0.0] * 96}]
    )
    assert status == 200 and body["outputs"][1]["shape"] == [1, 1, 2]
    for data in ([0.5] * 16, [True] * 16, ["1"] * 16, [1] * 15 + [True]):  # token ids are JSON integers
        status, body = infer(
            "vqvae_decoder", [{"name": "tokens", "shape": [1, 4, 4], "datatype": "INT64", "data": data}]
        )
        assert status == 400 and "INT64" in body["error"], data
    status, body = infer(
        "vae_decoder", [{"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": [True] * 4}]
    )
    assert status == 400 and "FP32" in body["error"]
    status, body = infer(
        "vae_decoder",
        [{"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": [[0.5, 1.0], [2, False]]}],
    )
    assert status == 400 and "FP32" in body["error"]
    mae = client.get("/v2/models/mae_reconstruct").json()["inputs"]
    (image_shape,) = [i["shape"][1:] for i in mae if i["name"] == "image"]
    (patches,) = [i["shape"][1] for i in mae if i["name"] == "mask"]
    image = {
        "name": "image",
        "shape": [1, *image_shape],
        "datatype": "FP32",
        "data": [0.5] * int(np.prod(image_shape)),
    }
    for value, code in ((5.0, 400), (0.5, 400), (1.0, 200)):
        mask = {"name": "mask", "shape": [1, patches], "datatype": "FP32", "data": [value] * patches}
        status, body = infer("mae_reconstruct", [image, mask])
        assert status == code and (code == 200 or "0 (visible patch) or 1" in body["error"]), (value, body)
    big = {"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": [10**20, 0, 0, 0]}  # a JSON integer
    assert infer("vae_decoder", [big])[0] == 200
    too_big = {"name": "tokens", "shape": [1, 4, 4], "datatype": "INT64", "data": [2**70] * 16}
    status, body = infer("vqvae_decoder", [too_big])
    assert status == 400 and "INT64" in body["error"]


def test_versions_config_compression_and_classification_as_triton_clients_use_them(
    client: TestClient,
) -> None:
    assert client.get("/v2/models/vqvae_encoder/versions/1").json()["versions"] == ["1"]
    for path in ("/versions/7", "/versions/7/ready", "/versions/2/config"):
        r = client.get(f"/v2/models/vqvae_encoder{path}")
        assert r.status_code == 404 and "only version is '1'" in r.json()["error"], path
    config = client.get("/v2/models/vqvae_encoder/config").json()
    # the largest batch a request may carry, and the runs the batcher forms (defaults: 256 and 32)
    assert config["name"] == "vqvae_encoder" and config["max_batch_size"] == 256
    assert config["dynamic_batching"]["preferred_batch_size"] == [32]
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    assert config["output"][1] == {"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1, -1]}

    z = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    doc = {"inputs": [{"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": z.ravel().tolist()}]}
    plain = client.post("/v2/models/vae_decoder/infer", json=doc).json()
    raw = json.dumps(doc).encode()
    for coding, body in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = client.post("/v2/models/vae_decoder/versions/1/infer", content=body,
                        headers={"Content-Encoding": coding, "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 200 and r.json()["outputs"] == plain["outputs"], coding
    bad = {"br": (raw, 415), "gzip": (b"not gzip at all", 400)}
    for coding, (body, status) in bad.items():
        r = client.post("/v2/models/vae_decoder/infer", content=body, headers={"Content-Encoding": coding})
        assert r.status_code == status and isinstance(r.json()["error"], str), coding
    bomb = gzip.compress(b" " * (20 * 2**20 + 1))  # 20 KiB that inflate past AESERVE_MAX_BODY_BYTES
    r = client.post("/v2/models/vae_decoder/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "inflates" in r.json()["error"]
    trailing = client.post("/v2/models/vae_decoder/infer", content=gzip.compress(raw) + b"junk",
                           headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert trailing.status_code == 400 and "follow the end" in trailing.json()["error"]
    elbo = client.get("/v2/models/vae_elbo/config").json()["output"][0]
    assert elbo["dims"] == [1] and elbo["reshape"] == {"shape": []}  # per-sample scalar, as Triton needs
    cut = client.post("/v2/models/vae_decoder/infer", content=gzip.compress(raw)[:-12],
                      headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert cut.status_code == 400 and "truncated" in cut.json()["error"]
    r = client.post(
        "/v2/models/vae_decoder/infer",
        json={**doc, "outputs": [{"name": "image", "parameters": {"classification": 3}}]},
    )
    assert r.status_code == 400 and "classification" in r.json()["error"]


def test_statistics_count_requests_items_runs_and_their_time(client: TestClient) -> None:
    def stats() -> dict:  # type: ignore[type-arg]
        (entry,) = client.get("/v2/models/vae_decoder/stats").json()["model_stats"]
        return entry  # type: ignore[no-any-return]

    before = stats()
    for n in (2, 1):  # one after the other: two runs, of 2 and 1 items
        z = np.zeros((n, 4), np.float32)
        body = {"inputs": [{"name": "latent", "shape": [n, 4], "datatype": "FP32", "data": z.tolist()}]}
        assert client.post("/v2/models/vae_decoder/infer", json=body).status_code == 200
    after = stats()
    assert after["name"] == "vae_decoder" and after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 3  # items
    assert after["execution_count"] - before["execution_count"] == 2  # runs
    was, now = before["inference_stats"], after["inference_stats"]
    gained = {k: {f: now[k][f] - was[k][f] for f in ("count", "ns")} for k in now}
    assert all(gained[k]["count"] == 2 for k in ("success", "queue", "compute_input", "compute_infer"))
    assert gained["fail"] == {"count": 0, "ns": 0} and gained["cache_hit"] == {"count": 0, "ns": 0}
    assert gained["compute_infer"]["ns"] > 0
    parts = sum(gained[k]["ns"] for k in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert abs(gained["success"]["ns"] - parts) <= 8  # a request's time is its queue plus its run's phases
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    old_sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert sizes[2] - old_sizes.get(2, 0) == 1 and sizes[1] - old_sizes.get(1, 0) == 1
    assert abs(after["last_inference"] / 1000 - time.time()) < 60
    every = client.get("/v2/models/stats").json()["model_stats"]
    assert {e["name"] for e in every} == {e["name"] for e in client.post("/v2/repository/index").json()}
    assert client.get("/v2/models/vae_decoder/versions/1/stats").status_code == 200
    assert client.get("/v2/models/vae_decoder/versions/2/stats").status_code == 404
    assert (
        client.get("/v2/models/nope_decoder/stats")
        .json()["error"]
        .startswith("no graph named 'nope_decoder'")
    )


def test_repository_index_refuses_a_malformed_request(client: TestClient) -> None:
    for body in (b"{", b'{"ready": "yes"}', b"[true]", b"[" + b" " * 5000 + b"]"):
        r = client.post("/v2/repository/index", content=body)
        assert r.status_code == 400 and "index request" in r.json()["error"]
    for action in ("load", "unload"):  # model control: the model directory is the source of truth
        r = client.post(f"/v2/repository/models/vae_decoder/{action}")
        assert r.status_code == 400 and "/v1/admin/reload" in r.json()["error"]


def test_a_malformed_header_length_is_a_400(client: TestClient) -> None:
    for value in ("\u00b2", "9" * 5000, "-1", "12x"):
        r = client.post(
            "/v2/models/vae_decoder/infer",
            content=b"{}",
            headers={"Inference-Header-Content-Length": value.encode("latin-1")},  # type: ignore[dict-item]
        )
        assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"], value


def test_a_large_json_request_parses_off_the_event_loop_to_the_same_answer(client: TestClient) -> None:
    """Over LARGE_JSON_BYTES the body is parsed, and the answer written, in a worker thread."""
    from app.uploads import LARGE_JSON_BYTES

    z = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    doc = {"inputs": [{"name": "latent", "shape": [3, 4], "datatype": "FP32", "data": z.tolist()}]}
    pad = b" " * (LARGE_JSON_BYTES + 1)
    small = client.post("/v2/models/vae_decoder/infer", content=json.dumps(doc).encode())
    large = client.post("/v2/models/vae_decoder/infer", content=json.dumps(doc).encode() + pad)
    assert small.status_code == large.status_code == 200 and small.json() == large.json()
    broken = client.post("/v2/models/vae_decoder/infer", content=b"{" + pad)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    lists = b'{"inputs": [' + b"[]," * 100_000 + b"[]]}"  # mostly empty lists: refused before parsing
    refused = client.post("/v2/models/vae_decoder/infer", content=lists)
    assert refused.status_code == 400 and "100003 JSON lists and objects" in refused.json()["error"]
    objects = b'{"inputs": [' + b'{"":{}},' * 50_000 + b"{}]}"  # objects cost the parser as much
    assert client.post("/v2/models/vae_decoder/infer", content=objects).status_code == 400
    v1_lists = client.post(
        "/v1/models/vae/decode", content=lists, headers={"content-type": "application/json"}
    )
    assert v1_lists.status_code == 422 and "JSON lists" in v1_lists.json()["error"]["message"]
    body = json.dumps({"latent": z.tolist()}).encode()
    json_type = {"content-type": "application/json"}
    v1 = [
        client.post("/v1/models/vae/decode?format=json", content=b, headers=json_type)
        for b in (body, body + pad)
    ]
    assert v1[0].status_code == v1[1].status_code == 200 and v1[0].json() == v1[1].json()


def test_requests_the_protocol_refuses_are_refused_before_the_run(client: TestClient) -> None:
    """A request whose outputs or parameters are bad is a 400 that runs nothing and counts as no
    success; a boolean is no dimension; a flag must be a JSON boolean ("false" is not false)."""
    latent = {"name": "latent", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}

    def executions() -> int:
        (entry,) = client.get("/v2/models/vae_decoder/stats").json()["model_stats"]
        return int(entry["execution_count"]) + int(entry["inference_stats"]["success"]["count"])

    before = executions()
    refused = [
        ({"inputs": [latent], "outputs": [{"name": "nope"}]}, "vae_decoder has no output 'nope'"),
        ({"inputs": [latent], "parameters": {"binary_data_output": "false"}},
         "binary_data_output must be true or false, not 'false'"),
        ({"inputs": [latent], "outputs": [{"name": "image", "parameters": {"binary_data": 0}}]},
         "output 'image': binary_data must be true or false, not 0"),
        ({"inputs": [{**latent, "shape": [True, 4]}]}, "needs a shape of non-negative integers"),
        ({"inputs": [{**latent, "shape": [1, True, 4]}]}, "needs a shape of non-negative integers"),
    ]  # fmt: skip
    for doc, message in refused:
        r = client.post("/v2/models/vae_decoder/infer", json=doc)
        assert r.status_code == 400 and message in r.json()["error"], (doc, r.text)
    assert executions() == before


def test_outputs_json_cannot_carry_are_refused_and_binary_data_carries_them(client: TestClient) -> None:
    """Finite inputs far outside the training range overflow the encoder: JSON has no NaN (RFC 8259), so
    a JSON answer is a 400 saying so, and the same request with binary outputs gets the IEEE values."""
    huge = np.full((1, 3, 32, 32), 3e38, np.float32)
    doc = {"inputs": [{"name": "image", "shape": list(huge.shape), "datatype": "FP32",
                       "data": huge.ravel().tolist()}]}  # fmt: skip
    r = client.post("/v2/models/vae_encoder/infer", json=doc)
    assert r.status_code == 400 and "NaN or infinite values, which JSON cannot carry" in r.json()["error"]
    body, headers = binary_request({"image": huge}, ["mean"])
    r = client.post("/v2/models/vae_encoder/infer", content=body, headers=headers)
    assert r.status_code == 200
    n = int(r.headers["inference-header-content-length"])
    mean = np.frombuffer(r.content[n:], np.float32)
    assert mean.size == 4 and not np.all(np.isfinite(mean))

"""Triton's own HTTP client, unmodified, against a real uvicorn on 127.0.0.1: what docs/API.md promises
a Triton or KServe user."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as tc  # the dev extra: tritonclient[http]
from tritonclient.utils import InferenceServerException

from bench.reliability.server import Server


@pytest.fixture(scope="module")
def triton(tiny_artifacts: Path) -> Iterator[object]:
    with Server(tiny_artifacts) as server:
        client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
        yield client
        client.close()


def test_health_metadata_config_and_repository(triton) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("vqvae_encoder")
    meta = triton.get_model_metadata("vqvae_encoder")
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    config = triton.get_model_config("vqvae_encoder")
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 256  # MAX_IMAGES
    index = {m["name"]: m["state"] for m in triton.get_model_repository_index()}
    assert index["vae_decoder"] == "READY" and len(index) == 14


@pytest.mark.parametrize("binary", [True, False])
def test_infer_in_json_and_binary_gives_the_same_tokens(triton, binary: bool) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(3).random((3, 3, 16, 16)).astype(np.float32)
    image = tc.InferInput("image", list(x.shape), "FP32")
    image.set_data_from_numpy(x, binary_data=binary)
    outputs = [tc.InferRequestedOutput(n, binary_data=binary) for n in ("tokens", "z_e")]
    result = triton.infer("vqvae_encoder", [image], outputs=outputs, request_id="r-1")
    tokens, z_e = result.as_numpy("tokens"), result.as_numpy("z_e")
    assert tokens.shape == (3, 4, 4) and tokens.dtype == np.int64 and z_e.shape[0] == 3
    assert result.get_response()["id"] == "r-1"
    # the tokens decode back through the decoder graph, as a downstream generator would use them
    grid = tc.InferInput("tokens", list(tokens.shape), "INT64")
    grid.set_data_from_numpy(tokens, binary_data=binary)
    decoded = triton.infer("vqvae_decoder", [grid]).as_numpy("image")
    assert decoded.shape == (3, 3, 16, 16) and np.isfinite(decoded).all()


def test_compressed_requests_statistics_and_errors(triton) -> None:  # type: ignore[no-untyped-def]
    z = np.zeros((2, 4), np.float32)
    latent = tc.InferInput("latent", [2, 4], "FP32")
    latent.set_data_from_numpy(z)
    before = triton.get_inference_statistics("vae_decoder")["model_stats"][0]["inference_count"]
    for algorithm in ("gzip", "deflate"):
        out = triton.infer("vae_decoder", [latent], request_compression_algorithm=algorithm)
        assert out.as_numpy("image").shape == (2, 3, 32, 32)
    after = triton.get_inference_statistics("vae_decoder")["model_stats"][0]["inference_count"]
    assert after - before == 4  # items
    wrong = tc.InferInput("latent", [2, 5], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"has shape \[2, 5\]; the graph expects \[-1, 4\]"):
        triton.infer("vae_decoder", [wrong])
    with pytest.raises(InferenceServerException, match="no graph named 'nope'"):
        triton.get_model_metadata("nope")

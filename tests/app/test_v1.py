"""Every /v1 endpoint over the four tiny models made by the real training and export code."""

import base64
import gzip
import hashlib
import io
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

KINDS = ("vae", "beta_vae", "vqvae", "mae")
SUPPORTED = {
    "vae": {"reconstruct", "encode", "decode", "interpolate", "sample", "traverse", "score"},
    "vqvae": {"reconstruct", "encode", "decode", "interpolate", "tokens", "codebook", "score"},
    "mae": {"reconstruct", "encode", "inpaint", "score"},
}
SUPPORTED["beta_vae"] = SUPPORTED["vae"]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)


def info(client: TestClient, kind: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/v1/models/{kind}")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def upload(data: bytes, field: str = "image") -> dict[str, tuple[str, bytes, str]]:
    return {field: ("x.png", data, "image/png")}


def test_list_and_describe_models(client: TestClient, tiny_artifacts: Path, image_bytes) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/v1/models").json()["models"]
    assert sorted(m["name"] for m in listed) == sorted(KINDS)
    for kind in KINDS:
        m = info(client, kind)
        manifest = json.loads((tiny_artifacts / kind / "manifest.json").read_text())
        assert m["status"] == "ready" and m["reason"] is None
        assert set(m["operations"]) == SUPPORTED[kind]
        assert m["input"]["height"] == manifest["input"]["height"]
        assert m["input"]["channels"] == manifest["input"]["channels"]
        assert m["latent"]["shape"] == manifest["latent"]["shape"]
        assert set(m["graphs"]) == set(manifest["graphs"])
        assert all(g["provider"] == "CPUExecutionProvider" for g in m["graphs"].values())
        assert m["model_card"] == (tiny_artifacts / kind / "README.md").read_text()
        digest = hashlib.sha256((tiny_artifacts / kind / "manifest.json").read_bytes()).hexdigest()
        assert m["version"] == digest[:16] and m["created"] == manifest["created"]
    assert info(client, "vqvae")["latent"]["codebook_size"] == manifest_codebook(tiny_artifacts).shape[0]
    version = info(client, "vqvae")["version"]
    assert client.get("/v1/models/vqvae/codebook").headers["x-model-version"] == version
    odd = client.post("/v1/models/vqvae/tokens?fit=none", files=[("images", ("a.png", image_bytes(18, 18)))])
    assert odd.status_code == 422 and odd.headers["x-model-version"] == version  # the model answered


def manifest_codebook(root: Path) -> np.ndarray:
    return np.load(root / "vqvae" / "codebook.npy")


@pytest.mark.parametrize("kind", KINDS)
def test_reconstruct_png_and_json(client: TestClient, image_bytes, kind: str) -> None:  # type: ignore[no-untyped-def]
    m = info(client, kind)
    h, w = m["input"]["height"], m["input"]["width"]
    r = client.post(f"/v1/models/{kind}/reconstruct", files=upload(image_bytes(40, 30)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-image-fit"] == f"center-crop 40x30 -> {w}x{h}"
    assert Image.open(io.BytesIO(r.content)).size == (w, h)
    j = client.post(
        f"/v1/models/{kind}/reconstruct",
        files=upload(image_bytes(40, 30)),
        headers={"Accept": "application/json"},
    ).json()
    assert j["fit"] == f"center-crop 40x30 -> {w}x{h}"
    assert base64.b64decode(j["image"]) == r.content
    assert j["psnr"] == pytest.approx(10 * math.log10(1 / j["mse"]))


def test_raw_body_and_fit_modes(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    for fmt, ctype in (
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
    ):
        r = client.post(
            "/v1/models/vae/reconstruct?fit=pad",
            content=image_bytes(40, 30, fmt=fmt),
            headers={"content-type": ctype},
        )
        assert r.status_code == 200 and r.headers["x-image-fit"] == "pad 40x30 -> 32x32"
    gray = client.post("/v1/models/vae/encode", files=upload(image_bytes(32, 32, mode="LA")))
    assert gray.status_code == 200


def test_vae_reconstruct_is_decode_of_the_mean(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    img = image_bytes(32, 32)
    mean = client.post("/v1/models/vae/encode", files=upload(img)).json()["mean"]
    decoded = client.post("/v1/models/vae/decode", json={"latent": mean})
    assert (
        np.abs(
            pixels(decoded.content)
            - pixels(client.post("/v1/models/vae/reconstruct", files=upload(img)).content)
        ).max()
        <= 1
    )


def test_encode_shapes_seeded_sample_and_npy(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    img = image_bytes()
    vae = client.post("/v1/models/vae/encode?sample=true&seed=7", files=upload(img)).json()
    mean, logvar = np.array(vae["mean"]), np.array(vae["logvar"])
    eps = np.random.default_rng(7).standard_normal((1, len(mean))).astype(np.float32)[0]
    np.testing.assert_allclose(vae["sample"], mean + np.exp(logvar / 2) * eps, rtol=1e-5, atol=1e-6)
    npy = client.post("/v1/models/vae/encode?format=npy", files=upload(img))
    assert npy.headers["x-array"] == "mean"
    np.testing.assert_allclose(np.load(io.BytesIO(npy.content)), mean, rtol=1e-6)
    vq = client.post("/v1/models/vqvae/encode", files=upload(img)).json()
    assert np.array(vq["tokens"]).shape == (4, 4) and vq["codebook_size"] == 16
    mae = client.post("/v1/models/mae/encode", files=upload(img)).json()
    assert len(mae["embedding"]) == info(client, "mae")["latent"]["shape"][0]
    bad = client.post("/v1/models/mae/encode?sample=true", files=upload(img))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "sample"
    assert "z_e" not in vq  # asked for only: D floats per token
    with_z = client.post("/v1/models/vqvae/encode?z_e=true", files=upload(img)).json()
    assert np.array(with_z["z_e"]).shape == (4, 4, 4) and with_z["tokens"] == vq["tokens"]  # [D, h, w]
    bad = client.post("/v1/models/vae/encode?z_e=true", files=upload(img))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "z_e"


@pytest.mark.parametrize(
    ("kind", "query"), [("vae", "sample=true&seed=3"), ("vqvae", "z_e=true"), ("mae", "")]
)
def test_encode_many_images_gives_each_row_as_alone(  # type: ignore[no-untyped-def]
    client: TestClient, image_bytes, kind: str, query: str
) -> None:
    imgs = [image_bytes(seed=i) for i in range(3)]
    many = client.post(
        f"/v1/models/{kind}/encode?{query}",
        files=[("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(imgs)],
    )
    assert many.status_code == 200 and len(many.json()["fit"]) == 3
    for i, img in enumerate(imgs):
        alone = client.post(f"/v1/models/{kind}/encode?{query}", files=upload(img)).json()
        for key, value in alone.items():
            if key not in ("fit", "codebook_size", "seed"):
                np.testing.assert_allclose(many.json()[key][i], value, rtol=1e-5, atol=1e-6, err_msg=key)
    stacked = client.post(
        f"/v1/models/{kind}/encode?{query}&format=npy",
        files=[("images", ("a.png", b, "image/png")) for b in imgs],
    )
    assert np.load(io.BytesIO(stacked.content)).shape[0] == 3
    both = client.post(
        f"/v1/models/{kind}/encode",
        files=[("image", ("a.png", imgs[0], "image/png")), ("images", ("b.png", imgs[1], "image/png"))],
    )
    assert both.status_code == 422 and both.json()["error"]["field"] == "images"


def test_mae_reconstruct_keeps_a_quarter_of_the_patches_and_predicts_the_rest(
    client: TestClient, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    m = info(client, "mae")
    img = image_bytes(m["input"]["width"], m["input"]["height"])  # the model's size: no fitting
    recon = pixels(client.post("/v1/models/mae/reconstruct", files=upload(img)).content).astype(int)
    again = pixels(client.post("/v1/models/mae/reconstruct", files=upload(img)).content).astype(int)
    original = pixels(img).astype(int)
    p = m["patch_size"]
    grid = recon.shape[0] // p
    kept = [
        bool(
            (
                recon[i * p : (i + 1) * p, j * p : (j + 1) * p]
                == original[i * p : (i + 1) * p, j * p : (j + 1) * p]
            ).all()
        )
        for i in range(grid)
        for j in range(grid)
    ]
    assert sum(kept) == max(1, int(grid * grid * 0.25))  # the visible patches, exactly the input's pixels
    np.testing.assert_array_equal(recon, again)  # a fixed seeded mask: the same answer every time


def test_vqvae_tokens_decode_to_the_reconstruction(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    img = image_bytes(16, 16)
    tokens = client.post("/v1/models/vqvae/encode", files=upload(img)).json()["tokens"]
    decoded = client.post("/v1/models/vqvae/decode", json={"tokens": tokens})
    recon = client.post("/v1/models/vqvae/reconstruct", files=upload(img))
    assert np.abs(pixels(decoded.content) - pixels(recon.content)).max() <= 1


def test_reconstruct_runs_the_fused_graph_and_older_artifacts_without_it_still_serve(
    client: TestClient, artifact_copy: Path, make_settings, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    img = image_bytes(32, 32)
    for kind in ("vae", "vqvae"):  # an artifact from before the fused graph: encoder, then decoder
        manifest_file = artifact_copy / kind / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        (artifact_copy / kind / manifest["graphs"].pop("reconstruct")["file"]).unlink()
        manifest_file.write_text(json.dumps(manifest))
    registry = client.app.state.registry  # type: ignore[attr-defined]
    with TestClient(create_app(make_settings(artifact_copy))) as old:
        for kind in ("vae", "vqvae"):
            fused = registry.graphs[f"{kind}_reconstruct"].batcher.stats
            before = fused.requests
            new = pixels(client.post(f"/v1/models/{kind}/reconstruct", files=upload(img)).content)
            assert fused.requests == before + 1  # one run of the fused graph, not encoder + decoder
            assert f"{kind}_reconstruct" not in old.app.state.registry.graphs  # type: ignore[attr-defined]
            two_step = pixels(old.post(f"/v1/models/{kind}/reconstruct", files=upload(img)).content)
            assert np.abs(new - two_step).max() <= 1


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("vqvae", {"tokens": [[99] * 4] * 4}, "tokens"),
        ("vqvae", {"tokens": [[-1] * 4] * 4}, "tokens"),
        ("vqvae", {"tokens": [1, 2, 3]}, "tokens"),
        ("vqvae", {"tokens": [[0.5] * 4] * 4}, "tokens"),
        ("vae", {"latent": [0.0, 1.0]}, "latent"),
        ("vae", {"latent": [[0.0], [1.0, 2.0]]}, "latent"),
        ("vae", {"latent": [True, False, True, False]}, "latent"),
        ("vae", {"latent": ["1", "2", "3", "4"]}, "latent"),
        ("vae", {"latent": [0.5, 1.0, 2.0, True]}, "latent"),  # numpy alone would read true as 1.0
        ("vae", {"latent": [10**30, "1", 2, 3]}, "latent"),  # numpy: an object array, "1" read as 1.0
        ("vae", {"latent": [1e39, 1, 2, 3]}, "latent"),  # finite in JSON, infinite in float32
        ("vqvae", {"tokens": [[1, 2, 3, 4]] * 3 + [[1, 2, 3, False]]}, "tokens"),
        ("vae", {}, "latent"),
    ],
)
def test_decode_rejects_bad_input_naming_the_field(
    client: TestClient, kind: str, body: dict, field: str
) -> None:  # type: ignore[type-arg]
    r = client.post(f"/v1/models/{kind}/decode", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field and r.json()["error"]["code"] == "invalid_input"


def test_decode_rejects_nan_and_infinity(client: TestClient) -> None:
    for literal in ("NaN", "Infinity"):
        r = client.post(
            "/v1/models/vae/decode",
            content=f'{{"latent": [0, 0, 0, {literal}]}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and "NaN or infinite" in r.json()["error"]["message"]


def total_ms(animation: bytes) -> int:
    img = Image.open(io.BytesIO(animation))
    total = 0
    for i in range(img.n_frames):
        img.seek(i)
        total += int(img.info["duration"])
    return total


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_interpolate_formats(client: TestClient, image_bytes, kind: str) -> None:  # type: ignore[no-untyped-def]
    size = info(client, kind)["input"]["width"]
    files = {
        "start": ("a.png", image_bytes(seed=1), "image/png"),
        "end": ("b.png", image_bytes(seed=2), "image/png"),
    }
    strip = client.post(f"/v1/models/{kind}/interpolate?steps=5&method=slerp", files=files)
    assert strip.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(strip.content)).size == (5 * size + 4 * 2, size)
    gif = client.post(f"/v1/models/{kind}/interpolate?steps=5&format=gif", files=files)
    assert total_ms(gif.content) == 5 * 100  # identical frames may merge; the timeline stays 5 steps
    webp = client.post(f"/v1/models/{kind}/interpolate?steps=3&format=webp", files=files)
    assert webp.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(webp.content)).n_frames == 3
    frames = client.post(f"/v1/models/{kind}/interpolate?steps=4&format=json", files=files).json()["frames"]
    assert len(frames) == 4
    for steps in (1, 65):
        r = client.post(f"/v1/models/{kind}/interpolate?steps={steps}", files=files)
        assert r.status_code == 422 and r.json()["error"]["field"] == "steps"
    for field in ("start", "end"):  # the error names the image that is broken
        broken = {**files, field: ("x.png", b"not an image", "image/png")}
        r = client.post(f"/v1/models/{kind}/interpolate", files=broken)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_interpolate_latents_ends_at_the_decoded_endpoints(client: TestClient) -> None:
    start, end = [1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, -0.5]
    frames = client.post("/v1/models/vae/interpolate?steps=3&format=json", json={"start": start, "end": end})
    first = base64.b64decode(frames.json()["frames"][0])
    assert np.array_equal(
        pixels(first), pixels(client.post("/v1/models/vae/decode", json={"latent": start}).content)
    )
    z = np.zeros((4, 4, 4)).tolist()  # VQ-VAE: continuous z_e [D, h, w]
    assert client.post("/v1/models/vqvae/interpolate?steps=2", json={"start": z, "end": z}).status_code == 200
    bad = client.post("/v1/models/vqvae/interpolate", json={"start": z, "end": [[0.0]]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "end"


def test_inpaint_keeps_visible_pixels_and_masks_touched_patches(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    img = image_bytes(16, 16)  # the MAE's own size: fit=none keeps it exactly
    mask = Image.new("L", (16, 16), 0)
    mask.putpixel((5, 1), 255)  # touches patch (row 0, col 1) of the 4x4 grid of 4-pixel patches
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    files = {"image": ("x.png", img, "image/png"), "mask": ("m.png", buf.getvalue(), "image/png")}
    j = client.post("/v1/models/mae/inpaint?fit=none&format=json", files=files).json()
    expected = np.zeros((4, 4), int)
    expected[0, 1] = 1
    assert np.array_equal(j["mask"], expected) and j["masked_patches"] == 1
    out, original = pixels(base64.b64decode(j["image"])), pixels(img)
    visible = np.ones((16, 16), bool)
    visible[0:4, 4:8] = False
    assert np.array_equal(out[visible], original[visible])
    assert np.array(j["patch_error"]).shape == (4, 4)
    a = client.post("/v1/models/mae/inpaint?mask_ratio=0.5&seed=3&format=json", files=upload(img)).json()
    b = client.post("/v1/models/mae/inpaint?mask_ratio=0.5&seed=3&format=json", files=upload(img)).json()
    assert a["mask"] == b["mask"] and a["masked_patches"] == 8
    both = client.post("/v1/models/mae/inpaint?mask_ratio=0.5", files=files)
    assert both.status_code == 422 and both.json()["error"]["field"] == "mask_ratio"
    png = client.post("/v1/models/mae/inpaint", files=upload(img))
    assert png.headers["content-type"] == "image/png"


def test_compressed_bodies_are_inflated(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    img = image_bytes()
    plain = client.post("/v1/models/vae/encode", files=upload(img)).json()
    raw = client.post("/v1/models/vae/encode", content=gzip.compress(img),
                      headers={"Content-Type": "image/png", "Content-Encoding": "gzip"})  # fmt: skip
    assert raw.status_code == 200 and raw.json()["mean"] == plain["mean"]
    request = client.build_request("POST", "/v1/models/vae/encode", files=upload(img))
    deflated = {"Content-Type": request.headers["content-type"], "Content-Encoding": "deflate"}
    multipart = client.post("/v1/models/vae/encode", content=zlib.compress(request.read()), headers=deflated)
    assert multipart.status_code == 200 and multipart.json()["mean"] == plain["mean"]
    z = {"latent": plain["mean"]}
    gzipped = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    decoded = client.post(
        "/v1/models/vae/decode", content=gzip.compress(json.dumps(z).encode()), headers=gzipped
    )
    assert decoded.status_code == 200
    assert decoded.content == client.post("/v1/models/vae/decode", json=z).content
    bad = client.post(
        "/v1/models/vae/encode", content=img, headers={"Content-Type": "image/png", "Content-Encoding": "br"}
    )
    assert bad.status_code == 415 and "Content-Encoding" in bad.json()["error"]["message"]


def inpaint_with_mask(client: TestClient, image: bytes, mask: Image.Image, query: str = "") -> dict:  # type: ignore[type-arg]
    """The MAE's JSON inpainting answer for `image` with `mask` sent as a PNG."""
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    files = {"image": ("x.png", image, "image/png"), "mask": ("m.png", buf.getvalue(), "image/png")}
    return client.post(f"/v1/models/mae/inpaint?format=json&{query}", files=files).json()  # type: ignore[no-any-return]


def test_inpaint_mask_painted_on_a_transparent_layer_marks_only_its_strokes(
    client: TestClient, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent: kept
    mask.putpixel((5, 1), (255, 255, 255, 255))  # one opaque white pixel: patch (row 0, col 1)
    mask.putpixel((13, 13), (255, 255, 255, 40))  # white but nearly transparent: kept
    j = inpaint_with_mask(client, image_bytes(16, 16), mask, "fit=none")
    expected = np.zeros((4, 4), int)
    expected[0, 1] = 1
    assert np.array_equal(j["mask"], expected), j["mask"]


def test_inpaint_mask_on_a_large_image_keeps_thin_strokes(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    # 160x120, center-crop to the tiny MAE's 16x16: the crop is x 20..140, scaled down 7.5 times, so a
    # one-pixel line at y = 60 lies in output row 8 (patch row 2) and a dot at (80, 15) in output
    # pixel (8, 2) (patch row 0, column 2). A smooth downscale fades both to about 1/7.5 and loses them.
    mask = Image.new("L", (160, 120), 0)
    for x in range(160):
        mask.putpixel((x, 60), 255)
    mask.putpixel((80, 15), 255)
    j = inpaint_with_mask(client, image_bytes(160, 120), mask)
    expected = np.zeros((4, 4), int)
    expected[2, :] = 1
    expected[0, 2] = 1
    assert np.array_equal(j["mask"], expected), j["mask"]


def test_tokens_many_images_json_and_npy(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    files = [("images", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in range(3)]
    j = client.post("/v1/models/vqvae/tokens", files=files).json()
    assert j["shape"] == [3, 4, 4] and j["codebook_size"] == 16 and len(j["fit"]) == 3
    stacked = np.load(io.BytesIO(client.post("/v1/models/vqvae/tokens?format=npy", files=files).content))
    assert stacked.dtype == np.int64 and np.array_equal(stacked, j["tokens"])
    big = client.post(
        "/v1/models/vqvae/tokens?fit=none", files=[("images", ("a.png", image_bytes(32, 24), "image/png"))]
    )
    assert big.json()["shape"] == [1, 6, 8]  # fully convolutional: a 32x24 image keeps its size
    odd = client.post(
        "/v1/models/vqvae/tokens?fit=none", files=[("images", ("a.png", image_bytes(18, 18), "image/png"))]
    )
    assert odd.status_code == 422 and odd.json()["error"]["field"] == "fit"
    trimmed = client.post(
        "/v1/models/vqvae/tokens?fit=trim", files=[("images", ("a.png", image_bytes(18, 18), "image/png"))]
    )
    assert trimmed.json()["shape"] == [1, 4, 4] and trimmed.json()["fit"] == ["trim 18x18 -> 16x16"]


def test_codebook(client: TestClient, tiny_artifacts: Path) -> None:
    expected = manifest_codebook(tiny_artifacts)
    npy = np.load(io.BytesIO(client.get("/v1/models/vqvae/codebook").content))
    assert np.array_equal(npy, expected)
    assert np.allclose(client.get("/v1/models/vqvae/codebook?format=json").json()["codebook"], expected)


def test_sample_is_seeded(client: TestClient) -> None:
    a = client.post("/v1/models/vae/sample?n=4&seed=5")
    assert a.content == client.post("/v1/models/vae/sample?n=4&seed=5").content
    assert a.content != client.post("/v1/models/vae/sample?n=4&seed=6").content
    j = client.post("/v1/models/beta_vae/sample?n=2&seed=5&format=json").json()
    np.testing.assert_allclose(j["latents"], np.random.default_rng(5).standard_normal((2, 4)), rtol=1e-6)
    assert client.post("/v1/models/vae/sample?n=65").json()["error"]["field"] == "n"


def test_traverse_grid(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/models/vae/traverse?steps=3&low=-2&high=2")
    assert Image.open(io.BytesIO(r.content)).size == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2)  # 4 dims x 3 steps
    j = client.post(
        "/v1/models/vae/traverse?steps=2&dims=1,3&format=json", files=upload(image_bytes())
    ).json()
    assert j["dims"] == [1, 3] and len(j["images"]) == 2 and len(j["images"][0]) == 2 and j["fit"]
    bad = client.post("/v1/models/vae/traverse?dims=9")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "dims"
    twice = client.post("/v1/models/vae/traverse?dims=0,0,0")  # no grid of one row repeated
    assert twice.status_code == 422 and "twice" in twice.json()["error"]["message"]


def test_score_per_kind(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    files = [
        ("image", ("a.png", image_bytes(seed=1), "image/png")),
        ("image", ("b.png", image_bytes(seed=2), "image/png")),
    ]
    vae = client.post("/v1/models/vae/score", files=files).json()
    assert len(vae["scores"]) == 2 and vae["unit"] == "bits/dim" and "eps=0" in vae["method"]
    sampled = client.post("/v1/models/vae/score?samples=3&seed=1", files=files).json()
    assert "3 seeded samples" in sampled["method"] and sampled["scores"] != vae["scores"]
    vq = client.post("/v1/models/vqvae/score", files=files[:1]).json()
    recon = client.post("/v1/models/vqvae/reconstruct?format=json", files=upload(image_bytes(seed=1))).json()
    assert vq["scores"][0] == pytest.approx(recon["mse"]) and vq["unit"] == "mse"
    mae = client.post("/v1/models/mae/score", files=files).json()
    assert "masked-patch MSE" in mae["method"] and "75%" in mae["method"]
    plain = client.post("/v1/models/mae/score?samples=0", files=files).json()
    assert "reconstruction MSE" in plain["method"]


@pytest.mark.parametrize(("kind", "query"), [("vae", "samples=4&seed=2"), ("mae", ""), ("mae", "samples=0")])
def test_a_score_does_not_depend_on_the_other_images_in_the_request(  # type: ignore[no-untyped-def]
    client: TestClient, image_bytes, kind: str, query: str
) -> None:
    a, b = (("image", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in (1, 2))
    alone, first, second = (
        client.post(f"/v1/models/{kind}/score?{query}", files=files).json()["scores"]
        for files in ([a], [a, b], [b, a])
    )
    assert first[0] == pytest.approx(alone[0], rel=1e-5) and second[1] == pytest.approx(alone[0], rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_operation_names_the_supported_ones(client: TestClient, kind: str) -> None:
    for op in {"inpaint", "tokens", "sample", "traverse", "interpolate"} - SUPPORTED[kind]:
        r = client.post(f"/v1/models/{kind}/{op}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "operation_not_supported"
        assert all(s in r.json()["error"]["message"] for s in SUPPORTED[kind])
    if "codebook" not in SUPPORTED[kind]:
        assert client.get(f"/v1/models/{kind}/codebook").status_code == 404


def test_error_codes_and_shape(client: TestClient, image_bytes) -> None:  # type: ignore[no-untyped-def]
    unknown = client.get("/v1/models/../../etc/passwd")
    assert unknown.status_code == 404 and "error" in unknown.json()
    missing = client.post("/v1/models/nope/reconstruct", files=upload(image_bytes()))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    text = client.post("/v1/models/vae/reconstruct", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type"
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, "BMP")
    assert client.post("/v1/models/vae/reconstruct", files=upload(bmp.getvalue())).status_code == 415
    garbage = client.post("/v1/models/vae/reconstruct", files=upload(b"\x89PNG garbage"))
    assert garbage.status_code == 422 and garbage.json()["error"]["field"] == "image"
    no_field = client.post("/v1/models/vae/reconstruct", files=upload(image_bytes(), "picture"))
    assert no_field.status_code == 422 and no_field.json()["error"]["field"] == "image"
    bad_fit = client.post("/v1/models/vae/reconstruct?fit=stretch", files=upload(image_bytes()))
    assert bad_fit.status_code == 422 and bad_fit.json()["error"]["field"] == "fit"
    # an option sent as a form field instead of in the query string is refused, not silently ignored
    as_form = client.post("/v1/models/mae/inpaint", files=upload(image_bytes()), data={"mask_ratio": "0.1"})
    error = as_form.json()["error"]
    assert (
        as_form.status_code == 422 and error["field"] == "mask_ratio" and "query string" in error["message"]
    )
    text_image = client.post(
        "/v1/models/mae/inpaint", files=upload(image_bytes(), "mask"), data={"image": "a"}
    )
    assert text_image.status_code == 422 and "must be a file" in text_image.json()["error"]["message"]
    assert client.delete("/v1/models").status_code == 405

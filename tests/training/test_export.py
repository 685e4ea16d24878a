"""ONNX export: artifact layout, manifest, ORT-vs-torch parity, the failure path and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training import export
from training.__main__ import main as cli
from training.checkpoint import load_model
from training.errors import UserError
from training.export import export_artifact, sha256_file

KINDS = ("vae", "beta_vae", "vqvae", "mae")
GRAPHS = {
    "vae": {"encoder", "decoder", "elbo", "reconstruct"},
    "beta_vae": {"encoder", "decoder", "elbo", "reconstruct"},
    "vqvae": {"encoder", "decoder", "decoder_continuous", "reconstruct"},
    "mae": {"reconstruct", "encoder"},
}
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}


def _manifest(artifact: Path) -> dict[str, Any]:
    return json.loads((artifact / "manifest.json").read_text())


def _session(artifact: Path, graph: str) -> ort.InferenceSession:
    file = artifact / _manifest(artifact)["graphs"][graph]["file"]
    return ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])


def _masks(ratios: list[float], num_patches: int, seed: int) -> np.ndarray:
    """One random mask per ratio, [N, L] float32, 1 = removed; drawn here, not by the model's helper."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((len(ratios), num_patches), np.float32)
    for row, ratio in zip(masks, ratios, strict=True):
        row[rng.permutation(num_patches)[: int(round(num_patches * ratio))]] = 1.0
    return masks


def _feeds_and_reference(model: Any, kind: str, graph: str, batch: int, hw: tuple[int, int], seed: int):
    """Inputs for one graph and torch's outputs for them, computed with the model's own stage methods
    (independently of export.py's wrappers). Returns (feeds, {output name: array})."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    image = torch.rand(batch, cfg.channels, *hw, generator=g)
    with torch.no_grad():
        if kind in ("vae", "beta_vae"):
            z = torch.randn(batch, cfg.latent_dim, generator=g)
            if graph == "encoder":
                mean, logvar = model.encode(image)
                return {"image": image}, {"mean": mean, "logvar": logvar}
            if graph == "decoder":
                return {"latent": z}, {"image": model.decode(z)}
            if graph == "reconstruct":
                return {"image": image}, {"reconstruction": model.decode(model.encode(image)[0])}
            if cfg.likelihood == "bernoulli":
                image = (image > 0.5).float()
            return {"image": image, "eps": z}, {"bits_per_dim": model.neg_elbo(image, z)["bits_per_dim"]}
        if kind == "vqvae":
            if graph == "encoder":
                z_e = model.encode(image)
                return {"image": image}, {"z_e": z_e, "tokens": model.quantize(z_e)[1]}
            if graph == "decoder":
                tokens = torch.randint(0, cfg.codebook_size, (batch, hw[0] // 4, hw[1] // 4), generator=g)
                return {"tokens": tokens}, {"image": model.decode_tokens(tokens)}
            z_e = model.encode(image)
            image_out, tokens = model.decode_continuous(z_e)
            if graph == "reconstruct":  # z_e is not an output here; _check_outputs reads it from the feeds
                return {"image": image, "z_e": z_e}, {"reconstruction": image_out, "tokens": tokens}
            return {"z_e": z_e}, {"image": image_out, "tokens": tokens}
        if graph == "encoder":
            return {"image": image}, {"embedding": model.embed(image)}
        ratios = [0.75, 0.5, 0.25, 0.9, 0.0][:batch] + [0.75] * max(0, batch - 5)
        mask = torch.from_numpy(_masks(ratios, (hw[0] // cfg.patch_size) ** 2, seed))
        return {"image": image, "mask": mask}, {"reconstruction": model.reconstruct(image, mask)}


def _assert_close(got: np.ndarray, want: torch.Tensor, name: str) -> None:
    assert got.shape == tuple(want.shape) and got.dtype == want.numpy().dtype, name
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4, err_msg=name)


def _tied(codebook: np.ndarray, z_e: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where codes a and b are equally near z_e [N, D, h, w] up to fp32 rounding (either is right)."""
    z = z_e.transpose(0, 2, 3, 1).astype(np.float64)
    codes = codebook.astype(np.float64)
    gap = ((z - codes[a]) ** 2).sum(-1) - ((z - codes[b]) ** 2).sum(-1)
    return np.abs(gap) <= 1e-5 * ((z**2).sum(-1) + (codes[a] ** 2).sum(-1))


def _check_outputs(model: Any, feeds: dict, want: dict, got: list[np.ndarray], name: str) -> None:
    """Tokens: >= 99.9% equal or tied; floats: within 1e-4 on the samples whose tokens are all equal."""
    same = np.ones(len(got[0]), dtype=bool)
    for (out_name, ref), out in zip(want.items(), got, strict=True):
        if ref.dtype == torch.int64:
            assert out.shape == tuple(ref.shape) and out.dtype == np.int64
            equal = out == ref.numpy()
            z_e = (want.get("z_e") if "z_e" in want else feeds["z_e"]).numpy()
            agree = equal | _tied(model.codebook.numpy(), z_e, ref.numpy(), out)
            assert agree.mean() >= 0.999, f"{name}.{out_name}"
            same &= equal.reshape(len(out), -1).all(1)
    assert same.any(), name
    for (out_name, ref), out in zip(want.items(), got, strict=True):
        if ref.dtype != torch.int64:
            _assert_close(out[same], ref[same], f"{name}.{out_name}")


# --- layout and manifest ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_artifact_holds_every_file_the_manifest_names_with_matching_sha256(tiny_artifacts: Path, kind: str):
    artifact = tiny_artifacts / kind
    manifest = _manifest(artifact)
    assert manifest["format_version"] == 1
    assert manifest["kind"] == kind and manifest["name"] == kind
    assert set(manifest["graphs"]) == GRAPHS[kind]
    entries = [*manifest["graphs"].values(), *manifest["files"].values()]
    for entry in entries:
        assert sha256_file(artifact / entry["file"]) == entry["sha256"]
    named = {e["file"] for e in entries} | {"manifest.json", manifest["model_card"]}
    assert {p.name for p in artifact.iterdir()} == named  # nothing extra, nothing half-written
    assert manifest["opset"] == 17
    assert manifest["metrics"] == {}


@pytest.mark.parametrize("kind", KINDS)
def test_graphs_share_one_copy_of_each_weight(tiny_artifacts: Path, kind: str):
    artifact = tiny_artifacts / kind
    manifest = _manifest(artifact)
    weights = artifact / manifest["files"]["weights"]["file"]
    users: dict[tuple[int, int], set[str]] = {}  # (offset, length) in weights.bin -> graphs that read it
    for graph_name, entry in manifest["graphs"].items():
        graph = onnx.load(str(artifact / entry["file"]), load_external_data=False).graph
        for tensor in graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                assert len(onnx.numpy_helper.to_array(tensor).tobytes()) < 1024  # only small ones inline
                continue
            where = {e.key: e.value for e in tensor.external_data}
            assert where["location"] == weights.name
            users.setdefault((int(where["offset"]), int(where["length"])), set()).add(graph_name)
    blobs = [weights.read_bytes()[o : o + n] for o, n in users]
    assert len(set(blobs)) == len(blobs)  # each weight stored once
    assert weights.stat().st_size < sum(n for _, n in users) + 4096 * len(users)
    shared = [u for u in users.values() if len(u) > 1]
    assert shared  # every kind has a stage whose weights another graph also holds
    if kind in ("vae", "beta_vae"):  # encoder, decoder, and the fused reconstruct and elbo graphs
        assert max(len(u) for u in users.values()) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_ports_match_the_onnx_graphs(tiny_artifacts: Path, kind: str):
    artifact = tiny_artifacts / kind
    for graph_name, entry in _manifest(artifact)["graphs"].items():
        graph = onnx.load(str(artifact / entry["file"])).graph
        assert onnx.load(str(artifact / entry["file"])).opset_import[0].version == 17
        for ports, values in ((entry["inputs"], graph.input), (entry["outputs"], graph.output)):
            assert [p["name"] for p in ports] == [v.name for v in values], graph_name
            for port, value in zip(ports, values, strict=True):
                tensor = value.type.tensor_type
                assert ONNX_DTYPES[tensor.elem_type] == port["dtype"]
                dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
                assert dims == port["shape"], f"{graph_name}.{port['name']}"
                assert port["shape"][0] == "batch"  # the batch axis is dynamic everywhere
                if kind == "vqvae":  # and the VQ-VAE's spatial axes too
                    assert all(isinstance(d, str) for d in port["shape"][-2:])


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_fields_describe_the_model(
    tiny_artifacts: Path, tiny_checkpoints: dict[str, Path], kind: str
):
    manifest = _manifest(tiny_artifacts / kind)
    model, state = load_model(tiny_checkpoints[kind])
    cfg = model.config
    inp = manifest["input"]
    assert (inp["height"], inp["width"], inp["channels"]) == (cfg.image_size, cfg.image_size, cfg.channels)
    assert inp["layout"] == "NCHW" and inp["dtype"] == "float32" and inp["range"] == [0.0, 1.0]
    assert manifest["training"]["model"] == state["model_config"]
    assert manifest["training"]["train"] == state["train_config"]
    assert manifest["training"]["data"] == state["data"]
    weights = tiny_checkpoints[kind] / "model.safetensors"
    assert manifest["training"]["checkpoint_sha256"] == sha256_file(weights)
    latent = manifest["latent"]
    if kind in ("vae", "beta_vae"):
        assert latent["shape"] == [cfg.latent_dim]
        assert manifest["likelihood"] == cfg.likelihood == ("bernoulli" if kind == "beta_vae" else "gaussian")
        assert manifest["patch_size"] is None and latent["codebook_size"] is None
    elif kind == "vqvae":
        side = cfg.image_size // 4
        assert latent == {"shape": [cfg.code_dim, side, side], "codebook_size": cfg.codebook_size,
                          "code_dim": cfg.code_dim, "downsample": 4, "lookup": "cosine"}
        assert inp["spatial_multiple"] == 4
        entry = manifest["files"]["codebook"]
        codebook = np.load(tiny_artifacts / kind / entry["file"], allow_pickle=False)
        assert codebook.dtype == np.float32 and list(codebook.shape) == entry["shape"]
        np.testing.assert_array_equal(codebook, model.codebook.numpy())
        np.testing.assert_allclose(np.linalg.norm(codebook, axis=1), 1.0, rtol=1e-5)  # the cosine lookup's
    else:
        assert manifest["patch_size"] == cfg.patch_size
        assert manifest["num_patches"] == (cfg.image_size // cfg.patch_size) ** 2
        assert latent["shape"] == [cfg.embed_dim]


@pytest.mark.parametrize("kind", KINDS)
def test_model_card_names_kind_data_and_commands(tiny_artifacts: Path, kind: str):
    card = (tiny_artifacts / kind / "README.md").read_text()
    manifest = _manifest(tiny_artifacts / kind)
    assert f"`{kind}`" in card and f"`{manifest['training']['data']}`" in card
    assert "python -m training export" in card


# --- parity, independently of the export's own check ------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_torch_at_a_batch_the_export_did_not_check(
    tiny_artifacts: Path, tiny_checkpoints: dict[str, Path], kind: str
):
    model, _ = load_model(tiny_checkpoints[kind])
    side = model.config.image_size
    for graph in GRAPHS[kind]:
        feeds, want = _feeds_and_reference(model, kind, graph, 5, (side, side), seed=11)
        session = _session(tiny_artifacts / kind, graph)
        inputs = {i.name for i in session.get_inputs()}
        got = session.run(list(want), {k: v.numpy() for k, v in feeds.items() if k in inputs})
        _check_outputs(model, feeds, want, got, f"{kind}.{graph}")


def test_vqvae_at_another_size_gives_a_proportional_token_grid(tiny_artifacts, tiny_checkpoints):
    model, _ = load_model(tiny_checkpoints["vqvae"])
    artifact = tiny_artifacts / "vqvae"
    hw = (24, 40)  # neither the training size nor square
    feeds, want = _feeds_and_reference(model, "vqvae", "encoder", 2, hw, seed=3)
    z_e, tokens = _session(artifact, "encoder").run(["z_e", "tokens"], {"image": feeds["image"].numpy()})
    assert tokens.shape == (2, 6, 10) and z_e.shape == (2, model.config.code_dim, 6, 10)
    _check_outputs(model, feeds, want, [z_e, tokens], "encoder at 24x40")
    (image,) = _session(artifact, "decoder").run(["image"], {"tokens": tokens})
    assert image.shape == (2, model.config.channels, *hw)
    with torch.no_grad():
        _assert_close(image, model.decode_tokens(torch.from_numpy(tokens)), "decoded image")


def test_mae_reconstruct_takes_a_different_mask_ratio_per_sample(tiny_artifacts, tiny_checkpoints):
    model, _ = load_model(tiny_checkpoints["mae"])
    side = model.config.image_size
    feeds, want = _feeds_and_reference(model, "mae", "reconstruct", 5, (side, side), seed=5)
    assert len(set(feeds["mask"].sum(1).tolist())) == 5  # five different visible counts in one batch
    session = _session(tiny_artifacts / "mae", "reconstruct")
    batch = {k: v.numpy() for k, v in feeds.items()}
    (together,) = session.run(["reconstruction"], batch)
    _assert_close(together, want["reconstruction"], "reconstruction")
    for i in range(5):  # a sample's reconstruction does not depend on the other masks in its batch
        (alone,) = session.run(["reconstruction"], {k: v[i : i + 1] for k, v in batch.items()})
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


# --- the failure path -------------------------------------------------------------------------------------
class _TracedDiffers(torch.nn.Module):
    """A wrapper whose traced graph differs from its eager output by 1e-3: the bug parity must catch."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.inner(*inputs)
        return out if torch.jit.is_tracing() else out + 1e-3


def test_broken_parity_fails_the_export_and_leaves_nothing(tiny_checkpoints, tmp_path, monkeypatch):
    def broken_vae(model):
        spec = export._vae_graphs(model)
        decoder = next(g for g in spec.graphs if g.name == "decoder")
        decoder.module = _TracedDiffers(decoder.module)
        return spec

    monkeypatch.setitem(export._ADAPTERS, "vae", broken_vae)
    with pytest.raises(UserError) as info:
        export_artifact(tiny_checkpoints["vae"], tmp_path / "broken", log=None)
    message = str(info.value)
    assert "graph 'decoder' output 'image' at batch 1" in message
    assert "max abs error 0.001" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no artifact, no staging folder


def test_a_score_is_compared_relative_to_its_size_an_image_absolutely():
    def graph(relative: bool) -> export.Graph:
        port = export.Port("bits_per_dim", "float32", ("batch",), relative=relative)
        return export.Graph("elbo", torch.nn.Identity(), (), (port,), lambda *a: ())

    ref = torch.tensor([250.0, 0.5])
    # fp32 rounding of a large ELBO (a sum over 4096 pixels): 1.2e-4 on 250 bits/dim is 5e-7 of it
    far = [ref.numpy() + np.array([1.2e-4, 0.0], np.float32)]
    near = [ref.numpy() + np.array([0.0, 1.2e-4], np.float32)]
    (row,) = export._compare(graph(True), 2, (8, 8), (), (ref,), far, 1e-4, 0.999)
    assert row.max_abs_error is not None and row.max_abs_error < 1e-6
    with pytest.raises(UserError, match="relative to max"):
        export._compare(graph(True), 2, (8, 8), (), (ref,), near, 1e-4, 0.999)  # a small value: absolute
    with pytest.raises(UserError, match="max abs error"):
        export._compare(graph(False), 2, (8, 8), (), (ref,), far, 1e-4, 0.999)


def test_zero_tolerance_is_a_parameter_that_can_fail(tiny_checkpoints, tmp_path):
    # tokens are exact, but a float output of a VQ-VAE graph is never bit-identical across runtimes
    with pytest.raises(UserError, match=r"parity check failed: graph '\w+' output '\w+' at batch \d"):
        export_artifact(tiny_checkpoints["vqvae"], tmp_path / "strict", atol=0.0, log=None)
    assert not (tmp_path / "strict").exists()


def test_reexport_replaces_an_artifact_but_not_another_folder(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "art"
    export_artifact(tiny_checkpoints["beta_vae"], out, "first")
    assert "parity, ONNX Runtime (CPU) vs torch at 32x32" in capsys.readouterr().out
    first = _manifest(out)
    export_artifact(tiny_checkpoints["beta_vae"], out, "second", log=None)
    second = _manifest(out)
    assert second["name"] == "second"
    for graph in first["graphs"]:  # the export is deterministic: same checkpoint, same bytes
        assert first["graphs"][graph]["sha256"] == second["graphs"][graph]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an artifact"):
        export_artifact(tiny_checkpoints["beta_vae"], precious, log=None)
    assert (precious / "notes.txt").read_text() == "keep me"


# --- command line -----------------------------------------------------------------------------------------
def test_cli_exports_a_run_folder(tiny_checkpoints, tmp_path, capsys):
    run_folder = tiny_checkpoints["mae"].parent  # the run folder, not its checkpoint/
    assert cli(["export", str(run_folder), "--out", str(tmp_path / "m"), "--name", "mae_small"]) == 0
    manifest = _manifest(tmp_path / "m")
    assert manifest["name"] == "mae_small" and manifest["kind"] == "mae"
    out = capsys.readouterr().out
    assert "reconstruct          reconstruction" in out and "batch 8" in out
    assert f"--out {tmp_path / 'm'}" in (tmp_path / "m" / "README.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}/missing", "--out", "{tmp}/a"], "no checkpoint at"),
        (["{tmp}", "--out", "{tmp}/a"], "no checkpoint at"),  # a folder, but not a checkpoint
        (["{ckpt}"], "give --out DIR and/or --triton DIR"),
        (["{ckpt}", "--out", "{tmp}/a", "--bogus"], "unrecognized arguments"),
        (["{ckpt}", "--out", "{tmp}/a", "--name", "a/b"], "artifact name 'a/b' must be"),
        (["--from-artifact", "{tmp}", "--triton", "{tmp}/t"], "not an artifact folder"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tiny_checkpoints, tmp_path, capsys, argv, message):
    args = [a.format(tmp=tmp_path, ckpt=tiny_checkpoints["vae"]) for a in argv]
    assert cli(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "a").exists()


def test_cli_error_through_python_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "a")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: no checkpoint at") and result.stderr.count("\n") == 1

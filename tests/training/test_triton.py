"""Triton model repository: every config.pbtxt parses with Triton's own model-config protobuf and agrees
with its ONNX graph; the CLI writes one from a checkpoint or from an existing artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from training.__main__ import main as cli
from training.errors import UserError
from training.triton import TritonOptions, write_model_repository

text_format = pytest.importorskip("google.protobuf.text_format")
# Triton's model_config.proto, compiled; shipped by `tritonclient[grpc]` (a test-only dependency)
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

KINDS = ("vae", "beta_vae", "vqvae", "mae")
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


def _config(model_dir: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def _triton_shape(tensor) -> list[int]:
    """The per-sample shape Triton hands the model: `reshape` if given, else `dims`."""
    return list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)


@pytest.fixture(scope="module")
def repository(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton")
    for kind in KINDS:
        write_model_repository(tiny_artifacts / kind, root)
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_each_graph_is_a_model_whose_config_matches_its_onnx_graph(repository, tiny_artifacts, kind):
    manifest = json.loads((tiny_artifacts / kind / "manifest.json").read_text())
    for graph_name, entry in manifest["graphs"].items():
        model_dir = repository / f"{kind}_{graph_name}"
        onnx_file = model_dir / "1" / "model.onnx"
        assert onnx_file.read_bytes() == (tiny_artifacts / kind / entry["file"]).read_bytes()
        shared = (tiny_artifacts / kind / "weights.bin").read_bytes()
        assert (model_dir / "1" / "weights.bin").read_bytes() == shared
        ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])  # its external data resolves
        config = _config(model_dir)
        assert config.name == model_dir.name
        assert config.backend == "onnxruntime" and config.platform == "onnxruntime_onnx"
        graph = onnx.load(str(onnx_file)).graph
        for tensors, values in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in tensors] == [v.name for v in values]
            for tensor, value in zip(tensors, values, strict=True):
                onnx_type = value.type.tensor_type
                assert model_config_pb2.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[onnx_type.elem_type]
                dims = [-1 if d.dim_param else d.dim_value for d in onnx_type.shape.dim]
                assert onnx_type.shape.dim[0].dim_param == "batch"  # Triton's max_batch_size axis
                assert _triton_shape(tensor) == dims[1:], f"{model_dir.name}.{tensor.name}"
                if not dims[1:]:  # a per-sample scalar still declares one dim, reshaped away
                    assert list(tensor.dims) == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_serving_settings(repository, kind):
    for model_dir in repository.glob(f"{kind}_*"):
        config = _config(model_dir)
        assert config.max_batch_size == 256
        batching = config.dynamic_batching
        assert list(batching.preferred_batch_size) == [8, 32, 64, 128]
        assert batching.max_queue_delay_microseconds == 1000
        (group,) = config.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
        (cuda,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert cuda.name == "cuda" and cuda.parameters["cudnn_conv_algo_search"] == "HEURISTIC"
        # the backend's top-level form must agree, or it would reset the search to EXHAUSTIVE
        assert config.parameters["cudnn_conv_algo_search"].string_value == "1"


def test_vqvae_spatial_axes_are_dynamic(repository):
    config = _config(repository / "vqvae_encoder")
    assert list(config.input[0].dims) == [3, -1, -1]
    assert [list(t.dims) for t in config.output] == [[4, -1, -1], [-1, -1]]


def test_options_are_written_and_checked(tiny_artifacts, tmp_path):
    options = TritonOptions(max_batch_size=16, max_queue_delay_us=250, instances=2,
                            cudnn_conv_algo_search="DEFAULT")
    (model,) = [m for m in write_model_repository(tiny_artifacts / "mae", tmp_path, options)
                if m.name == "mae_encoder"]
    config = _config(model.path)
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]  # capped at max_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.instance_group[0].count == 2
    assert config.parameters["cudnn_conv_algo_search"].string_value == "2"
    with pytest.raises(UserError, match="max_batch_size must be >= 1"):
        TritonOptions(max_batch_size=0)


def test_rewriting_keeps_other_models_and_replaces_ours(tiny_artifacts, tmp_path):
    other = tmp_path / "someone_else" / "1"
    other.mkdir(parents=True)
    write_model_repository(tiny_artifacts / "vae", tmp_path)
    (tmp_path / "vae_decoder" / "stale.txt").write_text("old")
    models = write_model_repository(tiny_artifacts / "vae", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["someone_else", *(m.name for m in models)])
    assert not (tmp_path / "vae_decoder" / "stale.txt").exists()


def test_a_tampered_graph_is_refused(tiny_artifacts, tmp_path):
    artifact = tmp_path / "art"
    shutil.copytree(tiny_artifacts / "beta_vae", artifact)
    with (artifact / "decoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="graph decoder: decoder.onnx sha256 .* does not match"):
        write_model_repository(artifact, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    shutil.copyfile(tiny_artifacts / "beta_vae" / "decoder.onnx", artifact / "decoder.onnx")
    (artifact / "weights.bin").unlink()  # the graphs' shared external data
    with pytest.raises(UserError, match="file weights: weights.bin is missing"):
        write_model_repository(artifact, tmp_path / "repo")


@pytest.mark.parametrize("name", ["../escaped", "a/b", "{tmp}/absolute"])
def test_a_name_that_is_not_a_folder_name_is_refused_before_writing(tiny_artifacts, tmp_path, name):
    artifact = tmp_path / "art"
    shutil.copytree(tiny_artifacts / "beta_vae", artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["name"] = name.format(tmp=tmp_path)  # an absolute name would land in tmp_path itself
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "repo" / "keep").mkdir(parents=True)
    with pytest.raises(UserError, match="must be letters, digits"):
        write_model_repository(artifact, tmp_path / "repo" / "keep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "repo"]  # nothing written beside
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["keep"]
    assert not any((tmp_path / "repo" / "keep").iterdir())


def test_cli_from_artifact(tiny_artifacts, tmp_path, capsys):
    out = tmp_path / "repo"
    assert cli(["export", "--from-artifact", str(tiny_artifacts / "vqvae"), "--triton", str(out),
                "--max-batch-size", "64"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["vqvae_decoder", "vqvae_decoder_continuous", "vqvae_encoder", "vqvae_reconstruct"]
    assert _config(out / "vqvae_decoder").max_batch_size == 64
    assert "wrote 4 Triton models" in capsys.readouterr().out


def test_cli_from_checkpoint_writes_artifact_and_repository(tiny_checkpoints, tmp_path):
    art, repo = tmp_path / "art", tmp_path / "repo"
    argv = ["export", str(tiny_checkpoints["vae"]), "--out", str(art), "--name", "v1", "--triton", str(repo)]
    assert cli(argv) == 0
    assert json.loads((art / "manifest.json").read_text())["name"] == "v1"
    assert sorted(p.name for p in repo.iterdir()) == ["v1_decoder", "v1_elbo", "v1_encoder", "v1_reconstruct"]
    assert _config(repo / "v1_elbo").output[0].name == "bits_per_dim"
    # a bad Triton option is refused before the artifact is written
    late = tmp_path / "late"
    argv = ["export", str(tiny_checkpoints["vae"]), "--out", str(late), "--triton", str(repo),
            "--max-batch-size", "0"]
    assert cli(argv) == 2 and not late.exists()


def test_cli_triton_only_names_models_after_the_run(tiny_checkpoints, tmp_path):
    assert cli(["export", str(tiny_checkpoints["mae"]), "--triton", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mae_encoder", "mae_reconstruct"]  # run folder: mae


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-artifact", "{art}"], "--from-artifact needs --triton DIR"),
        (["{ckpt}", "--from-artifact", "{art}", "--triton", "{tmp}/t"], "takes no CHECKPOINT"),
        (["--from-artifact", "{art}", "--triton", "{tmp}/t", "--max-batch-size", "0"], "max_batch_size"),
    ],
)
def test_cli_triton_user_errors_exit_2(tiny_artifacts, tiny_checkpoints, tmp_path, capsys, argv, message):
    args = [a.format(art=tiny_artifacts / "vae", ckpt=tiny_checkpoints["vae"], tmp=tmp_path) for a in argv]
    assert cli(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1

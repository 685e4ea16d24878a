"""Start-up: provider selection and refusal, broken models, strictness, empty model folders, no torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import StartupError
from app.main import create_app
from app.registry import provider_plan, session_options, usable_cores
from app.settings import DEFAULT_MODEL_DIR, Settings


def test_providers_cuda_refuses_to_start_without_cuda(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(tiny_artifacts, providers="cuda"))
    with pytest.raises(StartupError, match="AESERVE_PROVIDERS=cuda"), TestClient(app):
        pass


def test_auto_and_cpu_report_the_provider_in_use(tiny_artifacts: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    assert provider_plan("cpu") == ["CPUExecutionProvider"]
    with TestClient(create_app(make_settings(tiny_artifacts, providers="auto"))) as c:
        in_use = c.get("/v1/version").json()["providers"]["in_use"]
        assert len(in_use) == 14 and set(in_use.values()) == {  # 4 graphs per VAE kind and VQ, 2 MAE
            "CPUExecutionProvider"
        }  # this machine has no GPU


def break_models(root: Path) -> None:
    (root / "vae" / "decoder.onnx").unlink()  # missing file
    with (root / "vqvae" / "encoder.onnx").open("ab") as f:  # corrupt: the sha256 no longer matches
        f.write(b"\0")
    manifest = json.loads((root / "mae" / "manifest.json").read_text())
    manifest["format_version"] = 99
    (root / "mae" / "manifest.json").write_text(json.dumps(manifest))


def test_a_changed_weights_file_makes_its_model_unavailable(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    weights = artifact_copy / "beta_vae" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte of one weight: the graphs themselves are untouched
    weights.write_bytes(bytes(data))
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert models["beta_vae"]["status"] == "unavailable"
        assert "weights: weights.bin sha256" in models["beta_vae"]["reason"]
        assert models["vae"]["status"] == "ready"


def _edit_manifest(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("kind", "edit", "reason"),
    [
        ("vae", lambda m: m["input"].update(height="64"),
         "input.height must be a positive integer, not '64'"),
        ("vae", lambda m: m["graphs"]["encoder"]["inputs"][0].update(name="img"),
         "graph encoder: the manifest's inputs img (float32, rank 4) are not the graph's image (float32, "
         "rank 4)"),
        ("vae", lambda m: m["graphs"]["decoder"]["inputs"][0].update(dtype="int64"), "graph decoder"),
        ("vae", lambda m: m["latent"].update(shape=None), "latent.shape must be [Z] for a vae"),
        ("mae", lambda m: m.update(patch_size=None), "patch_size must be a positive integer, not None"),
        ("mae", lambda m: m.update(num_patches=65), "num_patches 65 is not the image's patch count"),
        ("vqvae", lambda m: m["latent"].update(codebook_size=1024),
         "not [latent.codebook_size, latent.code_dim] = [1024, "),
        ("vqvae", lambda m: m.update(name="a/b"), "name 'a/b' must be letters, digits"),
        ("vqvae", lambda m: m["latent"].update(code_dim="8"), "latent.code_dim must be a positive integer"),
        ("vqvae", lambda m: m["latent"].update(downsample=4.0),
         "latent.downsample must be a positive integer"),
        ("beta_vae", lambda m: m["files"].update(weights="weights.bin"),
         "each entry of files must be an object with a file name and its sha256"),
        ("beta_vae", lambda m: m["files"]["weights"].pop("sha256"),
         "each entry of files must be an object with a file name and its sha256"),
        # unlisted, weights.bin would be read by ONNX Runtime unchecked
        ("beta_vae", lambda m: m["files"].pop("weights"),
         "graph encoder: its weights are stored in 'weights.bin', which the manifest's files do not list"),
        ("mae", lambda m: m["graphs"]["reconstruct"]["inputs"][1].update(shape=["batch", 1000]),
         "graph reconstruct: the manifest gives mask the shape [batch, 1000], the graph [batch, "),
        ("vae", lambda m: m["graphs"]["decoder"]["outputs"][0].update(shape=["batch", 3, "h", "w"]),
         "graph decoder: the manifest gives image the shape [batch, 3, h, w], the graph [batch, 3, "),
        ("beta_vae", lambda m: m.update(model_card=7), "model_card must be a file name, not 7"),
    ],
)  # fmt: skip
def test_a_manifest_that_misdescribes_its_graphs_is_refused_with_the_field_named(  # type: ignore[no-untyped-def]
    artifact_copy: Path, make_settings, kind: str, edit, reason: str
) -> None:
    _edit_manifest(artifact_copy / kind, edit)
    # without the warm-up run, these reached the first request as a 500 or a wrong v2 description
    with TestClient(create_app(make_settings(artifact_copy, warmup=False))) as c:
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        broken = [m for m in models.values() if m["status"] == "unavailable"]
        assert len(broken) == 1 and reason in broken[0]["reason"], broken
        assert sum(m["status"] == "ready" for m in models.values()) == 3


def test_a_model_card_that_is_not_utf8_is_shown_not_refused(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    with (artifact_copy / "vae" / "README.md").open("ab") as f:
        f.write(b"\xff trailing byte")
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        info = c.get("/v1/models/vae").json()
        assert info["status"] == "ready" and info["model_card"].endswith("\ufffd trailing byte")


def test_broken_models_are_unavailable_while_others_serve(
    artifact_copy: Path, make_settings, image_bytes
) -> None:  # type: ignore[no-untyped-def]
    break_models(artifact_copy)
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert models["beta_vae"]["status"] == "ready"
        assert "decoder.onnx is missing" in models["vae"]["reason"]
        assert "sha256" in models["vqvae"]["reason"]
        assert "format_version 99" in models["mae"]["reason"]
        assert all(models[k]["status"] == "unavailable" for k in ("vae", "vqvae", "mae"))
        r = c.post("/v1/models/vae/reconstruct", files={"image": ("x.png", image_bytes(), "image/png")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert "missing" in r.json()["error"]["message"]
        ok = c.post("/v1/models/beta_vae/reconstruct", files={"image": ("x.png", image_bytes(), "image/png")})
        assert ok.status_code == 200
        ready = c.get("/readyz")  # strict readiness (the default, as in Triton): not ready, each model named
        assert ready.status_code == 503 and ready.json()["models"] == {
            "beta_vae": "ready", "vae": "unavailable", "vqvae": "unavailable", "mae": "unavailable"
        }  # fmt: skip
        assert "unavailable: mae, vae, vqvae" in ready.json()["error"]["message"]
        v2 = c.get("/v2/health/ready")  # names, never reasons (paths): the probes need no API key
        assert (
            v2.status_code == 503 and "vae" in v2.json()["error"] and "decoder.onnx" not in v2.json()["error"]
        )
        assert c.get("/v2/models/vae_decoder").status_code == 404
        assert 'aeserve_model_ready{model="vae"} 0.0' in c.get("/metrics").text
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}  # Triton's repository index
        assert index["vae"]["state"] == "UNAVAILABLE" and "decoder.onnx is missing" in index["vae"]["reason"]
        assert {n for n, e in index.items() if e["state"] == "READY"} == {
            "beta_vae_encoder", "beta_vae_decoder", "beta_vae_reconstruct", "beta_vae_elbo"
        }  # fmt: skip
        ready_only = c.post("/v2/repository/index", json={"ready": True}).json()
        assert {e["name"] for e in ready_only} == {n for n, e in index.items() if e["state"] == "READY"}


def test_without_strict_readiness_a_broken_model_leaves_the_service_ready(  # type: ignore[no-untyped-def]
    artifact_copy: Path, make_settings
) -> None:
    break_models(artifact_copy)
    with TestClient(create_app(make_settings(artifact_copy, strict_readiness=False))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["models"]["vae"] == "unavailable"
        assert c.get("/v2/health/ready").json() == {"ready": True}


def test_strict_startup_fails_on_a_broken_model(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    break_models(artifact_copy)
    app = create_app(make_settings(artifact_copy, strict_startup=True))
    with pytest.raises(StartupError, match="cannot load"), TestClient(app):
        pass


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_starts_with_no_models(tmp_path: Path, make_settings, folder: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / folder
    if folder == "empty":
        root.mkdir()
    with TestClient(create_app(make_settings(root))) as c:
        assert c.get("/v1/models").json() == {"models": []}
        assert c.get("/readyz").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AESERVE_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("AESERVE_CORS_ORIGINS", "http://a.org, http://b.org")
    monkeypatch.setenv("AESERVE_STRICT_STARTUP", "true")
    s = Settings()
    assert s.max_batch_size == 3 and s.strict_startup is True
    assert s.cors_origins == ["http://a.org", "http://b.org"]
    assert s.model_dir == DEFAULT_MODEL_DIR == Path(__file__).resolve().parents[2] / "artifacts"


@pytest.mark.parametrize("spinning", [False, True])
def test_cpu_threads_spin_only_when_asked_and_never_between_runs(spinning: bool) -> None:
    opts = session_options(Settings(intra_op_threads=2, intra_op_spinning=spinning), on_cuda=False)
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spinning))
    assert opts.get_session_config_entry("session.force_spinning_stop") == "1"


def test_default_app_never_imports_torch() -> None:
    """`uvicorn app.main:app` with no configuration: serves the bundled models (or none), no torch."""
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "import app.main\n"
        "with TestClient(app.main.app) as c:\n"
        "    assert c.get('/readyz').status_code == 200, c.get('/readyz').text\n"
        "    print(len(c.get('/v1/models').json()['models']))\n"
        "assert 'torch' not in sys.modules, 'app imported torch'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AESERVE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]


def _serve(tmp_path: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`uvicorn app.main:app` as an operator starts it, with AESERVE_* from `env` alone."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AESERVE_")}
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0", "--app-dir", str(root)]
    command += options
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=clean | env, cwd=tmp_path)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "two workers"])
def test_a_bad_setting_ends_start_up_with_one_line_naming_it(tmp_path: Path, workers: list[str]) -> None:
    # with --workers, uvicorn restarts a worker that exits, unless it exits with its start-up failure
    # status: the server must end (within the timeout), not re-read the bad setting forever
    # empty API_KEY and DOCS_ASSETS mean unset (docker compose passes unset variables so), no error
    out = _serve(tmp_path, *workers, AESERVE_PROVIDERS="gpu", AESERVE_MAX_QUEUE="0", AESERVE_API_KEY="",
                 AESERVE_DOCS_ASSETS="", AESERVE_LOG_LEVEL="loud")  # fmt: skip
    assert "Traceback" not in out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("aeserve:")]
    assert set(said) == {
        "aeserve: bad setting: AESERVE_PROVIDERS: Input should be 'auto', 'cuda' or 'cpu' (got 'gpu'); "
        "AESERVE_MAX_QUEUE: Input should be greater than or equal to 1 (got '0'); "
        "AESERVE_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL' or 'NOTSET' "
        "(got 'LOUD')"
    }
    if workers:  # each worker says it once and none is restarted; uvicorn's parent then exits with 0
        assert len(said) <= 2 and "failed to start, stopping the parent process" in out.stderr
    else:
        assert out.stderr.strip().splitlines() == said and out.returncode == 3


def test_a_refused_start_up_logs_its_reason_without_a_traceback(tmp_path: Path, artifact_copy: Path) -> None:
    break_models(artifact_copy)  # under strict start-up a model that cannot load refuses the start
    settings = {"AESERVE_STRICT_STARTUP": "true", "AESERVE_MODEL_DIR": str(artifact_copy)}
    out = _serve(tmp_path, AESERVE_LOG_FORMAT="text", **settings)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    refused = [line for line in out.stderr.splitlines() if "start-up refused" in line]
    assert len(refused) == 1 and "cannot load" in refused[0], out.stderr[-2000:]


def test_usable_cores_follow_a_containers_cpu_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    affinity = usable_cores(tmp_path / "absent")  # no cgroup files: the affinity alone
    assert affinity >= 1
    cpu_max.write_text("max 100000\n")  # no limit
    assert usable_cores(tmp_path) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: still one thread
    assert usable_cores(tmp_path) == 1
    cpu_max.write_text(f"{(affinity + 4) * 100000} 100000\n")  # a quota above the affinity: the affinity
    assert usable_cores(tmp_path) == affinity
    if affinity >= 2:
        cpu_max.write_text(f"{affinity * 100000 - 50000} 100000\n")  # half a core short: rounded up
        assert usable_cores(tmp_path) == affinity


@pytest.mark.parametrize("controller", ["cpu", "cpu,cpuacct"])
def test_usable_cores_read_a_cgroup_v1_quota(tmp_path: Path, controller: str) -> None:
    v1 = tmp_path / controller
    v1.mkdir()
    affinity = usable_cores(tmp_path)
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert usable_cores(tmp_path) == affinity
    if affinity < 2:
        pytest.skip("one usable core: no quota can lower it")
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")  # 1.5 cores: rounded up to 2
    assert usable_cores(tmp_path) == 2
    (v1 / "cpu.cfs_quota_us").write_text("20000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")  # v2 present: it decides, v1's files are not read
    assert usable_cores(tmp_path) == affinity


def test_an_unavailable_models_reason_names_no_server_path(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    graph = artifact_copy / "vae" / "encoder.onnx"
    # a well-formed protobuf (ir_version 1, no graph) with its sha256 updated: ONNX Runtime itself refuses it
    graph.write_bytes(b"\x08\x01")
    manifest = json.loads((artifact_copy / "vae" / "manifest.json").read_text())
    manifest["graphs"]["encoder"]["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (artifact_copy / "vae" / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(make_settings(artifact_copy, strict_readiness=False))) as c:
        reason = {m["name"]: m for m in c.get("/v1/models").json()["models"]}["vae"]["reason"]
        assert "from vae/encoder.onnx failed" in reason and str(artifact_copy) not in reason
    graph.write_bytes(b"not an onnx graph")  # not even protobuf: refused before ONNX Runtime reads it
    manifest["graphs"]["encoder"]["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (artifact_copy / "vae" / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(make_settings(artifact_copy, strict_readiness=False))) as c:
        reason = {m["name"]: m for m in c.get("/v1/models").json()["models"]}["vae"]["reason"]
        assert reason == "graph encoder: encoder.onnx is not an ONNX file (unsupported protobuf wire type 6)"

"""Faults: broken artifacts at start-up, model reloads (admin endpoint and SIGHUP) under load, and a
SIGTERM that drains the requests in flight (real uvicorn subprocesses for the signals)."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import StartupError
from app.main import create_app
from bench.reliability.corpus import files, good_png
from bench.reliability.server import Server, request


def rewrite_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def replace_file(folder: Path, name: str, data: bytes, entry: tuple[str, str]) -> None:
    """Write `data` as the artifact file `name` and record its sha256 in the manifest, so only the
    content is wrong (the checksum check passes)."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[entry[0]][entry[1]]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def pickled_codebook() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def break_artifacts(root: Path) -> None:
    replace_file(root / "vae", "decoder.onnx", b"not an onnx graph", ("graphs", "decoder"))
    (root / "mae" / "manifest.json").write_text("{ not json")
    replace_file(root / "vqvae", "codebook.npy", pickled_codebook(), ("files", "codebook"))


def test_broken_artifacts_are_unavailable_with_the_reason(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    break_artifacts(artifact_copy)
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert models["beta_vae"]["status"] == "ready"
        assert models["vae"]["status"] == "unavailable" and "decoder.onnx" in models["vae"]["reason"].lower()
        assert models["mae"]["status"] == "unavailable" and "unreadable" in models["mae"]["reason"]
        assert models["vqvae"]["status"] == "unavailable" and "pickle" in models["vqvae"]["reason"]
        assert (
            c.post("/v1/models/beta_vae/reconstruct", files={"image": ("a.png", good_png())}).status_code
            == 200
        )
        r = c.post("/v1/models/vae/reconstruct", files={"image": ("a.png", good_png())})
        assert r.status_code == 503 and "unavailable" in r.json()["error"]["message"]


def test_strict_startup_refuses_broken_artifacts(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    break_artifacts(artifact_copy)
    with (
        pytest.raises(StartupError, match="cannot load"),
        TestClient(create_app(make_settings(artifact_copy, strict_startup=True))),
    ):
        pass


def test_reload_swaps_atomically_and_rejects_a_bad_version_under_load(
    artifact_copy: Path, make_settings
) -> None:  # type: ignore[no-untyped-def]
    png = good_png()
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        statuses: list[int] = []
        versions: list[str] = []  # X-Model-Version of each answer
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = c.post("/v1/models/vae/reconstruct", files={"image": ("a.png", png)})
                statuses.append(r.status_code)
                versions.append(r.headers.get("x-model-version", ""))

        old = c.app.state.registry.models["vae"]
        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(hammer) for _ in range(4)]
            time.sleep(0.3)
            rewrite_manifest(artifact_copy / "vae", metrics={"psnr": 99.0})  # a new version
            first = c.post("/v1/admin/reload").json()
            replace_file(artifact_copy / "vae", "decoder.onnx", b"broken", ("graphs", "decoder"))  # a bad one
            rewrite_manifest(artifact_copy / "beta_vae", metrics={"psnr": 1.0})
            second = c.post("/v1/admin/reload").json()
            with (artifact_copy / "mae" / "encoder.onnx").open("ab") as f:  # changed in place, manifest not
                f.write(b"\0")
            third = c.post("/v1/admin/reload").json()
            time.sleep(0.3)
            stop.set()
            for w in workers:
                w.result()
        assert first["loaded"] == ["vae"] and "vae" not in first["rejected"]
        assert set(first["unchanged"]) == {"beta_vae", "vqvae", "mae"}
        assert "decoder.onnx" in second["rejected"]["vae"] and second["loaded"] == ["beta_vae"]
        assert "sha256" in third["rejected"]["mae"] and c.get("/v1/models/mae").json()["status"] == "ready"
        model = c.get("/v1/models/vae").json()
        assert model["status"] == "ready" and model["metrics"]["psnr"] == 99.0  # the good new version serves
        # every answer names the version that computed it: the old one, then the new one
        assert old.version and model["version"] and model["version"] != old.version
        assert set(versions) == {old.version, model["version"]} and versions[0] == old.version
        assert len(statuses) > 20 and set(statuses) == {200}  # no request failed across both reloads
        assert all(not g.batcher.running for g in old.graphs.values())  # the replaced version's workers ended


def test_sighup_reloads_a_real_server(artifact_copy: Path) -> None:
    with Server(artifact_copy) as server:
        rewrite_manifest(artifact_copy / "vae", metrics={"psnr": 42.0})
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = json.loads(request(server.port, "GET", "/v1/models/vae")[2])
            if model["metrics"].get("psnr") == 42.0:
                break
            time.sleep(0.2)
        assert model["metrics"].get("psnr") == 42.0 and model["status"] == "ready"
        assert server.process is not None and server.process.poll() is None  # SIGHUP did not end it


def test_sigterm_drains_requests_in_flight(tiny_artifacts: Path) -> None:
    """Requests held 2 s in the batcher (the batch waits to fill) are in flight when SIGTERM comes;
    every one completes with 200, then the server exits by itself."""
    server = Server(tiny_artifacts, max_delay_ms=2000, max_batch_size=64).start()
    body, headers = files("image")
    with ThreadPoolExecutor(6) as pool:
        answers = [
            pool.submit(request, server.port, "POST", "/v1/models/vae/reconstruct", body, headers)
            for _ in range(6)
        ]
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        statuses = [a.result()[0] for a in answers]
    code = server.wait(60)
    assert statuses == [200] * 6
    # A clean exit: uvicorn drained, ran the lifespan shutdown, then (since 0.29) re-raised the SIGTERM
    # it had caught, so the status is -SIGTERM (143 in a shell), the usual end of a stopped service.
    log = server.log()
    assert code == -signal.SIGTERM, log[-2000:]
    assert "Application shutdown complete" in log and "Finished server process" in log


def test_reload_refuses_a_second_folder_that_reuses_a_served_name(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        shutil.copytree(artifact_copy / "vqvae", artifact_copy / "aaa")  # sorts first, manifest name vqvae
        shutil.copytree(artifact_copy / "vae", artifact_copy / "vae_copy")  # sorts after its namesake
        rewrite_manifest(artifact_copy / "vqvae", metrics={"psnr": 77.0})  # and vqvae's own new version
        report = c.post("/v1/admin/reload").json()
        assert report["loaded"] == ["vqvae"] and report["removed"] == []
        assert sorted(report["unchanged"]) == ["beta_vae", "mae", "vae"]
        assert "duplicate model name 'vqvae' (also in vqvae)" in report["rejected"]["aaa"]
        assert "duplicate model name 'vae' (also in vae)" in report["rejected"]["vae_copy"]
        registry = c.app.state.registry
        served = registry.models["vqvae"]  # the name stays with its folder, which serves its new version
        assert served.folder.name == "vqvae" and served.ready and served.manifest.metrics["psnr"] == 77.0
        assert not registry.models["aaa"].graphs  # nothing of the newcomer was started
        listed = {m["name"]: m["status"] for m in c.get("/v1/models").json()["models"]}
        assert listed == {"beta_vae": "ready", "mae": "ready", "vae": "ready", "vqvae": "ready",
                          "aaa": "unavailable", "vae_copy": "unavailable"}  # fmt: skip
        again = c.post("/v1/admin/reload").json()  # the same answer, not a different folder each time
        assert sorted(again["rejected"]) == ["aaa", "vae_copy"] and again["removed"] == []
        assert c.app.state.registry.models["vqvae"] is served


def test_a_duplicate_named_like_a_served_model_is_listed_apart(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Folder beta_vae's manifest says "mae", and it sorts first, so it serves mae; folder mae (manifest
    "mae" too) is the duplicate, and its folder's name is taken: it is listed as mae.2, and the served
    mae is not overwritten by it (at start-up, and again when a reload brings the same layout)."""
    rewrite_manifest(artifact_copy / "beta_vae", name="mae")

    def check(c: TestClient) -> None:
        listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert {n: m["status"] for n, m in listed.items()} == {
            "mae": "ready", "mae.2": "unavailable", "vae": "ready", "vqvae": "ready"
        }  # fmt: skip
        assert listed["mae"]["kind"] == "beta_vae"  # folder beta_vae's model
        assert listed["mae.2"]["reason"] == "duplicate model name 'mae' (also in beta_vae)"
        assert c.get("/v2/models/mae_decoder").status_code == 200  # the served one's graphs

    with TestClient(create_app(make_settings(artifact_copy, strict_readiness=False))) as c:
        check(c)
        rewrite_manifest(artifact_copy / "mae", metrics={"psnr": 1.0})  # the duplicate changes
        report = c.post("/v1/admin/reload").json()
        assert report["rejected"] == {"mae.2": "duplicate model name 'mae' (also in beta_vae)"}
        check(c)


def test_reload_without_the_model_folder_keeps_every_model(artifact_copy: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(artifact_copy))) as c:
        c.post("/v1/models/vae/reconstruct", files={"image": ("a.png", good_png())})
        artifact_copy.rename(artifact_copy.with_name("away"))  # a folder swapped out mid-deploy
        r = c.post("/v1/admin/reload")
        assert r.status_code == 503 and "AESERVE_MODEL_DIR" in r.json()["error"]["message"]
        assert c.post("/v1/models/vae/reconstruct", files={"image": ("a.png", good_png())}).status_code == 200
        artifact_copy.with_name("away").rename(artifact_copy)
        shutil.rmtree(artifact_copy / "vae")  # now a real removal: its queue leaves /metrics too
        assert c.post("/v1/admin/reload").json()["removed"] == ["vae"]
        scrape = c.get("/metrics").text
        assert 'aeserve_queue_depth{graph="beta_vae_encoder"}' in scrape
        assert 'graph="vae_' not in scrape.split("# HELP aeserve_queue_depth")[1].split("# HELP")[0]


def test_a_sighup_while_the_models_load_reloads_once_they_are_up(artifact_copy: Path, tmp_path: Path) -> None:
    """Without a handler yet, SIGHUP's default action ends the process; it must wait for the start."""
    code = f"""
import logging, os, signal, threading, time
import uvicorn
import app.registry
import app.routes.admin
from app.main import create_app
from app.settings import Settings

load = app.registry.Registry.load.__func__

def slow_load(cls, settings):
    for _ in range(2):  # two arrive while the models load: one reload follows the start
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.3)
    return load(cls, settings)

reloaded = threading.Event()

class Reloads(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("reload: loaded"):
            reloaded.set()

def stop_after_the_reload():
    reloaded.wait(60)
    time.sleep(1.5)  # room for a second reload, which must not come
    server.should_exit = True

logging.getLogger(app.routes.admin.__name__).addHandler(Reloads())
app.registry.Registry.load = classmethod(slow_load)
settings = Settings(model_dir={str(artifact_copy)!r}, providers="cpu", log_format="text")
server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="info"))
threading.Thread(target=stop_after_the_reload, daemon=True).start()
server.run()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AESERVE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    reloads = [line for line in out.stderr.splitlines() if "reload: loaded" in line]
    assert len(reloads) == 1 and "unchanged" in reloads[0], out.stderr[-2000:]


def test_duplicate_names_never_run_out(tmp_path: Path) -> None:
    """The suffixes a duplicate may take go on as far as the names in use do."""
    from app.registry import Model, _claim_names

    folders = [tmp_path / n for n in ("c", "x", "y")]
    models = [Model(name="c", folder=folders[0]), Model(name="c", folder=folders[1]),
              Model(name="c", folder=folders[2])]  # fmt: skip
    owners = {"c": folders[0].resolve(), "x": tmp_path / "o1", "x.2": tmp_path / "o2", "x.3": tmp_path / "o3"}
    _claim_names(models, owners)
    assert [m.name for m in models] == ["c", "x.4", "y"]
    assert all(m.reason == "duplicate model name 'c' (also in c)" for m in models[1:])

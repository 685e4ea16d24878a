"""Each benchmark, run for a second or two on the tiny artifacts through the real CLI (`python -m bench
all --smoke`): the result files have their fields and sane values. Never a timing threshold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KINDS = ("beta_vae", "mae", "vae", "vqvae")


@pytest.fixture(scope="module")
def results(
    tiny_artifacts: Path, tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("bench")
    runs = tiny_checkpoints["vqvae"].parent.parent  # runs/<kind>/checkpoint: the artifacts' own weights
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "all",
            "--smoke",
            "--artifacts",
            str(tiny_artifacts),
            "--out",
            str(out),
            "--runs",
            str(runs),
            "--kinds",
            "vqvae,mae",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "stdout.txt").write_text(done.stdout)
    return out


def _read(out: Path, section: str) -> dict[str, Any]:
    data = json.loads((out / f"{section}.json").read_text())
    assert data["section"] == section
    env = data["environment"]
    assert (
        env["cores"] >= 1
        and env["python"]
        and "onnxruntime" in env["versions"]
        and "numpy" in env["versions"]
    )
    assert env["command"].startswith("python -m bench all --smoke")
    return data


def test_engine_covers_every_graph_runtime_and_batch(results: Path, tiny_artifacts: Path) -> None:
    data = _read(results, "engine")
    for kind in KINDS:
        graphs = json.loads((tiny_artifacts / kind / "manifest.json").read_text())["graphs"]
        for graph in graphs:
            for runtime in ("ort-fp32", "ort-fp16", "torch-fp32"):
                rows = [
                    r
                    for r in data["rows"]
                    if (r["model"], r["graph"], r["runtime"]) == (kind, graph, runtime)
                ]
                assert sorted(r["batch"] for r in rows) == [1, 8], (kind, graph, runtime)
                assert all(r["images_per_s"] > 0 and r["latency_ms"] > 0 and r["runs"] >= 1 for r in rows)
        assert data["weights"][kind].startswith("checkpoint ")  # the checkpoint matched the manifest's sha256
        gate = data["fp16_gate"][kind]
        assert isinstance(gate["passed"], bool) and gate["psnr_fp32_db"] > 0
        assert set(gate["graphs"]) == set(graphs)  # every graph checked on its own
        failing = sorted(g for g, r in gate["graphs"].items() if not r["passed"])
        assert gate["failing_graphs"] == failing and (not failing or not gate["passed"])
    assert 0 <= data["fp16_gate"]["vqvae"]["equal_tokens"] <= 1


def test_fp16_keeps_the_codebook_lookup_or_the_whole_token_path_in_fp32(
    results: Path, tiny_artifacts: Path, tmp_path: Path
) -> None:
    from bench import fp16

    gate = _read(results, "engine")["fp16_gate"]["vqvae"]
    assert [a["policy"] for a in gate["attempts"]] in (["lookup"], list(fp16.POLICIES))
    assert gate["policy"] == gate["attempts"][-1]["policy"]
    folder = tiny_artifacts / "vqvae"
    for graph in ("encoder", "decoder_continuous", "reconstruct", "decoder"):
        src = folder / f"{graph}.onnx"
        lookup = fp16.convert(src, tmp_path / f"{graph}.lookup.onnx", "lookup")
        path = fp16.convert(src, tmp_path / f"{graph}.path.onnx", "token-path")
        if graph == "decoder":  # no quantizer in the token decoder: everything goes to fp16
            assert lookup == path == []
            continue
        assert any("ArgMin" in n for n in lookup) and any("MatMul" in n for n in lookup)
        assert not any("Conv" in n for n in lookup)  # the conv stacks do go to fp16
        has_encoder = graph != "decoder_continuous"  # which starts at z_e: both policies keep the same
        assert set(lookup) < set(path) if has_encoder else set(lookup) == set(path)
        assert any("Conv" in n for n in path) == has_encoder  # the encoder's convs
        assert not any("ConvTranspose" in n for n in path)  # the decoder stays fp16 under either policy
        for policy, kept in (("lookup", lookup), ("path", path)):
            # kept nodes pass fp32 to each other, never through an fp16 cast, and read fp32 weights (the
            # codebook the fused graphs also gather from in fp16 reached the lookup rounded)
            assert _fp16_round_trips(tmp_path / f"{graph}.{policy}.onnx") == 0, (graph, policy)
            converted = tmp_path / f"{graph}.{policy}.onnx"
            assert _kept_reading_fp16_weights(converted, kept) == [], (graph, policy)


def test_fp16_keeps_a_score_in_float32_after_the_convolutions(tiny_artifacts: Path, tmp_path: Path) -> None:
    from bench import fp16

    kept = fp16.convert(tiny_artifacts / "vae" / "elbo.onnx", tmp_path / "elbo.onnx", "lookup")
    assert any("ReduceSum" in n for n in kept) and not any("Conv" in n for n in kept)  # sums, not convs
    assert fp16.convert(tiny_artifacts / "vae" / "decoder.onnx", tmp_path / "d.onnx", "lookup") == []
    assert _fp16_round_trips(tmp_path / "elbo.onnx") == 0


def _kept_reading_fp16_weights(path: Path, kept: list[str]) -> list[str]:
    """Kept (float32) nodes that read an initializer stored in fp16, directly or through a Cast."""
    import onnx

    model = onnx.load(str(path))
    half = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    half |= {n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in half}
    return [n.name for n in model.graph.node if n.name in kept and any(i in half for i in n.input)]


def _fp16_round_trips(path: Path) -> int:
    """Cast-to-fp32 nodes whose input is a Cast-to-fp16: a value rounded to fp16 between two fp32 nodes."""
    import onnx

    nodes = list(onnx.load(str(path)).graph.node)
    casts = [n for n in nodes if n.op_type == "Cast"]
    to = {n.output[0]: next(a.i for a in n.attribute if a.name == "to") for n in casts}
    return sum(
        1
        for n in nodes
        if n.op_type == "Cast"
        and to[n.output[0]] == onnx.TensorProto.FLOAT
        and to.get(n.input[0]) == onnx.TensorProto.FLOAT16
    )


def test_service_scenarios_have_no_errors(results: Path) -> None:
    data = _read(results, "service")
    rows = data["service"]
    got = {(r["server"], r["scenario"], r["concurrency"]) for r in rows}
    assert {("service", "single", c) for c in (1, 16, 64)} <= got
    assert {("service", "bulk", 1), ("naive", "single", 64), ("noop", "single", 16)} <= got
    wrk = [r for r in rows if r["server"].endswith("(wrk)")]
    if shutil.which("wrk"):  # the compiled cross-check posts the same body, to the service and the no-op
        assert {(r["server"], r["concurrency"]) for r in wrk} == {("service (wrk)", 1), ("noop (wrk)", 1)}
    else:
        assert wrk == []
    for r in wrk:
        assert r["requests"] > 0 and r["errors"] == 0 and r["requests_per_s"] > 0, r
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    for r in (r for r in rows if r not in wrk):
        assert r["requests"] > 0 and r["errors"] == 0 and set(r["statuses"]) == {"200"}, r
        assert r["images_per_s"] == pytest.approx(r["requests_per_s"] * r["images_per_request"], rel=1e-3)
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["response_bytes_mean"] > 0
    bulk = next(r for r in rows if r["scenario"] == "bulk")
    assert bulk["images_per_request"] == 8
    engine = data["engine"]
    assert {(r["op"], r["png"]) for r in engine} == {
        (op, png) for op in ("reconstruct", "tokens") for png in (0, 1)
    }
    assert all(r["images_per_s"] > 0 for r in engine)
    assert data["starts"][0]["ready_s"] > 0


def test_training_cold_start_and_profile(results: Path) -> None:
    rows = _read(results, "training")["rows"]
    assert [(r["kind"], r["precision"]) for r in rows] == [
        ("vqvae", "fp32"),
        ("mae", "fp32"),
        ("vqvae", "bf16 autocast"),
        ("mae", "bf16 autocast"),
    ]
    assert all(r["images_per_s"] > 0 and r["steps_timed"] >= 1 for r in rows)
    cold = _read(results, "coldstart")
    assert cold["models"] == sorted(KINDS) and all(s > 0 for s in cold["ready_s"])
    profile = _read(results, "profile")
    ops = profile["ort_operators"]
    assert {"encoder batch 1", "decoder_continuous batch 32"} <= set(ops)
    assert all(0 <= o["share"] <= 1 for rows_ in ops.values() for o in rows_)
    spy = profile["pyspy"]
    assert "error" in spy or (spy["samples"] > 0 and abs(sum(a["share"] for a in spy["areas"]) - 1) < 0.01)
    assert profile["load"]["errors"] == 0


def test_report_prints_every_target_and_draws_the_plot(results: Path) -> None:
    stdout = (results / "stdout.txt").read_text()
    for name in (
        "concurrency 16 / raw engine best",
        "bulk tokens / raw engine best",
        "p50 at concurrency 1",
        "naive baseline, concurrency 64",
        "no-op endpoint",
        "cold start to ready",
    ):
        line = next(line for line in stdout.splitlines() if name in line)
        assert line.split()[0] in ("PASS", "MISS", "reported")
    text = (results / "results.md").read_text()
    assert "### Targets" in text and "### Engine" in text and "### Service" in text
    assert (results / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_replaces_only_the_generated_section(results: Path, tmp_path: Path) -> None:
    from bench.environment import read_results
    from bench.report import BEGIN, END, write_report

    doc = tmp_path / "PERF.md"
    doc.write_text(f"# Title\n\nhand-written\n\n{BEGIN}\nold figures\n{END}\n\ntail\n")
    write_report(read_results(results), tmp_path / "out", doc)
    text = doc.read_text()
    assert text.startswith("# Title\n\nhand-written\n") and text.endswith(f"{END}\n\ntail\n")
    assert "old figures" not in text and "### Targets" in text and "plot.png" in text


def test_load_generator_counts_errors(tmp_path: Path) -> None:
    from bench.servers import NOOP_APP, Server
    from bench.service import ServiceConfig, load

    body = tmp_path / "body.bin"
    body.write_bytes(b"x")
    cfg = ServiceConfig(artifacts=tmp_path, duration_s=0.5, warmup_s=0.0, min_requests=1)
    with Server(NOOP_APP, log=tmp_path / "noop.log") as server:
        r = load(
            server,
            tmp_path,
            "missing",
            path="/missing",
            bodies=[str(body)],
            content_type="text/plain",
            images=1,
            concurrency=2,
            cfg=cfg,
            expect="image/png",
        )
    assert r["requests"] == 0 and r["errors"] > 0 and set(r["statuses"]) == {"404"}
    with Server(NOOP_APP, log=tmp_path / "noop2.log") as server:  # a 200 of the wrong type is no success
        r = load(server, tmp_path, "wrong-type", path="/noop", bodies=[str(body)], content_type="text/plain",
                 images=1, concurrency=2, cfg=cfg, expect="application/json")  # fmt: skip
    assert r["requests"] == 0 and r["requests_per_s"] == 0
    assert r["errors"] > 0 and set(r["statuses"]) == {"200"}


def test_a_target_measured_on_runs_with_errors_does_not_pass() -> None:
    from bench.targets import _service_targets

    def single(server: str, c: int, rps: float, errors: int = 0) -> dict[str, object]:
        return {"server": server, "scenario": "single", "workers": 1, "concurrency": c, "images_per_s": rps,
                "requests_per_s": rps, "p50_ms": 1.0, "errors": errors, "images_per_request": 1}  # fmt: skip

    engine = [{"op": "reconstruct", "png": png, "batch": 1, "images_per_s": 100.0, "latency_ms": 0.5}
              for png in (False, True)]  # fmt: skip
    rows = [single("service", 1, 95.0), single("service", 16, 95.0, errors=3), single("service", 64, 95.0),
            single("naive", 64, 10.0)]  # fmt: skip
    svc = {"engine": engine, "service": rows, "config": {"workers": [1], "provider": "cpu"}}
    verdicts = {t["name"]: (t["passed"], t["note"]) for t in _service_targets(svc, gpu=False)}
    passed, note = verdicts["single-image reconstruct, concurrency 16 / raw engine best"]
    assert passed is False and note.startswith("3 errors in the runs measured")  # 0.95 of the engine
    assert verdicts["single-image service / naive baseline, concurrency 64"][0] is True


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:55093/noop
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.33ms    1.75ms   9.04ms   84.79%
    Req/Sec     1.48k   262.17     1.75k    70.00%
  Latency Distribution
     50%  330.00us
     75%    1.92ms
     90%    3.95ms
     99%    1.02s
  1474 requests in 1.01s, 17.06MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1461.76
Transfer/sec:     16.92MB
"""


def test_wrk_output_is_parsed_in_milliseconds() -> None:
    from bench.service import parse_wrk

    assert parse_wrk(WRK_OUTPUT) == {
        "requests": 1474,
        "requests_per_s": 1461.76,
        "p50_ms": 0.33,
        "p90_ms": 3.95,
        "p99_ms": 1020.0,
        "errors": 7,  # 4 non-2xx responses and 3 socket errors
    }


def test_engine_reference_runs_with_the_services_extra_settings(tiny_artifacts: Path) -> None:
    """`bench service --server-env` gives the engine it compares with the same session options."""
    from bench.pipeline import DirectRunner

    extra = {"AESERVE_INTRA_OP_THREADS": "1", "AESERVE_INTRA_OP_SPINNING": "true"}
    plain = DirectRunner(tiny_artifacts / "vqvae", "cpu")
    tuned = DirectRunner(tiny_artifacts / "vqvae", "cpu", server_env=extra)
    assert plain.sessions.keys() == tuned.sessions.keys()
    for graph, wrapper in tuned.sessions.items():
        options = wrapper.session.get_session_options()
        assert options.intra_op_num_threads == 1, graph
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1", graph
        default = plain.sessions[graph].session.get_session_options()
        assert default.get_session_config_entry("session.intra_op.allow_spinning") == "0", graph


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["engine", "--batches", "0"], "expected integers >= 1"),
        (["engine", "--seconds", "nan"], "expected finite seconds"),
        (["training", "--kinds", "foo"], "unknown kinds ['foo']"),
        (["training", "--train-steps", "0"], "expected an integer >= 1"),
        (["service", "--model", "nosuch", "--artifacts", "{tiny}"], "--model 'nosuch' is not in"),
        (["report", "--out", "{empty}"], "no benchmark results"),
        (["engine", "--artifacts", "{broken}"], "input.height must be a positive integer"),
        (["service", "--server-env", "AESERVE_MAX_BATCH_SIZE=many"], "AESERVE_MAX_BATCH_SIZE='many'"),
        (["service", "--server-env", "AESERVE_MAX_BATCH=8"], "is not a service setting"),
        (["service", "--server-env", "AESERVE_PROVIDERS=cuda"], "is not a service setting"),
        (["training", "--kinds", ","], "no kinds given"),
    ],
)  # fmt: skip
def test_bad_arguments_end_in_one_line(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from bench.__main__ import main

    broken = tmp_path / "broken" / "vae"
    shutil.copytree(tiny_artifacts / "vae", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["input"]["height"] = "x"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "empty").mkdir()
    names = {"tiny": tiny_artifacts, "empty": tmp_path / "empty", "broken": broken.parent}
    with pytest.raises(SystemExit) as exited:
        main([a.format(**names) for a in argv])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and message in said and "Traceback" not in said


def test_bench_presets_are_the_models_presets() -> None:
    """bench names the presets without importing torch; they must stay the models' own."""
    import models
    from bench.__main__ import PRESETS

    assert PRESETS == models.PRESET_NAMES


def test_large_images_reports_memory_and_the_health_probe(tiny_artifacts: Path, tmp_path: Path) -> None:
    from bench.large_images import main

    out = tmp_path / "large.json"
    argv = [
        "--width",
        "64",
        "--height",
        "48",
        "--artifacts",
        str(tiny_artifacts),
        "--idle",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert (figures["width"], figures["height"]) == (64, 48)
    assert all(figures[k] > 0 for k in figures if not k.startswith("healthz"))  # /proc memory, times
    assert figures["healthz_worst_during_encode_ms"] >= 0  # 0 when the request ends before the first probe
    assert set(figures) >= {"rss_after_reconstruct_mib", "rss_after_encode_mib", "rss_after_interpolate_mib"}


def test_untrained_artifacts_export_and_load(tmp_path: Path) -> None:
    """`python -m bench.untrained` (what bench/gpu_check.sh runs where the bundled artifacts are missing)
    writes four artifacts the service loads (here at the tiny preset, for time)."""
    from app.registry import Registry
    from app.settings import Settings

    done = subprocess.run(
        [sys.executable, "-m", "bench.untrained", str(tmp_path), "--preset", "tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    registry = Registry.load(Settings(model_dir=tmp_path, providers="cpu"))
    assert {n: m.reason for n, m in registry.models.items()} == {k: None for k in KINDS}
    assert all(registry.models[k].manifest.raw["training"]["checkpoint_sha256"] == "untrained" for k in KINDS)


def test_a_quick_reliability_report_leaves_the_committed_figures_alone(tmp_path: Path) -> None:
    from bench.reliability.__main__ import main as reliability

    for result in (REPO / "bench" / "results" / "reliability").glob("*.json"):
        shutil.copy(result, tmp_path)
    doc = REPO / "docs" / "RELIABILITY.md"
    before = doc.read_bytes()
    assert reliability(["report", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text().strip() and doc.read_bytes() == before

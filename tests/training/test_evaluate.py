"""`python -m training evaluate` on tiny real models: artifacts (ONNX Runtime) and checkpoints (torch)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training import evaluate as ev
from training.__main__ import main as cli
from training.backends import OnnxBackend, TorchBackend

SMALL = ["--n", "24", "--mig-n", "300", "--probe-n", "120", "--batch-size", "16"]
ALWAYS = {"psnr", "ssim"}
EXPECTED_KEYS = {
    "vae": ALWAYS | {"elbo_bits_per_dim"},  # trained on photos: no MIG
    "beta_vae": ALWAYS | {"elbo_bits_per_dim", "mig"},  # trained on shapes
    "vqvae": ALWAYS | {"codebook_usage", "perplexity"},
    "mae": ALWAYS | {"masked_psnr", "mean_fill_masked_psnr", "telea_masked_psnr", "linear_probe_acc",
                     "linear_probe_acc_random_init"},
}  # fmt: skip
EXPECTED_PNGS = {
    "vae": {"reconstructions.png", "traversals.png", "interpolations.png"},
    "beta_vae": {
        "reconstructions.png",
        "traversals.png",
        "interpolations.png",
        "mig_matrix.png",
        "factor_curves.png",
    },
    "vqvae": {"reconstructions.png", "interpolations.png", "codec.png"},
    "mae": {"inpainting.png", "linear_probe.png"},
}


def _copy(tiny_artifacts: Path, kind: str, tmp_path: Path) -> Path:
    # the session's artifacts are shared; evaluate writes into its artifact, so work on a copy
    return Path(shutil.copytree(tiny_artifacts / kind, tmp_path / kind))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli(["evaluate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind", ["vae", "beta_vae", "vqvae", "mae"])
def test_evaluate_artifact_writes_metrics_card_and_report(
    kind: str, tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = _copy(tiny_artifacts, kind, tmp_path)
    graphs_before = json.loads((art / "manifest.json").read_text())["graphs"]
    code, out, _ = _run(["--artifact", str(art), *SMALL], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["data"]["split"] == "val" and result["data"]["n_images"] == 24
    manifest = json.loads((art / "manifest.json").read_text())
    assert set(manifest["metrics"]) == EXPECTED_KEYS[kind]
    assert manifest["graphs"] == graphs_before  # nothing but the metrics changed
    assert all(np.isfinite(v) for v in manifest["metrics"].values())
    assert manifest["metrics"]["psnr"] == pytest.approx(result["metrics"]["psnr"], abs=1e-5)
    assert 0.0 <= manifest["metrics"]["ssim"] <= 1.0
    pngs = {p.name for p in (art / "report").glob("*.png")}
    assert pngs == EXPECTED_PNGS[kind]
    assert all((art / "report" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    card = (art / "README.md").read_text()
    assert card.count("## Figures") == 1 and "report/" in card and "| psnr |" in card
    OnnxBackend(art)  # graphs still match their sha256 after the edit


def test_no_record_measures_an_artifact_without_touching_it(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = _copy(tiny_artifacts, "vae", tmp_path)
    before = {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}
    report = ["--report", str(tmp_path / "r")]
    code, out, _ = _run(["--artifact", str(art), "--no-record", *report, *SMALL], capsys)
    assert code == 0 and json.loads(out)["metrics"]["psnr"] > 0
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()} == before
    code, _, err = _run(["--no-record", str(tiny_artifacts / "vae")], capsys)
    assert code == 2 and "--no-record applies to --artifact only" in err


def test_metric_values_are_plausible_for_their_kind(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for kind in ("beta_vae", "vqvae", "mae"):
        backend = OnnxBackend(tiny_artifacts / kind)
        data = ev.held_out(backend.info.data or "", backend, 24, 0)
        results[kind] = ev.evaluate(backend, data, ev.Settings(n=24, mig_n=300, probe_n=120), None)
    assert 0.0 <= results["beta_vae"].metrics["mig"] <= 1.0
    assert results["beta_vae"].details["mig_n"] == 300
    table = np.array(results["beta_vae"].details["mig_matrix"])  # [latents, factors], MI / H(factor)
    assert table.shape == (4, 5) and table.min() >= 0.0 and table.max() <= 1.0 + 1e-9
    top2 = np.sort(table, axis=0)[::-1][:2]
    gaps = results["beta_vae"].details["mig_per_factor"].values()
    assert np.allclose(top2[0] - top2[1], list(gaps), atol=2e-4)  # MIG's gaps are read off this table
    vq = results["vqvae"]
    assert 0.0 < vq.metrics["codebook_usage"] <= 1.0
    # counted over the held-out crops and every whole held-out photograph (chelsea 300 x 451 and rocket
    # 427 x 640, cut to multiples of 4 and downsampled 4x), not the crops alone
    crops = 24 * 4 * 4  # 24 tiny crops of 16 x 16, 4 x 4 tokens each
    assert vq.details["tokens_counted"] == crops + 75 * 112 + 106 * 160
    assert 0.0 < vq.details["codebook_usage_whole_photographs"] <= 1.0
    assert 1.0 <= vq.metrics["perplexity"] <= 16  # tiny preset: K = 16
    for photo in vq.details["codec"]["photographs"]:
        assert photo["jpeg_bytes"] <= photo["budget_bytes"] and photo["webp_bytes"] <= photo["budget_bytes"]
        h, w = photo["tokens"]
        assert photo["budget_bytes"] == np.ceil(h * w * 4 / 8) + 4  # 4-bit tokens, a 4-byte grid size
    mae = results["mae"]
    assert 0.0 <= mae.metrics["linear_probe_acc"] <= 1.0
    assert mae.details["linear_probe"] == {**mae.details["linear_probe"], "fit": 90, "test": 30}


def test_codec_leaves_out_a_codec_over_budget_and_reads_photos_as_training_does(
    tiny_artifacts: Path, tmp_path: Path
) -> None:
    from PIL import Image

    rgba = np.zeros((48, 56, 4), np.uint8)
    rgba[:, :28] = (200, 10, 10, 0)  # left half transparent: white once composited, as in training
    rgba[:, 28:] = (10, 200, 10, 255)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):  # enough files for a validation split
        Image.fromarray(rgba).save(folder / f"{i}.png")
    photos = ev._whole_photographs(str(folder), 3)
    assert photos and photos[0].shape == (3, 48, 56)
    assert photos[0][:, :, :28].min() == 1.0 and photos[0][1, :, 28:].max() == pytest.approx(200 / 255)

    # K = 16: 4 bits per token, 84 bytes for the 12 x 14 tokens of 48 x 56, and 4 for the grid's size
    backend = OnnxBackend(tiny_artifacts / "vqvae")
    result = ev.Result(metrics={}, details={}, figures={})
    codec = ev._codec(backend, ev._tokenized(backend, photos[:2]), tmp_path / "report", result)
    assert codec["photographs"][0]["budget_bytes"] == 88
    assert codec["over_budget"] == {"jpeg": 2, "webp": 0}  # no JPEG file is that small; WebP fits
    assert codec["mean"]["jpeg_psnr"] is None and codec["mean"]["webp_psnr"] > 0
    assert codec["mean"]["vqvae_psnr_where_all_fit"] is None
    assert all(r["jpeg_psnr"] is None and r["jpeg_quality"] is None for r in codec["photographs"])
    assert (tmp_path / "report" / "codec.png").is_file()


def test_rerun_replaces_the_figures_section(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = _copy(tiny_artifacts, "vae", tmp_path)
    for seed in ("0", "1"):
        assert _run(["--artifact", str(art), *SMALL, "--seed", seed], capsys)[0] == 0
    card = (art / "README.md").read_text()
    assert card.count("## Figures") == 1 and "--seed 1" in card and "--seed 0" not in card
    assert card.index("## How it was made") < card.index("## Figures")
    # the recorded command reproduces the figures where they went
    assert _run(["--artifact", str(art), *SMALL, "--report", str(tmp_path / "figs")], capsys)[0] == 0
    assert f"--report {tmp_path / 'figs'}" in (art / "README.md").read_text()


def test_figures_section_is_appended_when_absent_and_keeps_later_sections() -> None:
    assert ev.replace_figures_section("# m\n", "## Figures\n\nnew\n") == "# m\n\n## Figures\n\nnew\n"
    card = "# m\n\n## Figures\n\nold\n\n## Licence\n\nMIT\n"
    assert (
        ev.replace_figures_section(card, "## Figures\n\nnew\n")
        == "# m\n\n## Figures\n\nnew\n\n## Licence\n\nMIT\n"
    )


@pytest.mark.parametrize("kind", ["vae", "beta_vae", "vqvae", "mae"])
def test_checkpoint_and_its_export_agree(
    kind: str, tiny_checkpoints: dict[str, Path], tiny_artifacts: Path
) -> None:
    settings = ev.Settings(n=16, mig_n=200, probe_n=64, batch_size=8)
    torch_b = TorchBackend.from_checkpoint(tiny_checkpoints[kind])
    onnx_b = OnnxBackend(tiny_artifacts / kind)
    assert torch_b.info.data == onnx_b.info.data
    data = ev.held_out(onnx_b.info.data or "", onnx_b, settings.n, settings.seed)
    a = ev.evaluate(torch_b, data, settings, None).metrics
    b = ev.evaluate(onnx_b, data, settings, None).metrics
    assert set(a) == set(b)
    assert a["psnr"] == pytest.approx(b["psnr"], abs=0.01)
    for key in set(a) - {"psnr", "linear_probe_acc", "linear_probe_acc_random_init", "mig"}:
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), key


def test_evaluate_checkpoint_from_the_cli(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run([str(tiny_checkpoints["vae"]), *SMALL, "--report", str(tmp_path / "r")], capsys)
    assert code == 0 and "[evaluate]" in err
    result = json.loads(out)
    assert result["model"]["source"].startswith("checkpoint")
    assert {"kl_bits_per_dim", "recon_bits_per_dim"} <= set(result["details"])  # torch splits the ELBO
    d = result["details"]
    assert d["kl_bits_per_dim"] + d["recon_bits_per_dim"] == pytest.approx(
        result["metrics"]["elbo_bits_per_dim"]
    )
    assert (tmp_path / "r" / "reconstructions.png").is_file()


def test_compare_writes_side_by_side_grid_and_sharpness(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arts = [str(tiny_artifacts / "vae"), str(tiny_artifacts / "vqvae")]
    code, out, _ = _run(["--compare", *arts, "--n", "12", "--report", str(tmp_path / "cmp")], capsys)
    assert code == 0
    result = json.loads(out)
    assert [m["model"] for m in result["models"]] == ["vae", "vqvae"]
    assert all(m["sharpness_ratio"] > 0 for m in result["models"])
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.png", "sharpness.png"}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["/no/such/checkpoint"],
        ["--artifact", "/no/such/artifact"],
        ["--n", "0", "--artifact", "x"],
        ["--bogus"],
        ["--compare", "only_one"],
    ],
)
def test_cli_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_rejects_a_folder_that_is_not_an_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    code, _, err = _run(["--artifact", str(tmp_path)], capsys)
    assert code == 2 and "format_version" in err and err.count("\n") == 1
    code, _, err = _run([str(tmp_path / "nothing_here")], capsys)
    assert code == 2 and err.count("\n") == 1


def test_cli_rejects_a_tampered_graph(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = _copy(tiny_artifacts, "vae", tmp_path)
    with (art / "decoder.onnx").open("ab") as f:
        f.write(b"\0")
    code, _, err = _run(["--artifact", str(art), *SMALL], capsys)
    assert code == 2 and "sha256" in err
    shutil.copyfile(tiny_artifacts / "vae" / "decoder.onnx", art / "decoder.onnx")
    with (art / "weights.bin").open("r+b") as f:  # truncated shared weights
        f.truncate(100)
    code, _, err = _run(["--artifact", str(art), *SMALL], capsys)
    assert code == 2 and "weights.bin sha256" in err and err.count("\n") == 1
    shutil.copyfile(tiny_artifacts / "vae" / "weights.bin", art / "weights.bin")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["input"]["height"] = "x"
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = _run(["--artifact", str(art), *SMALL], capsys)
    assert code == 2 and "input.height must be a positive integer" in err and err.count("\n") == 1
    report = art / "README.md"  # a file where the report folder should go
    code, _, err = _run(["--artifact", str(tiny_artifacts / "vae"), "--report", str(report)], capsys)
    assert code == 2 and "--report" in err and "is a file" in err


# --- the beta sweep ---------------------------------------------------------------------------------


def test_sweep_trains_evaluates_and_writes_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--betas", "1,4", "--steps", "2", "--preset", "tiny", "--batch-size", "8", "--n", "16"]
    code = cli(["sweep", *argv, "--mig-n", "200", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["beta"] for r in summary["rows"]] == [1.0, 4.0]
    assert summary["chosen_beta"] == max(summary["rows"], key=lambda r: r["mig"])["beta"]
    for row in summary["rows"]:
        assert 0.0 <= row["mig"] <= 1.0 and set(row["mig_per_factor"]) == set(ev.SHAPES_FACTORS)
        assert row["recon_bits_per_dim"] + row["kl_bits_per_dim"] == pytest.approx(row["elbo_bits_per_dim"])
        assert 0 <= row["active_latents"] <= row["latents"] == 4  # tiny preset: 4 latents
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"] == summary["rows"]
    table = (tmp_path / "sweep.md").read_text()
    assert "| 1 |" in table and "| 4 |" in table and "Chosen: beta =" in table
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "beta_4" / "report" / "traversals.png").is_file()

    # A rerun reuses the finished runs instead of retraining them; a changed setting retrains.
    weights = tmp_path / "beta_4" / "checkpoint" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert cli(["sweep", *argv, "--mig-n", "200", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == summary["rows"]
    assert weights.stat().st_mtime_ns == before
    argv[argv.index("--steps") + 1] = "3"
    assert cli(["sweep", *argv, "--mig-n", "200", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "holds a run with other settings (steps)" in capsys.readouterr().err


def test_an_interrupted_sweep_resumes_its_unfinished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import loop

    argv = ["sweep", "--betas", "2", "--steps", "4", "--preset", "tiny", "--batch-size", "8", "--n", "16",
            "--mig-n", "200", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    real, calls, stop = loop._Run._train_step, [], [0]

    def stop_at_step(self: object, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == stop[0]:
            raise KeyboardInterrupt  # Ctrl-C during that step: the ones before are saved
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    for stop_at, saved in ((1, 0), (3, 2)):  # during the first step, and part-way
        calls.clear()
        stop[0] = stop_at
        monkeypatch.setattr(loop._Run, "_train_step", stop_at_step)
        assert cli(argv) == 130  # as after Ctrl-C
        assert json.loads((tmp_path / "beta_2" / "checkpoint" / "state.json").read_text())["step"] == saved
        monkeypatch.setattr(loop._Run, "_train_step", real)
        capsys.readouterr()
        assert cli(argv) == 0
        assert "resuming" in capsys.readouterr().err
        assert json.loads((tmp_path / "beta_2" / "checkpoint" / "state.json").read_text())["step"] == 4
        shutil.rmtree(tmp_path / "beta_2")


def test_sweep_summary_reports_the_trends_it_measured() -> None:
    from training.sweep import summarize

    def row(beta: float, mig: float, recon: float) -> dict[str, float]:
        return {"beta": beta, "mig": mig, "recon_bits_per_dim": recon, "psnr": 30 - recon}

    s = summarize([row(4, 0.3, 0.2), row(1, 0.1, 0.1), row(8, 0.25, 0.3)])
    assert s["chosen_beta"] == 4
    assert s["observed"] == {
        "mig_vs_beta": "goes up and down",
        "recon_bits_per_dim_vs_beta": "rises",
        "psnr_vs_beta": "falls",
        "mig_beta_rank_correlation": 0.5,
    }
    tie = summarize([row(1, 0.2, 0.1), row(2, 0.2, 0.1)])
    assert tie["chosen_beta"] == 1 and "tied" in tie["chosen_because"]
    assert tie["observed"]["mig_vs_beta"] == "stays level"
    assert tie["observed"]["mig_beta_rank_correlation"] is None  # MIG constant: no ranking to correlate

    # several seeds: the choice and the trends follow the per-beta means, not the single best run
    def seeded(beta: float, seed: int, mig: float) -> dict[str, float]:
        return {**row(beta, mig, 0.1 * beta), "seed": seed}

    runs = [seeded(1, 0, 0.05), seeded(1, 1, 0.09), seeded(4, 0, 0.30), seeded(4, 1, 0.02), seeded(8, 0, 0.2)]
    runs.append(seeded(8, 1, 0.18))
    s = summarize(runs[::-1])
    assert [(r["beta"], r["seed"]) for r in s["rows"]] == [(1, 0), (1, 1), (4, 0), (4, 1), (8, 0), (8, 1)]
    assert [b["beta"] for b in s["by_beta"]] == [1, 4, 8] and s["by_beta"][1]["seeds"] == 2
    assert s["by_beta"][1]["mig"] == pytest.approx(0.16) and s["by_beta"][1]["mig_sd"] == pytest.approx(0.14)
    assert (s["by_beta"][1]["mig_min"], s["by_beta"][1]["mig_max"]) == (0.02, 0.30)
    assert s["chosen_beta"] == 8 and "over 2 seeds" in s["chosen_because"]  # 0.19 mean beats 0.16
    assert s["observed"]["mig_vs_beta"] == "rises"
    # Spearman over the six runs: ranks of beta (1.5, 1.5, 3.5, 3.5, 5.5, 5.5) against MIG's
    assert s["observed"]["mig_beta_rank_correlation"] == pytest.approx(0.478, abs=1e-3)


def test_sweep_over_seeds_trains_each_and_averages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--betas", "1,4", "--seeds", "0,3", "--steps", "2", "--preset", "tiny", "--batch-size", "8"]
    code = cli(["sweep", *argv, "--n", "16", "--mig-n", "200", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(r["beta"], r["seed"]) for r in summary["rows"]] == [(1, 0), (1, 3), (4, 0), (4, 3)]
    for beta in (1, 4):
        runs = [r["mig"] for r in summary["rows"] if r["beta"] == beta]
        mean = next(b for b in summary["by_beta"] if b["beta"] == beta)
        assert mean["seeds"] == 2 and mean["mig"] == pytest.approx(sum(runs) / 2)
        for seed in (0, 3):
            state = json.loads(
                (tmp_path / f"beta_{beta}_seed_{seed}" / "checkpoint" / "state.json").read_text()
            )
            assert state["seed"] == seed and state["model_config"]["beta"] == beta
    # the two seeds of one beta are different runs
    a, b = (tmp_path / f"beta_4_seed_{s}" / "checkpoint" / "model.safetensors" for s in (0, 3))
    assert a.read_bytes() != b.read_bytes()
    table = (tmp_path / "sweep.md").read_text()
    assert "seeds 0, 3" in table and "| 4 | 3 |" in table and "Per beta, over the seeds" in table
    assert summary["settings"]["seeds"] == [0, 3]


@pytest.mark.parametrize("args", [["--seeds", "0,x"], ["--seeds", "1,1"], ["--seeds", "0", "--seed", "1"]])
def test_sweep_rejects_bad_seeds(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["sweep", "--betas", "1,2", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep:") and err.count("\n") == 1


@pytest.mark.parametrize("betas", ["1,x", "", "0,1", "2,2"])
def test_sweep_rejects_bad_betas(betas: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["sweep", "--betas", betas, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep:") and err.count("\n") == 1

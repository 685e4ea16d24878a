"""The training loop, checkpoints and the `train` command, on tiny presets for a few steps."""

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from training.__main__ import main as cli
from training.checkpoint import load_model, weights_sha256
from training.config import TrainConfig
from training.errors import UserError
from training.loop import train

REPO = Path(__file__).resolve().parents[2]


def tiny(out: Path, **changes: object) -> TrainConfig:
    """A run that takes about a second: tiny preset, batch 8, 4 steps, 16 validation images."""
    values: dict = dict(
        model="vae", data="shapes", preset="tiny", steps=4, batch_size=8, out=str(out), val_every=2,
        val_images=16, log_every=1, warmup_steps=2, epoch_crops=64, quiet=True,
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(20):
        (root / f"d{i % 3}").mkdir(exist_ok=True)
        shape = (40, 48, 3) if i % 2 else (40, 48)  # RGB and gray files mixed
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / f"d{i % 3}" / f"{i}.png")
    return root


@pytest.mark.parametrize(("kind", "data"), [("vae", "shapes"), ("beta_vae", "shapes"), ("vqvae", "photos"),
                                            ("mae", "folder")])  # fmt: skip
def test_train_each_kind_and_load_back(tmp_path: Path, folder: Path, kind: str, data: str) -> None:
    spec = data
    if data == "folder":  # a copy of the module's folder, with one corrupt file added
        spec = str(shutil.copytree(folder, tmp_path / "images"))
        (tmp_path / "images" / "d1" / "broken.png").write_bytes(b"\x89PNG but no more")
    path = train(tiny(tmp_path / "run", model=kind, data=spec))
    assert path == tmp_path / "run" / "checkpoint"
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "optimizer.safetensors", "state.json"}
    model, state = load_model(tmp_path / "run")
    assert model.kind == kind and not model.training
    assert state["kind"] == kind and state["step"] == 4 and state["data"] == spec
    assert state["data_skipped"] == (["d1/broken.png"] if data == "folder" else [])
    assert state["model_config"]["channels"] == (1 if data == "shapes" else 3)
    assert state["replica_sha256"] == [weights_sha256(model)]
    size = model.config.image_size
    x = torch.rand(2, model.config.channels, size, size)
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(0), step=0)
    assert torch.isfinite(loss) and "loss" in logs
    fresh = models.build_model(kind, models.config_from_dict(kind, state["model_config"]))
    assert weights_sha256(fresh) != weights_sha256(model)  # trained weights, not an initialisation
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows if r["split"] == "train"] == ["1", "2", "3", "4"]
    assert [r["step"] for r in rows if r["split"] == "val"] == ["2", "4"]
    assert all(np.isfinite(float(r["loss"])) for r in rows) and float(rows[0]["images_per_s"]) > 0


def test_same_seed_same_weights_and_exact_resume(tmp_path: Path) -> None:
    runs = {name: tmp_path / name for name in ("a", "b", "c", "interrupted")}
    for name in ("a", "b"):
        train(tiny(runs[name], model="vqvae", data="photos", seed=3))
    train(tiny(runs["c"], model="vqvae", data="photos", seed=4))
    digest = {name: weights_sha256(load_model(runs[name])[0]) for name in ("a", "b", "c")}
    assert digest["a"] == digest["b"] != digest["c"]

    def stop_after_two(step: int, logs: dict[str, float]) -> None:
        if step == 2:
            raise KeyboardInterrupt

    config = tiny(runs["interrupted"], model="vqvae", data="photos", seed=3)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=stop_after_two)
    assert json.loads((runs["interrupted"] / "checkpoint" / "state.json").read_text())["step"] == 2
    seen: list[int] = []
    train(tiny(runs["interrupted"], model="vqvae", data="photos", seed=3, resume=True),
          callback=lambda step, logs: seen.append(step))  # fmt: skip
    assert seen == [3, 4]
    model, state = load_model(runs["interrupted"])
    assert state["step"] == 4
    # Optimizer, data order and noise all continue: the resumed run ends where the straight one did.
    assert weights_sha256(model) == digest["a"]


def test_metrics_csv_keeps_train_only_columns_when_a_validation_row_comes_first(tmp_path: Path) -> None:
    train(tiny(tmp_path, model="vqvae", data="photos", steps=4, log_every=0, val_every=1))
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["split"] == "val" and rows[0]["grad_norm"] == ""  # the header widened, the row kept
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(float(r["grad_norm"]) > 0 for r in train_rows)


def test_resume_extends_step_count(tmp_path: Path) -> None:
    train(tiny(tmp_path, steps=2))
    train(tiny(tmp_path, steps=5, resume=True))
    assert load_model(tmp_path)[1]["step"] == 5


def test_ctrl_c_during_the_final_validation_keeps_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import loop

    def interrupted(self: object) -> None:
        raise KeyboardInterrupt  # as if Ctrl-C came while the last validation ran

    monkeypatch.setattr(loop._Run, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, steps=3, val_every=0, checkpoint_every=0))
    assert load_model(tmp_path)[1]["step"] == 3  # no checkpoint at all before


def test_resume_extends_an_epochs_run_and_finds_its_folder_from_anywhere(  # type: ignore[no-untyped-def]
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(folder, tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)  # --data as typed, relative to here
    run = str(tmp_path / "run")
    argv = ["--model", "vae", "--data", "imgs", "--preset", "tiny", "--epochs", "1", "--batch-size", "4",
            "--val-images", "4", "--out", run, "--quiet"]  # fmt: skip
    assert _cli(argv, capsys)[0] == 0
    done = load_model(run)[1]["step"]
    monkeypatch.chdir(REPO)  # elsewhere: "imgs" means nothing here
    code, err = _cli(["--out", run, "--resume", "--steps", str(done + 3), "--quiet"], capsys)
    assert code == 0, err
    state = load_model(run)[1]
    assert state["step"] == done + 3 and state["data"] == str(tmp_path / "imgs")


def test_init_from_fine_tunes_with_another_beta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source"
    train(tiny(source, model="beta_vae", overrides={"beta": 4}))
    trained = load_model(source)[0]
    seen: list[int] = []

    def stop_at_once(step: int, logs: dict[str, float]) -> None:
        seen.append(step)
        raise KeyboardInterrupt  # the checkpoint then holds the weights after one step from the source's

    with pytest.raises(KeyboardInterrupt):
        tuned_config = tiny(
            tmp_path / "tuned", model="beta_vae", init_from=str(source), overrides={"beta": 32}, lr=1e-9,
            warmup_steps=0,
        )  # fmt: skip
        train(tuned_config, callback=stop_at_once)
    tuned, state = load_model(tmp_path / "tuned")
    assert seen == [1] and state["step"] == 1  # a new run: its own step count, schedule and optimizer
    assert state["model_config"]["beta"] == 32 and state["train_config"]["init_from"] == str(source)
    for name, value in trained.state_dict().items():  # lr 1e-9: one step from the source's weights
        torch.testing.assert_close(tuned.state_dict()[name], value, atol=1e-6, rtol=0)
    torch.manual_seed(0)  # where a fresh run of seed 0 starts: the source has moved away from it
    fresh = models.build_model("beta_vae", models.make_config("beta_vae", "tiny", channels=1, beta=32))
    moved = max((fresh.state_dict()[k] - v).abs().max().item() for k, v in trained.state_dict().items())
    assert moved > 1e-4

    out = ["--out", str(tmp_path / "bad")]
    argv = [*TINY, *out, "--model", "beta_vae", "--init-from", str(source), "--set", "latent_dim=7"]
    code, err = _cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "size mismatch" in err
    code, err = _cli([*TINY, *out, "--model", "vqvae", "--init-from", str(source)], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds a beta_vae checkpoint" in err
    code, err = _cli([*TINY, *out, "--model", "vae", "--init-from", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no checkpoint" in err


@pytest.mark.parametrize("kind", models.KINDS)
def test_bf16_autocast_on_the_cpu_trains_every_kind(tmp_path: Path, kind: str) -> None:
    # The same autocast paths as mixed precision on CUDA (bf16), here where CI can run them.
    data = "shapes" if kind == "beta_vae" else "photos"
    train(tiny(tmp_path / "fp32", model=kind, data=data))
    train(tiny(tmp_path / "bf16", model=kind, data=data, amp_cpu=True))
    plain, mixed = (load_model(tmp_path / name) for name in ("fp32", "bf16"))
    assert mixed[1]["val"] and all(np.isfinite(v) for v in mixed[1]["val"].values())
    assert all(t.dtype == torch.float32 for t in mixed[0].state_dict().values() if t.is_floating_point())
    assert weights_sha256(mixed[0]) != weights_sha256(plain[0])  # bf16 arithmetic really ran


def test_config_file_and_flags(tmp_path: Path) -> None:
    toml = 'model = "beta_vae"\nsteps = 9\nbatch_size = 8\n[overrides]\nbeta = 2\n'
    (tmp_path / "run.toml").write_text(toml)
    from training.loop import parse_args

    config = parse_args(["--config", str(tmp_path / "run.toml"), "--steps", "3", "--set", "latent_dim=6"])
    assert (config.model, config.steps, config.batch_size) == ("beta_vae", 3, 8)
    assert config.overrides == {"beta": 2, "latent_dim": 6}
    (tmp_path / "epochs.toml").write_text('model = "vae"\nepochs = 2.0\n')
    later = parse_args(["--config", str(tmp_path / "epochs.toml"), "--steps", "7"])  # steps given last wins
    assert (later.epochs, later.steps) == (None, 7)
    (tmp_path / "bad.json").write_text(json.dumps({"model": "vae", "stepz": 3}))
    with pytest.raises(UserError, match="stepz"):
        parse_args(["--config", str(tmp_path / "bad.json")])
    (tmp_path / "b.json").write_text('{"steps": "ten"}')
    with pytest.raises(UserError, match="steps must be int"):
        parse_args(["--model", "vae", "--config", str(tmp_path / "b.json")])


def test_reinit_draws_the_named_layers_afresh_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    train(tiny(source, model="beta_vae"))
    trained = load_model(source)[0].state_dict()

    def stop_at_once(step: int, logs: dict[str, float]) -> None:
        raise KeyboardInterrupt  # the checkpoint then holds the weights after one step of lr 1e-9

    with pytest.raises(KeyboardInterrupt):
        config = tiny(tmp_path / "tuned", model="beta_vae", init_from=str(source),
                      reinit="encoder.11, decoder.0", lr=1e-9, warmup_steps=0)  # fmt: skip
        train(config, callback=stop_at_once)
    tuned = load_model(tmp_path / "tuned")[0].state_dict()
    redrawn = {"encoder.11.weight", "encoder.11.bias", "decoder.0.weight", "decoder.0.bias"}
    for name, value in trained.items():
        change = (tuned[name] - value).abs().max().item()
        assert (change > 1e-3) if name in redrawn else (change < 1e-6), (name, change)

    out = ["--out", str(tmp_path / "bad")]
    for argv, message in [
        (["--init-from", str(source), "--reinit", "encoder.99"],
         "no module named encoder.99 in this model; layers with weights: encoder.0, encoder.2"),
        (["--init-from", str(source), "--reinit", "encoder.1"], "module encoder.1 has no weights"),
        (["--reinit", "encoder.11"], "it needs --init-from"),
    ]:  # fmt: skip
        code, err = _cli([*TINY, *out, "--model", "beta_vae", *argv], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("kind", models.KINDS)
def test_init_from_an_artifact_starts_from_its_weights(
    tiny_checkpoints: dict[str, Path], tiny_artifacts: Path, tmp_path: Path, kind: str
) -> None:
    """A bundled model of any kind can be fine-tuned from its artifact alone: the graphs hold its weights
    (some transposed by the export), and a VQ-VAE keeps its codebook."""
    from tests.conftest import TINY_RUNS

    data, overrides = TINY_RUNS[kind]
    logs: list[dict[str, float]] = []

    def stop_at_once(step: int, step_logs: dict[str, float]) -> None:
        logs.append(step_logs)
        raise KeyboardInterrupt  # the checkpoint then holds the weights after one step from the artifact's

    with pytest.raises(KeyboardInterrupt):
        config = tiny(tmp_path / "tuned", model=kind, data=data, overrides=dict(overrides),
                      init_from=str(tiny_artifacts / kind), lr=1e-9, warmup_steps=0)  # fmt: skip
        train(config, callback=stop_at_once)
    tuned, state = load_model(tmp_path / "tuned")
    trained, trained_state = load_model(tiny_checkpoints[kind])
    assert len(logs) == 1 and state["model_config"] == trained_state["model_config"]
    ema = {"quantizer.embed", "quantizer.ema_count", "quantizer.ema_sum"}  # moved by the step's EMA update
    for name, value in trained.state_dict().items():
        if name not in ema:
            torch.testing.assert_close(tuned.state_dict()[name], value, atol=1e-6, rtol=0)
    if kind == "vqvae":  # no k-means: every code was seeded with the batch's average share, none restarted
        cfg = tuned.config
        share = 8 * (cfg.image_size // 4) ** 2 / cfg.codebook_size  # vectors per batch of 8, per code
        assert tuned.quantizer.ema_count.min().item() >= cfg.ema_decay * share - 1e-4
        assert logs[0]["dead_restarts"] == 0 and bool(tuned.quantizer.initialized)


def test_init_from_an_artifact_checks_the_weights_against_its_graphs(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import checkpoint

    out = ["--out", str(tmp_path / "bad")]
    code, err = _cli([*TINY, *out, "--model", "vae", "--init-from", str(tiny_artifacts / "beta_vae")], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds a beta_vae artifact" in err
    code, err = _cli([*TINY, *out, "--model", "vae", "--init-from", str(tiny_artifacts / "mae")], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds a mae artifact" in err

    read = checkpoint._graph_weights

    def misread(*args: object) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        tensors, loose = read(*args)  # type: ignore[arg-type]
        square = "blocks.0.attn.proj.weight"  # read without undoing the export's transpose
        tensors[square] = tensors[square].T.contiguous()
        return tensors, loose

    # an older artifact without the optional reconstruct graph still loads; a graph that is not ONNX (with
    # a manifest that agrees, so it gets past the sha256 check) is a one-line error
    old = shutil.copytree(tiny_artifacts / "vqvae", tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    (old / manifest["graphs"].pop("reconstruct")["file"]).unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    argv = [*TINY, "--out", str(tmp_path / "from_old"), "--model", "vqvae", "--data", "photos"]
    assert _cli([*argv, "--init-from", str(old)], capsys)[0] == 0
    (old / "decoder.onnx").write_bytes(b"not a graph")
    manifest["graphs"]["decoder"]["sha256"] = hashlib.sha256(b"not a graph").hexdigest()
    (old / "manifest.json").write_text(json.dumps(manifest))
    code, err = _cli([*TINY, *out, "--model", "vqvae", "--data", "photos", "--init-from", str(old)], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot read the weights of artifact" in err

    monkeypatch.setattr(checkpoint, "_graph_weights", misread)
    argv = [*TINY, *out, "--model", "mae", "--data", "photos", "--init-from", str(tiny_artifacts / "mae")]
    code, err = _cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "do not reproduce them" in err and "'reconstruct'" in err


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli(["train", *argv])
    return code, capsys.readouterr().err


TINY = ["--preset", "tiny", "--steps", "2", "--batch-size", "8", "--val-images", "8", "--quiet"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "gan", "--data", "shapes"], "invalid choice: 'gan'"),
        (["--model", "vae", "--data", "{missing}"], "does not exist"),
        (["--model", "vae", "--data", "{empty}"], "no images"),
        (["--model", "vae", "--data", "shapes", "--set", "depth=3"], "unknown vae config field(s): depth"),
        (["--model", "vae", "--data", "shapes", "--set", "beta"], "KEY=VALUE"),
        (["--model", "vae", "--data", "shapes", "--set", "latent_dim=abc"], "latent_dim must be int"),
        (["--model", "vae", "--data", "shapes", "--stepz", "3"], "unrecognized arguments: --stepz"),
        (["--model", "vae", "--data", "shapes", "--resume"], "no checkpoint"),
        (["--resume"], "--resume: no checkpoint in "),  # not "--model is required"
        (["--model", "vae", "--data", "shapes", "--resume", "--init-from", "{empty}"],
         "--resume continues the run in --out; --init-from starts a new run from other weights: give one"),
        (["--data", "shapes"], "--model is required"),
        (["--model", "vae", "--data", "shapes", "--lr", "1e6", "--grad-clip", "0", "--warmup-steps", "0",
          "--steps", "20"], "NaN or infinite"),
        (["--model", "vae", "--data", "shapes", "--lr", "-1"], "lr must be > 0"),
        (["--model", "vae", "--data", "shapes", "--lr", "nan"], "lr must be a finite number"),
        (["--model", "vae", "--data", "shapes", "--weight-decay", "-1"], "weight_decay must be >= 0"),
        (["--model", "vae", "--data", "shapes", "--epochs", "inf"], "epochs must be a finite number"),
        (["--model", "vae", "--data", "shapes", "--grad-clip", "nan"], "grad_clip must be a finite number"),
        (["--model", "vae", "--data", "shapes", "--set", "latent_dim=-3"], "latent_dim must be > 0"),
        (["--model", "beta_vae", "--data", "shapes", "--set", "beta=-1"], "beta must be > 0 and finite"),
        (["--model", "mae", "--data", "shapes", "--set", "num_heads=0"], "num_heads must be > 0"),
        (["--model", "mae", "--data", "shapes", "--set", "depth=-1"], "depth must be >= 0"),
        (["--model", "vqvae", "--data", "shapes", "--set", "hidden_channels=1"], "must be >= 2"),
        (["--model", "vae", "--data", "shapes", "--config", "{binary}"], "is not UTF-8 text"),
        (["--model", "vae", "--data", "shapes", "--out", "{binary}"], "is a file, not a folder"),
        (["--model", "vae", "--data", ""], "data is empty"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "binary": tmp_path / "bin.json"}
    argv = [a.format(**names) for a in argv]
    code, err = _cli([*TINY, "--out", str(tmp_path / "run"), *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_resume_with_another_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    assert _cli([*TINY, *out, "--model", "vae", "--data", "shapes"], capsys)[0] == 0
    code, err = _cli([*TINY, *out, "--model", "mae", "--data", "shapes", "--resume"], capsys)
    assert code == 2 and "holds a vae checkpoint" in err and err.count("\n") == 1
    code, err = _cli([*TINY, *out, "--model", "vae", "--data", "shapes"], capsys)
    assert code == 2 and "already holds a checkpoint" in err
    code, err = _cli([*TINY, *out, "--resume", "--preset", "default"], capsys)
    assert code == 2 and "--preset default differs from the checkpoint's tiny" in err


@pytest.mark.parametrize("kind", models.KINDS)
def test_cli_trains_each_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    argv = [*TINY, "--model", kind, "--data", "photos", "--epoch-crops", "32", "--out", str(tmp_path)]
    assert _cli(argv, capsys) == (0, "")
    model, state = load_model(tmp_path)
    assert model.kind == kind and state["step"] == 2 and state["model_config"]["channels"] == 3
    assert state["command"] == ["python", "-m", "training", "train", *argv]


def test_cli_subprocess_error_is_one_line(tmp_path: Path) -> None:
    argv = ["train", *TINY, "--model", "vae", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]
    bad = subprocess.run([sys.executable, "-m", "training", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: data path {str(tmp_path / 'nope')!r} does not exist"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_resume_continues(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler stopping the job) to a real `python -m training train`
    process: exit 130 / 143, a checkpoint at the last completed step, then --resume."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "training", "train", "--model", "vae", "--data", "shapes", *TINY,
            "--log-every", "1", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen([*args, "--steps", "100000"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_read_rows(out / "metrics.csv")) < 3:
            time.sleep(0.2)
        process.send_signal(signum)
        if signum == signal.SIGTERM:  # schedulers and launchers may signal a process more than once
            for _ in range(3):
                time.sleep(0.005)
                process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code and "Traceback" not in err
    stopped = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert stopped >= 3
    assert cli([*args[3:], "--steps", str(stopped + 2), "--resume"]) == 0
    assert load_model(out)[1]["step"] == stopped + 2


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open() as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def test_cli_resume_needs_only_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --out RUN --resume` takes model, data and settings from the checkpoint; flags still win."""
    out = ["--out", str(tmp_path / "run")]
    first = [*TINY, *out, "--model", "beta_vae", "--data", "shapes", "--set", "beta=3", "--batch-size", "4"]
    assert _cli(first, capsys)[0] == 0
    assert _cli([*out, "--resume", "--steps", "5"], capsys) == (0, "")
    model, state = load_model(tmp_path / "run")
    assert state["step"] == 5 and model.kind == "beta_vae" and model.config.beta == 3.0
    assert state["train_config"]["batch_size"] == 4 and state["train_config"]["resume"] is True
    # --out and --resume may come from a config file as well as from flags
    config = tmp_path / "resume.json"
    config.write_text(json.dumps({"out": str(tmp_path / "run"), "resume": True}))
    assert _cli(["--config", str(config), "--steps", "6"], capsys) == (0, "")
    assert load_model(tmp_path / "run")[1]["step"] == 6
    config.write_text(json.dumps({"out": str(tmp_path / "run"), "resume": True, "init_from": str(tmp_path)}))
    code, err = _cli(["--config", str(config), "--steps", "7"], capsys)
    assert code == 2 and "--init-from starts a new run from other weights" in err

"""Two-process data-parallel training on the CPU (torchrun, gloo): the replicas end identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.checkpoint import load_model, weights_sha256

REPO = Path(__file__).resolve().parents[2]


# vqvae: the EMA codebook buffers must stay in step; vae (tiny preset, Bernoulli): a parameter without a
# gradient (the Gaussian's log-sigma) that DDP has to be told about.
def _two_ranks(out: Path, kind: str, steps: int, val_images: int) -> subprocess.CompletedProcess[str]:
    """A tiny run on shapes by two CPU processes under torchrun (gloo), validating every 2 steps."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training", "train", "--model", kind, "--data", "shapes", "--preset", "tiny",
        "--steps", str(steps), "--batch-size", "8", "--val-every", "2", "--val-images", str(val_images),
        "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_two_ranks_end_with_identical_weights(tmp_path: Path, kind: str) -> None:
    done = _two_ranks(tmp_path / "run", kind, steps=4, val_images=16)
    assert done.returncode == 0, done.stderr[-3000:]
    model, state = load_model(tmp_path / "run")
    # Each rank hashed its own weights and buffers after the last step; rank 0 saved them all.
    digests = state["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] == weights_sha256(model)
    assert state["world_size"] == 2 and state["step"] == 4
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,split,loss") and len(rows) > 1  # one writer: rank 0
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["kind"] == kind


def test_a_rank_without_validation_images_still_validates(tmp_path: Path) -> None:
    # one validation image for two processes: rank 1 has none, and the ranks' sums must still match
    done = _two_ranks(tmp_path / "run", "vae", steps=2, val_images=1)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r.split(",") for r in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    header, val = rows[0], [r for r in rows[1:] if r[1] == "val"]
    assert len(val) == 1 and float(val[0][header.index("loss")]) > 0  # the one image's loss, not 0 / 2


def _ema_rank(rank: int, init_file: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from models.vqvae import VectorQuantizer, VQVAEConfig

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        quantizer = VectorQuantizer(VQVAEConfig(codebook_size=4, code_dim=2, ema_decay=0.5,
                                                dead_code_threshold=0.0))  # fmt: skip
        flat = torch.full((3, 2), float(rank + 1))  # rank 0 sends three vectors to code 0, rank 1 to code 3
        quantizer.update(flat, torch.full((3,), 3 * rank), generator=None)
        torch.save({"count": quantizer.ema_count, "sum": quantizer.ema_sum}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_vq_ema_step_counts_every_ranks_vectors(tmp_path: Path) -> None:
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_ema_rank, args=(str(tmp_path / "init"), str(tmp_path / "ema")), nprocs=2, join=True)
    for rank in (0, 1):
        ema = torch.load(tmp_path / f"ema.{rank}")
        # decay 0.5 from zero: half of the global batch's counts, three vectors at code 0 and three at code 3
        assert ema["count"].tolist() == [1.5, 0.0, 0.0, 1.5]
        assert ema["sum"][0].tolist() == [1.5, 1.5] and ema["sum"][3].tolist() == [3.0, 3.0]

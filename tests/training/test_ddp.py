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
@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_two_ranks_end_with_identical_weights(tmp_path: Path, kind: str) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training", "train", "--model", kind, "--data", "shapes", "--preset", "tiny", "--steps", "4",
        "--batch-size", "8", "--val-every", "2", "--val-images", "16", "--device", "cpu", "--quiet",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    model, state = load_model(tmp_path / "run")
    # Each rank hashed its own weights and buffers after the last step; rank 0 saved them all.
    digests = state["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] == weights_sha256(model)
    assert state["world_size"] == 2 and state["step"] == 4
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,split,loss") and len(rows) > 1  # one writer: rank 0
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["kind"] == kind

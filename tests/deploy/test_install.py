"""The Docker images' install line, run for real in a fresh virtual environment.

No Docker engine runs where CI does, so the image build itself cannot be exercised; its one step that can
break for reasons of ours (the project's extras, the ONNX Runtime build, torch kept out) is this script.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install-runtime.sh"


def _install(venv: Path, runtime: str) -> None:
    done = subprocess.run(["sh", str(SCRIPT), str(venv), runtime, str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _run(venv: Path, code: str) -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.parametrize("runtime", ["cpu", "gpu"])
def test_image_install_line_gives_a_torch_free_service(tmp_path: Path, runtime: str) -> None:
    venv = tmp_path / "venv"
    _install(venv, runtime)
    providers = _run(venv, "import onnxruntime as ort; print(','.join(ort.get_available_providers()))")
    if runtime == "gpu":
        assert "CUDAExecutionProvider" in providers.split(",")
    else:
        assert "CPUExecutionProvider" in providers.split(",")
        assert "CUDAExecutionProvider" not in providers.split(",")
    loaded = _run(venv, "import sys, app.main; print('torch' in sys.modules)")
    assert loaded == "False"


def test_install_line_refuses_an_unknown_runtime(tmp_path: Path) -> None:
    command = ["sh", str(SCRIPT), str(tmp_path / "v"), "tpu", str(ROOT)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert "runtime must be cpu or gpu" in done.stderr

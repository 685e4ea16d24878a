#!/bin/sh
# Installs the service, with no torch, into a fresh virtual environment: the Dockerfile's install step,
# also run by the tests in a throwaway venv so a broken install line fails CI rather than a build.
# Usage: deploy/install-runtime.sh VENV cpu|gpu SOURCE   (SOURCE: the project folder or a built wheel)
set -eu
venv=$1 runtime=$2 source=$3
case "$runtime" in
  cpu|gpu) ;;
  *) echo "error: runtime must be cpu or gpu, not '$runtime'" >&2; exit 2 ;;
esac
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir -q --upgrade pip
"$venv/bin/pip" install --no-cache-dir -q "${source}[${runtime}]"
# Both ONNX Runtime builds install into the same package; having the two breaks the CUDA provider.
if "$venv/bin/pip" show -q onnxruntime >/dev/null 2>&1 && "$venv/bin/pip" show -q onnxruntime-gpu >/dev/null 2>&1; then
  echo "error: onnxruntime and onnxruntime-gpu are both installed" >&2; exit 1
fi
if "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "error: the serving environment must not contain torch" >&2; exit 1
fi

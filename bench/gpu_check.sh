#!/usr/bin/env bash
# Every GPU measurement in one device call (see ../shared/GPU.md for the recipe and the carry calls).
#
# Here, once, before the device calls:
#   ../shared/tools/prepare-gpu-carry.sh safetensors   # ORT GPU wheel parts + web wheels (+ safetensors)
#   bash bench/gpu_check.sh prepare                     # the benchmark photographs -> .gpu/photos
# The fifth device call carries [".gpu/ort5", ".gpu/wheels", ".gpu/photos"], installs as GPU.md says
# (add `safetensors` to its pip line), then runs:  bash bench/gpu_check.sh
#
# Steps, each logged under $OUT: provider assert (fails the script), the app tests with
# AESERVE_PROVIDERS=cuda, one request of each kind over HTTP on CUDA, the engine bench (torch eager
# fp32/bf16, ORT fp32/fp16 with IO binding), the service bench (1, 2, 4 workers), training fp32/bf16,
# and last the targets and the result tables.
#
# Smoke-check of everything but CUDA, on a CPU machine (seconds-long benchmarks, no app tests):
#   bash bench/gpu_check.sh prepare && PROVIDER=cpu SMOKE=1 SKIP_TESTS=1 ART=<tiny artifacts> bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
  mkdir -p .gpu/photos
  folder=$(.venv/bin/python -c "from training.data.photos import photo_folder; print(photo_folder())")
  names=$(.venv/bin/python -c "from training.data.photos import TRAIN_PHOTOS, VAL_PHOTOS; print(*TRAIN_PHOTOS, *VAL_PHOTOS)")
  for n in $names; do cp "$folder/$n" .gpu/photos/; done
  du -sh .gpu/photos
  exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
PROVIDER=${PROVIDER:-cuda}
SMOKE_ARG=$([ -n "${SMOKE:-}" ] && echo --smoke || true)
mkdir -p "$OUT"
export BENCH_PHOTOS=${BENCH_PHOTOS:-$PWD/.gpu/photos}
RESULTS="$OUT/results"
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.log"; }

step "provider"
if [ "$PROVIDER" = cuda ]; then
  $PY - > "$OUT/provider.log" 2>&1 <<'PY'
import sys, onnxruntime as ort
from onnx import helper, TensorProto
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
s = ort.InferenceSession(helper.make_model(graph).SerializeToString(), providers=["CUDAExecutionProvider"])
print(ort.__version__, ort.get_device(), s.get_providers())
sys.exit(0 if s.get_providers()[0] == "CUDAExecutionProvider" else 1)
PY
  rc=$?
  cat "$OUT/provider.log"
  [ "$rc" -eq 0 ] || { echo "CUDA provider missing: stopping" >&2; exit 1; }
else
  echo "PROVIDER=$PROVIDER: no CUDA assert"
fi

ART=${ART:-artifacts}
if ! ls "$ART"/*/manifest.json >/dev/null 2>&1; then
  step "no bundled artifacts: exporting untrained default models"
  ART=/tmp/untrained
  $PY -m bench.untrained "$ART" > "$OUT/untrained.log" 2>&1 || { tail "$OUT/untrained.log"; exit 1; }
fi

if [ -z "${SKIP_TESTS:-}" ]; then
  step "app tests with AESERVE_PROVIDERS=$PROVIDER"
  AESERVE_PROVIDERS=$PROVIDER timeout 100 $PY -m pytest tests/app -q -x -p no:cacheprovider > "$OUT/tests.log" 2>&1
  echo "tests exit $? (tail below)"; tail -3 "$OUT/tests.log"
fi

step "one request of each kind ($PROVIDER)"
ART="$ART" OUT="$OUT" PROVIDER="$PROVIDER" timeout 60 $PY - <<'PY' 2>&1 | tee "$OUT/requests.log"
import json, os, urllib.request
from pathlib import Path
from bench import photos
from bench.servers import SERVICE_APP, Server
from bench.service import MULTIPART, _multipart
art = Path(os.environ["ART"])
env = {"AESERVE_MODEL_DIR": str(art.resolve()), "AESERVE_PROVIDERS": os.environ["PROVIDER"]}
with Server(SERVICE_APP, env=env, log=Path(os.environ["OUT"]) / "requests-service.log") as server:
    base = f"http://127.0.0.1:{server.port}"
    print("ready after", round(server.ready_s, 2), "s")
    version = json.load(urllib.request.urlopen(base + "/v1/version"))
    print("providers in use:", version["providers"]["in_use"])
    for folder in sorted(p for p in art.iterdir() if (p / "manifest.json").exists()):
        m = json.loads((folder / "manifest.json").read_text())
        i = m["input"]
        png = photos.png_crops(1, i["height"], i["width"], i["channels"])[0]
        ops = ["reconstruct", "encode"] + (["tokens"] if m["kind"] == "vqvae" else [])
        for op in ops:
            req = urllib.request.Request(f"{base}/v1/models/{m['name']}/{op}",
                                         data=_multipart("image", [png]), headers={"Content-Type": MULTIPART})
            with urllib.request.urlopen(req) as r:
                print(f"{m['name']:10} {op:12} {r.status} {r.headers['content-type']} {len(r.read())} bytes")
PY

step "engine (torch eager fp32/bf16, ORT fp32/fp16; $PROVIDER)"
timeout 150 $PY -m bench engine --provider "$PROVIDER" --artifacts "$ART" --out "$RESULTS" --batches 1,16,64,256 \
  --seconds 0.3 $SMOKE_ARG > "$OUT/engine.log" 2>&1; echo "engine exit $?"

step "service (1, 2, 4 workers)"
timeout 200 $PY -m bench service --provider "$PROVIDER" --artifacts "$ART" --out "$RESULTS" --workers 1,2,4 \
  --duration 3 --warmup 1 --batches 1,16,64,256 $SMOKE_ARG > "$OUT/service.log" 2>&1; echo "service exit $?"

step "training fp32 / bf16"
$PY -c "import skimage" 2>/dev/null || export BENCH_TRAIN_DATA=shapes  # no photographs there
timeout 100 $PY -m bench training --provider "$PROVIDER" --out "$RESULTS" --train-steps 12 $SMOKE_ARG \
  > "$OUT/training.log" 2>&1
echo "training exit $?"

step "report"
$PY -m bench report --out "$RESULTS" 2>&1 | tee "$OUT/targets.txt"
sed -n '/^### Engine/,/^### Training/p' "$RESULTS/results.md" | grep -E "^\| (vqvae|model)" | head -20

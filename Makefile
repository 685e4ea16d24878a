# Two commands matter: `make serve` (set up, then serve the bundled models on http://127.0.0.1:8000)
# and `make test` (set up, then run the whole test suite). Everything else is a step of those.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000
# The ONNX Runtime build: cpu (onnxruntime) or gpu (onnxruntime-gpu); never both in one environment.
RUNTIME ?= cpu

.PHONY: serve setup setup-serve setup-dev test lint browser wrk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving needs no torch: the service extra alone. The two ONNX Runtime builds share one module name, so
# switching RUNTIME removes the other build first (both installed, the one imported is undefined).
OTHER_RUNTIME := $(if $(filter gpu,$(RUNTIME)),cpu,gpu)
ORT_PACKAGE_cpu := onnxruntime
ORT_PACKAGE_gpu := onnxruntime-gpu
$(VENV)/.serve-$(RUNTIME): pyproject.toml | $(BIN)/python
	@if [ -e $(VENV)/.serve-$(OTHER_RUNTIME) ] || $(BIN)/pip show -q $(ORT_PACKAGE_$(OTHER_RUNTIME)) 2>/dev/null; then \
	  $(BIN)/pip uninstall -q -y onnxruntime onnxruntime-gpu; rm -f $(VENV)/.serve-$(OTHER_RUNTIME) $(VENV)/.dev; fi
	$(BIN)/pip install -q -e ".[$(RUNTIME)]"
	touch $@

setup-serve: $(VENV)/.serve-$(RUNTIME)

# Training, export, tests and linters: torch is pinned to the CPU build on this machine's disk.
# A plain index gives torch's CUDA build (several GB); TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the CPU build from PyTorch's own index instead (this project's machines have it on disk).
TORCH_INDEX ?=
$(VENV)/.dev: pyproject.toml $(VENV)/.serve-$(RUNTIME) | $(BIN)/python
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[$(RUNTIME),train,dev]"
	touch $@

setup-dev: $(VENV)/.dev browser wrk

# The browser tests drive Debian's Chromium; no tool downloads a browser of its own.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "warning: /usr/bin/chromium missing (apt-get install chromium); browser tests will be skipped"; fi; \
	fi

# The benchmark's compiled load generator (a cross-check of its Python client); optional.
wrk:
	@if ! command -v wrk >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
	      || echo "warning: could not install wrk; the benchmark skips its wrk cross-check"; \
	  else echo "warning: wrk missing (apt-get install wrk); the benchmark skips its wrk cross-check"; fi; \
	fi

setup: setup-serve setup-dev

serve: setup-serve
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --no-access-log

test: setup-dev
	$(BIN)/pytest

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check app
	$(BIN)/mypy app
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

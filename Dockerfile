# syntax=docker/dockerfile:1
# Two targets, neither carrying torch:
#   docker build --target gpu -t aeserve:gpu .   (CUDA 13 + cuDNN runtime, onnxruntime-gpu)
#   docker build --target cpu -t aeserve:cpu .   (slim, onnxruntime)
# The bundled default models live in /models; mount a volume there to serve others.

# ---- build: a wheel of the project (the service code only is imported at run time)
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY training ./training
COPY bench ./bench
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- cpu: slim runtime
FROM python:3.12-slim AS cpu
ARG GIT_REVISION=unknown
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    AESERVE_MODEL_DIR=/models \
    AESERVE_PROVIDERS=cpu \
    AESERVE_GIT_REVISION=${GIT_REVISION}
COPY deploy/install-runtime.sh /tmp/install-runtime.sh
COPY --from=build /wheels /wheels
RUN sh /tmp/install-runtime.sh /opt/venv cpu "$(ls /wheels/*.whl)" \
    && rm -rf /wheels /tmp/install-runtime.sh \
    && useradd --system --uid 10001 --no-create-home aeserve
COPY --chown=10001:10001 artifacts /models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20", "--no-access-log"]

# ---- gpu: CUDA 13 cuDNN runtime (onnxruntime-gpu targets CUDA 13 from 1.27 on)
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS gpu
ARG GIT_REVISION=unknown
ENV PYTHONUNBUFFERED=1 \
    DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/venv/bin:$PATH \
    AESERVE_MODEL_DIR=/models \
    AESERVE_PROVIDERS=auto \
    AESERVE_GIT_REVISION=${GIT_REVISION}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/install-runtime.sh /tmp/install-runtime.sh
COPY --from=build /wheels /wheels
RUN sh /tmp/install-runtime.sh /opt/venv gpu "$(ls /wheels/*.whl)" \
    && rm -rf /wheels /tmp/install-runtime.sh \
    && useradd --system --uid 10001 --no-create-home aeserve
COPY --chown=10001:10001 artifacts /models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20", "--no-access-log"]

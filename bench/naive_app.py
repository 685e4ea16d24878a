"""The naive baseline: what a user would write in an afternoon to serve a model's reconstruction.

FastAPI plus ONNX Runtime with default session options, the sessions made at import, one `session.run`
per graph per request (no batching), and the image as a JSON list of floats in and out (pydantic
validates every number). `NAIVE_MODEL=<artifact folder> uvicorn bench.naive_app:app`.

Request: {"image": [[[float]]]} (C x H x W in [0, 1]); response: {"image": [[[float]]]}.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

MODEL = Path(os.environ.get("NAIVE_MODEL", "artifacts/vqvae"))
KIND = json.loads((MODEL / "manifest.json").read_text())["kind"]


def _session(graph: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL / f"{graph}.onnx"), providers=ort.get_available_providers())


if KIND == "vqvae":
    encoder, decoder = _session("encoder"), _session("decoder_continuous")
elif KIND == "mae":
    model = _session("reconstruct")
else:
    encoder, decoder = _session("encoder"), _session("decoder")

app = FastAPI()


class Image(BaseModel):
    image: list[list[list[float]]]


@app.get("/v2/health/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/reconstruct")
def reconstruct(body: Image) -> dict[str, list]:
    x = np.array([body.image], dtype=np.float32)
    if KIND == "vqvae":
        z_e = encoder.run(["z_e"], {"image": x})[0]
        out = decoder.run(["image"], {"z_e": z_e})[0]
    elif KIND == "mae":
        mask = np.zeros((1, model.get_inputs()[1].shape[1]), np.float32)
        out = model.run(None, {"image": x, "mask": mask})[0]
    else:
        mean = encoder.run(["mean"], {"image": x})[0]
        out = decoder.run(["image"], {"latent": mean})[0]
    return {"image": out[0].tolist()}

"""The naive baseline: what a user would write in an afternoon to serve a model's reconstruction.

FastAPI plus ONNX Runtime with default session options, the session made at import, one `session.run`
of the artifact's `reconstruct` graph per request (no batching: the same graph the service runs), and the
image as a JSON list of floats in and out (pydantic validates every number).
`NAIVE_MODEL=<artifact folder> uvicorn bench.naive_app:app`.

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
model = ort.InferenceSession(str(MODEL / "reconstruct.onnx"), providers=ort.get_available_providers())

app = FastAPI()


class Image(BaseModel):
    image: list[list[list[float]]]


@app.get("/v2/health/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/reconstruct")
def reconstruct(body: Image) -> dict[str, list]:
    x = np.array([body.image], dtype=np.float32)
    feeds = {"image": x}
    if KIND == "mae":  # nothing masked: the whole image reconstructed
        feeds["mask"] = np.zeros((1, model.get_inputs()[1].shape[1]), np.float32)
    out = model.run(["reconstruction"], feeds)[0]
    return {"image": out[0].tolist()}

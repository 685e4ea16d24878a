"""The framework's floor: a FastAPI endpoint that reads the request body and answers a fixed PNG.

`uvicorn bench.noop_app:app`. Posting the service's own single-image requests here measures what
uvicorn + FastAPI cost per request with no model, no image decode and no multipart parsing: the most
requests per second any endpoint on this stack can reach on the machine.
"""

import io

from fastapi import FastAPI, Request, Response
from PIL import Image

app = FastAPI()

# A reply of about the size of a real 64x64 reconstruction, so the response bytes cost the same.
_buf = io.BytesIO()
Image.effect_noise((64, 64), 64).convert("RGB").save(_buf, "PNG")
REPLY = _buf.getvalue()


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(REPLY, media_type="image/png")

"""The bad-input corpus (bench/reliability/corpus.py) against every endpoint of the tiny models.

Every case must get its expected answer: a 4xx JSON error naming the problem, or a correct 200 for a
valid but odd image; never a 5xx. The same corpus runs against a real server in
`python -m bench.reliability badinput`, which also measures the server's memory over many rounds.
"""

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.kinds import ADAPTERS
from bench.reliability import corpus
from tests.reliability.asgi import send

# (model, operation) for every operation of every tiny model (the models are named after their kinds)
ENDPOINTS = [(kind, op) for kind, adapter in ADAPTERS.items() for op in adapter.operations]
GRAPHS = [f"{kind}_{graph}" for kind, adapter in ADAPTERS.items() for graph in adapter.graphs]


@pytest.fixture(scope="module")
def cases(client: TestClient) -> list[corpus.Case]:
    models = client.get("/v1/models").json()["models"]
    graphs = {g: client.get(f"/v2/models/{g}").json() for g in client.app.state.registry.graphs}
    s = client.app.state.settings
    return corpus.build(
        models, graphs, max_images=s.max_images, max_pixels=s.max_pixels, max_body_bytes=s.max_body_bytes
    )


def failures(client: TestClient, chosen: list[corpus.Case]) -> list[str]:
    out = []
    for case in chosen:
        status, headers, body = send(client, case)
        problem = corpus.judge(case, status, headers, body)
        if problem:
            out.append(f"{case.id}: {problem}")
    return out


def pick(cases: list[corpus.Case], prefix: str) -> list[corpus.Case]:
    chosen = [c for c in cases if c.id.startswith(prefix)]
    assert chosen, f"no corpus case for {prefix}"
    return chosen


@pytest.mark.parametrize(("model", "operation"), ENDPOINTS)
def test_bad_input_per_endpoint(
    client: TestClient, cases: list[corpus.Case], model: str, operation: str
) -> None:
    chosen = [c for c in cases if c.id.startswith(f"{model}/{operation}/")]
    chosen += [c for c in cases if c.id.startswith("name/") and c.id.endswith(f"/{operation}")]
    if operation in ("decode",):
        chosen += pick(cases, f"{model}/decode/")
    assert chosen, f"no corpus case for {model}/{operation}"
    assert failures(client, chosen) == []


@pytest.mark.parametrize("graph", GRAPHS)
def test_bad_input_per_graph(client: TestClient, cases: list[corpus.Case], graph: str) -> None:
    assert failures(client, pick(cases, f"{graph}/infer/")) == []


def test_bad_names_and_routes(client: TestClient, cases: list[corpus.Case]) -> None:
    chosen = [c for c in cases if c.id.startswith(("name/", "graph/")) or "/" not in c.id]
    assert len(chosen) > 50
    assert failures(client, chosen) == []


def test_the_corpus_covers_what_the_issue_lists(cases: list[corpus.Case]) -> None:
    ids = " ".join(c.id for c in cases)
    for needed in (
        "truncated-png", "truncated-jpeg", "zero-bytes", "text-as-png", "random-bytes-as-jpeg", "polyglot",
        "huge-dimensions", "decompression-bomb", "1x1", "16-bit", "cmyk", "palette", "rgba", "animated-gif",
        "exif-rotate", "wrong-multipart-field", "latent-string", "latent-nan", "latent-infinity",
        "tokens-out-of-range", "tokens-1-axis", "steps=0", "steps=1000000", "mask_ratio=1", "name/nope",
        "%2F", "..",
    ):  # fmt: skip
        assert needed in ids, needed


def test_odd_images_are_read_the_right_way_up(client: TestClient, cases: list[corpus.Case]) -> None:
    """A 200 for an odd image must be the right picture: an EXIF-rotated JPEG is read at its displayed
    size (30x40, not 40x30) and the answer is a PNG of the model's size."""
    by_id = {c.id: c for c in cases}
    status, headers, body = send(client, by_id["vae/reconstruct/exif-rotate-90"])
    assert status == 200 and headers["x-image-fit"].startswith("center-crop 30x40 ->")
    size = client.get("/v1/models/vae").json()["input"]
    out = Image.open(io.BytesIO(body))
    assert out.format == "PNG" and out.size == (size["width"], size["height"])

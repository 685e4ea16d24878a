"""Fuzzing every /v1 and /v2 route from the OpenAPI description (schemathesis) against a real server.

Checks: no 5xx, and every answer (status code, content type, headers, body) conforms to what the
OpenAPI description declares, so the declarations in app/ are the contract. Path parameters are
mostly real model and graph names (so generated requests reach the operations), sometimes generated.
`FUZZ_EXAMPLES` (default 8 per operation) bounds the run.
"""

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

# schemathesis is a test-only tool (pip install schemathesis); without it this module is skipped
schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the API")
from hypothesis import HealthCheck, settings  # noqa: E402  (schemathesis brings hypothesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.kinds import ADAPTERS  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.reliability.server import Server  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODELS = sorted(ADAPTERS)  # the tiny artifacts are named after their kinds
GRAPHS = sorted(f"{kind}_{g}" for kind, a in ADAPTERS.items() for g in a.graphs)


@pytest.fixture(scope="module")
def server(tiny_artifacts: Path) -> Iterator[Server]:
    with Server(tiny_artifacts, max_delay_ms=2) as s:
        yield s


# The description does not depend on the models, so it is read from an app that never starts; the
# requests go to the real server. (schemathesis' lazy fixture loader does not run under pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Settings(model_dir=Path("/nonexistent"))).openapi())


def _real(value: object, names: list[str]) -> object:
    """A real name for most generated values (stable per value), the generated one otherwise."""
    slot = zlib.crc32(repr(value).encode()) % (len(names) + 1)
    return names[slot] if slot < len(names) else value


@schema.include(path_regex="^/(v1|v2)").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_description(case: schemathesis.Case, server: Server) -> None:
    params = case.path_parameters or {}
    if "name" in params:
        params["name"] = _real(params["name"], MODELS)
    if "graph" in params:
        params["graph"] = _real(params["graph"], GRAPHS)
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=60)

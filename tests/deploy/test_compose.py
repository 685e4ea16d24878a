"""docker-compose.yml, read as data: what it publishes and to whom (no Docker engine runs here)."""

import re
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_every_published_port_is_on_loopback_unless_aeserve_bind_says_otherwise() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: svc.get("ports", []) for name, svc in services.items()}
    assert any(published.values()), "the compose file publishes no port at all"
    for name, ports in published.items():
        for port in ports:
            # host_ip:host_port:container_port with the host ip from AESERVE_BIND, loopback by default
            assert re.fullmatch(r"\$\{AESERVE_BIND:-127\.0\.0\.1\}:\d+:\d+", str(port)), (name, port)


def test_the_api_key_reaches_every_service_of_ours() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ours = {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith("aeserve:")}
    assert len(ours) == 3
    for name, svc in ours.items():
        assert svc["environment"]["AESERVE_API_KEY"] == "${AESERVE_API_KEY:-}", name

"""Fixtures for the reliability tests: the service tests' own (tests/app/conftest.py): `client` (one
in-process app over the four tiny models, default limits), `artifact_copy` and `make_settings`."""

from tests.app.conftest import artifact_copy, client, image_bytes_fixture, make_settings_fixture

__all__ = ["artifact_copy", "client", "image_bytes_fixture", "make_settings_fixture"]

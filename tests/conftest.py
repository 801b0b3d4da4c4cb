"""Shared test fixtures.

Tests that need the real annotation files read them from ``../shared/data`` (beside the
checkout). Elsewhere they skip with a reason; under ``CI=true`` a missing ``../shared`` fails.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared_data() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"../shared/data not found at {SHARED_DATA}: the real EPIC-KITCHENS annotation files live there"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: this is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``."""
    return _shared_data()


@pytest.fixture(scope="session")
def epic_dir(shared_data: Path) -> Path:
    """Path of the real EPIC-KITCHENS-100 annotation folder."""
    return shared_data / "epic100"


# ---- a local S3 server ----------------------------------------------------------------------

#: Dummy credentials for the local S3 server; tests hand them over only through the environment.
S3_ENV = {"AWS_ACCESS_KEY_ID": "egofeat-test", "AWS_SECRET_ACCESS_KEY": "egofeat-test",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto in server mode) on a free localhost port, for the whole session.

    Yields its endpoint URL. Use :func:`s3_env` / :func:`s3_bucket` rather than this directly:
    they put the endpoint and dummy credentials into the environment, where boto (and so
    s3fs, zarr and child processes such as `egofeat extract --store s3://…`) find them.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """The environment that points S3 clients at the local server with dummy credentials.

    Set in this process (so subprocesses inherit it) and returned. Other AWS settings of the
    machine (profiles, config files) are masked, so no real account is ever reached.
    """
    import fsspec

    for name in [n for n in os.environ if n.startswith(("AWS_", "FSSPEC_S3"))]:
        monkeypatch.delenv(name)
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # instances remember their endpoint
    yield env
    fsspec.get_filesystem_class("s3").clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_env, request) -> str:
    """A new, empty bucket on the local S3 server: its ``s3://`` URL."""
    import hashlib

    import fsspec

    name = "egofeat-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    fs = fsspec.filesystem("s3")
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    return f"s3://{name}"

"""Shared fixtures: the real default model (loaded once per session) and free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def config():
    from runtime.config import load

    return load(ROOT / "config.toml")


@pytest.fixture(scope="session")
def language(config):
    from runtime import assemble

    return assemble.language(config)


@pytest.fixture(scope="session")
def backend(config, language):
    """The real default model, as a user gets it."""
    from runtime import assemble

    return assemble.backend(config, language)

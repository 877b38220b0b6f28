"""Shared fixtures: a real Tansu broker; every worker a test started is stopped at the end.
Helpers (workers, HTTP, metrics, consumers) live in ``tests/helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.broker import stop_process

from .helpers import SPAWNED, free_port


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    from streams.broker import start_broker

    port = free_port()
    proc = start_broker(port)
    yield f"127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """Every worker a test started is stopped when the session ends, whatever happened."""
    yield
    for proc in SPAWNED:
        stop_process(proc, timeout=10)

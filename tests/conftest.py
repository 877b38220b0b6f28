"""Shared fixtures: a real broker; every worker a test started is stopped at the end.
Helpers (workers, HTTP, metrics, consumers) live in ``tests/helpers.py``.

``broker`` is the embedded Tansu, or Apache Kafka (``tests/kafka.py``, one KRaft node with the
broker's default limits) for the modules marked ``kafka``: those run once on each, and a test's
id names the broker it ran on (``test_x[tansu]``, ``test_x[kafka]``). ``-m kafka -k kafka`` runs
the Kafka suite alone (``make test-kafka``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.broker import stop_process

from .helpers import SPAWNED, free_port


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" in metafunc.fixturenames:
        engines = ["tansu", "kafka"] if metafunc.definition.get_closest_marker("kafka") else ["tansu"]
        metafunc.parametrize("broker", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a broker shared by the session: Tansu or Apache Kafka."""
    if request.param == "kafka":
        from .kafka import KafkaCluster

        cluster = KafkaCluster(tmp_path_factory.mktemp("kafka")).start()
        yield cluster.bootstrap
        cluster.stop()
        return
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

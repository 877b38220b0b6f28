"""The session timeout that suits each broker, and the setting that overrides it."""

from __future__ import annotations

import pytest

from streams.groups import PROTOCOL, timeouts
from streams.settings import Settings


def test_tansu_gets_the_shortest_timeout_kafka_a_safer_one() -> None:
    settings = Settings()
    assert timeouts(settings, "tansu_cluster") == (6.0, 1.0)
    assert timeouts(settings, "af07329b-76aa-411d-8f8a-1ea8fe4cb9b7") == (10.0, 3.0)
    assert timeouts(settings, None) == (10.0, 3.0)
    assert PROTOCOL == "classic"


@pytest.mark.parametrize(("value", "expected"), [("30s", (30.0, 3.0)), ("6s", (6.0, 2.0))])
def test_the_setting_wins_on_every_broker(value: str, expected: tuple[float, float]) -> None:
    settings = Settings(session_timeout=value)
    assert timeouts(settings, "tansu_cluster") == expected
    assert timeouts(settings, "some-kafka") == expected


@pytest.mark.parametrize("value", ["3s", "10m"])
def test_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="between 6s"):
        Settings(session_timeout=value)

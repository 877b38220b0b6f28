"""Private virtualenvs for the peers that must not share the main venv (bench/.venvs/NAME)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

VENVS = Path(__file__).resolve().parents[1] / ".venvs"

#: venv name -> pip requirements (orjson: both frameworks parse with it, like the raw-orjson peer; quix has it already).
REQUIREMENTS = {
    "quix": ["quixstreams>=3,<4"],
    "bytewax": ["bytewax[kafka]==0.21.*", "orjson"],
}


def _log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def venv_python(name: str) -> Path:
    """Return the venv's python, creating the venv and installing its requirements if missing.

    A venv counts as ready once its ``.ready`` marker exists; a half-built one is rebuilt.
    Raises ``RuntimeError`` (with the tail of pip's output) when creation fails.
    """
    root = VENVS / name
    python = root / "bin" / "python"
    marker = root / ".ready"
    if marker.exists() and python.exists():
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    (VENVS / ".gitignore").write_text("*\n")  # built on demand, never committed
    began = time.monotonic()
    _log(f"creating venv {root} ...")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--clear", str(root)])
    _log(f"pip install {' '.join(REQUIREMENTS[name])} into {root} (can take minutes) ...")
    _run([str(python), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS[name]], stream=True)
    marker.write_text(f"{time.monotonic() - began:.1f}\n")
    _log(f"venv {name} ready in {time.monotonic() - began:.0f} s")
    return python


def _run(cmd: list[str], stream: bool = False) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if stream and line.startswith(("Collecting", "Successfully", "ERROR")):
            _log("  " + line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n" + "\n".join(tail))

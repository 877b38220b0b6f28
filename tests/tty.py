"""Drive a command in a pseudo-terminal and read its screen as a user sees it.

pexpect runs the command in a pty of a given size; pyte (a VT100 emulator) plays the
bytes it writes (rich's live redraws included) onto a screen, whose lines are what is on
the user's terminal at that moment.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pexpect
import pyte


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, rows: int = 40, cols: int = 80) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=cwd, dimensions=(rows, cols), timeout=1)
        self.transcript = bytearray()

    def pump(self, seconds: float = 0.5) -> None:
        """Read whatever the program wrote for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return
            self.transcript += data
            self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(1.0)
            screen = self.text()
            if check(screen):
                return screen
            if not self.child.isalive():
                break
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen:\n{self.text()}")

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, then wait for the program to end; its exit status."""
        self.child.sendintr()
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.pump(0.5)
        if self.child.isalive():
            self.child.kill(9)
            raise AssertionError("did not stop within the timeout after Ctrl-C")
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -(self.child.signalstatus or 0))


def row(screen: str, first: str) -> list[str] | None:
    """The cells of the first screen line that starts with ``first`` (split on 2+ spaces or 1)."""
    for line in screen.splitlines():
        if line.strip().startswith(first):
            return re.split(r"\s+", line.strip())
    return None

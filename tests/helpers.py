"""Small helpers shared by test modules (real sinks, waiting for a condition)."""
from __future__ import annotations

import threading
import time
from typing import Callable

from fastflow.executors.base import OutputLine


class Lines:
    """A real sink collecting lines; `triggers[text]` runs an action when a line matches."""

    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.triggers: dict[str, Callable[[], None]] = {}
        self.lock = threading.Lock()

    def __call__(self, line: OutputLine) -> None:
        with self.lock:
            self.lines.append(line)
        if line.text in self.triggers:
            self.triggers[line.text]()

    def texts(self, stream: str) -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "a condition",
             interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")

"""Progress reporting: stage counters in, lines for people or programs out.

``ProgressSink.update(stage, done, total)`` is all the core calls. ``JsonProgress`` is the plugin
contract: one JSON object per line on stdout, ``{"stage": "detect", "done": 120, "total": 2400}``,
and at the end ``{"stage": "done", "output": "..."}`` (or ``"error"``). The tqdm bar lives in
``deid_edit.cli``, the only package importing tqdm.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, Protocol


class ProgressSink(Protocol):
    def update(self, stage: str, done: int, total: int) -> None: ...

    def event(self, stage: str, **fields: Any) -> None: ...


class NullProgress:
    """Reports nothing (library use, tests, -q)."""

    def update(self, stage: str, done: int, total: int) -> None:
        pass

    def event(self, stage: str, **fields: Any) -> None:
        pass


class JsonProgress:
    """One JSON object per line; throttled to ~10 lines a second, first and last always sent."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 0.1, **context: Any) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self.context = context
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps({**obj, **self.context}) + "\n")
            self.stream.flush()

    def update(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done not in (0, total) and now - self._last.get(stage, 0.0) < self.interval:
            return
        self._last[stage] = now
        self._emit({"stage": stage, "done": done, "total": total})

    def event(self, stage: str, **fields: Any) -> None:
        self._emit({"stage": stage, **fields})

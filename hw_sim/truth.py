"""The ground-truth log: every value the simulator serves and every fault it injects,
as JSON lines (one object per line), so tests and benchmarks can compare what reached
the fleet with what the building really showed. It never changes a value.

Timestamps (ts_ms) are *simulated* UTC milliseconds: for a Modbus value, the moment the
meter latched its registers for that response (request complete on the wire plus the
turnaround's start); for a LoRa value, the moment the sensor measured before sending.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

_FLUSH_INTERVAL_S = 0.5


class GroundTruth:
    """Append-only record of served values, injected faults and bus events.

    Records are dicts with at least ``type`` ("value", "fault" or "event"), ``ts_ms`` and
    ``source`` (meter or sensor name). Kept in memory (up to ``keep`` records, None = all)
    for in-process tests, and written to ``path`` as JSON lines when a path is given.
    Thread-safe; writing is buffered and flushed at most every 0.5 s, so logging stays
    off the bus's timing path.
    """

    def __init__(self, path: str | Path | None = None, keep: int | None = None) -> None:
        self.path = Path(path) if path else None
        self._records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", buffering=1 << 16)
        self._last_flush = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)
            if self._file is not None:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
                now = time.monotonic()
                if now - self._last_flush > _FLUSH_INTERVAL_S:
                    self._file.flush()
                    self._last_flush = now

    def value(self, ts_ms: int, source: str, quantity: str, value: float, **extra: Any) -> None:
        self.write(
            {
                "type": "value",
                "ts_ms": ts_ms,
                "source": source,
                "quantity": quantity,
                "value": value,
                **extra,
            }
        )

    def fault(self, ts_ms: int, source: str, fault: str, **extra: Any) -> None:
        self.write({"type": "fault", "ts_ms": ts_ms, "source": source, "fault": fault, **extra})

    def event(self, ts_ms: int, source: str, event: str, **extra: Any) -> None:
        self.write({"type": "event", "ts_ms": ts_ms, "source": source, "event": event, **extra})

    # -- queries for tests -------------------------------------------------------------
    def records(
        self, type: str | None = None, source: str | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        """Records in order, filtered by type, source and any other field equality."""
        with self._lock:
            items = list(self._records)
        out = []
        for r in items:
            if type is not None and r.get("type") != type:
                continue
            if source is not None and r.get("source") != source:
                continue
            if any(r.get(k) != v for k, v in match.items()):
                continue
            out.append(r)
        return out

    def values(self, source: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return self.records("value", source, **match)

    def faults(self, source: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return self.records("fault", source, **match)

    def events(self, source: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return self.records("event", source, **match)

    def latest(self, source: str) -> dict[str, float]:
        """The last served value of each quantity of one meter or sensor."""
        out: dict[str, float] = {}
        for r in self.values(source):
            out[r["quantity"]] = r["value"]
        return out

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                self._last_flush = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ground-truth file (for scripts and subprocess tests)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

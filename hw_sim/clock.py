"""The simulated clock: UTC milliseconds that can run faster than real time.

All physics takes time from one SimClock so a year of load shape can pass in minutes.
It never sleeps; wire timing on the bus always uses real time.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """Simulated UTC time = start + (real time elapsed) * speed (+ manual jumps).

    speed=1.0 is real time; speed=60.0 makes one real second a simulated minute.
    ``advance(ms)`` jumps forward (never backward) for tests that need days to pass.
    """

    def __init__(self, speed: float = 1.0, start_ms: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0 (got {speed}); 1.0 is real time")
        self.speed = float(speed)
        # The start kept to the microsecond and read with the monotonic clock at one instant:
        # simulated time from "now" at speed 1 is then the wall clock, never behind it. (Whole
        # milliseconds truncated twice let it lag by up to 2 ms, so a request that reached a
        # meter just after a second boundary was logged in the second before.)
        self._mono0, wall_ms = _wall_ms_now()
        self._start_ms = wall_ms if start_ms is None else float(int(start_ms))
        self.start_ms = int(self._start_ms)
        self._jump_ms = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """Simulated UTC milliseconds since the epoch."""
        elapsed_s = time.monotonic() - self._mono0
        return int(self._start_ms + self._jump_ms + elapsed_s * self.speed * 1000.0)

    def advance(self, ms: int) -> None:
        """Jump simulated time forward by ms (e.g. to let a weekend pass in a test)."""
        if ms < 0:
            raise ValueError("the simulated clock never runs backwards")
        with self._lock:
            self._jump_ms += int(ms)

    def sim_s(self, real_s: float) -> float:
        """Simulated seconds that pass during real_s real seconds."""
        return real_s * self.speed

    def real_s(self, sim_s: float) -> float:
        """Real seconds it takes for sim_s simulated seconds to pass."""
        return sim_s / self.speed


def _wall_ms_now() -> tuple[float, float]:
    """(time.monotonic(), wall-clock ms) of about one instant: the monotonic reading just
    before the wall clock's, the closest pair of three tries (a preemption between the two
    reads would otherwise put simulated time ahead for a whole run)."""
    best: tuple[float, float, float] | None = None
    for _ in range(3):
        m0 = time.monotonic()
        wall_s = time.time()
        spread = time.monotonic() - m0
        if best is None or spread < best[0]:
            best = (spread, m0, wall_s * 1000.0)
    assert best is not None
    return best[1], best[2]

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
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self._mono0 = time.monotonic()
        self._jump_ms = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """Simulated UTC milliseconds since the epoch."""
        elapsed_s = time.monotonic() - self._mono0
        return self.start_ms + self._jump_ms + int(elapsed_s * self.speed * 1000.0)

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

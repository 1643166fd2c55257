"""Daily load shapes of municipal buildings: the share of a meter's variable load in use
at a given local time, by weekday and weekend. Pure functions of time; no randomness.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Share (0..1) of the variable load at each local hour 0..23; values between hours are
# interpolated linearly so power changes smoothly. Shapes follow typical German municipal
# buildings: lessons 7:30-15:00 with evening sports in schools, office hours in town halls,
# opening hours plus school swimming in pools, early shifts and night EV charging in depots.
# fmt: off
SHAPES: dict[str, dict[str, tuple[float, ...]]] = {
    "school": {
        "weekday": (0.05, 0.05, 0.05, 0.05, 0.05, 0.08, 0.25, 0.7, 1.0, 1.0, 0.95, 0.95,
                    0.9, 0.75, 0.55, 0.4, 0.3, 0.25, 0.3, 0.3, 0.2, 0.1, 0.05, 0.05),
        "weekend": (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.06, 0.1, 0.12, 0.12,
                    0.1, 0.1, 0.1, 0.1, 0.08, 0.06, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05),
    },
    "office": {
        "weekday": (0.08, 0.08, 0.08, 0.08, 0.08, 0.1, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0,
                    0.85, 0.95, 0.95, 0.9, 0.7, 0.45, 0.25, 0.15, 0.1, 0.08, 0.08, 0.08),
        "weekend": (0.08,) * 24,
    },
    "pool": {
        "weekday": (0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.6, 0.8, 0.8, 0.7, 0.7, 0.7,
                    0.7, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.7, 0.3, 0.1),
        "weekend": (0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 1.0, 1.0, 1.0,
                    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.4, 0.1, 0.1, 0.1, 0.1),
    },
    "depot": {
        "weekday": (0.6, 0.6, 0.6, 0.5, 0.4, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9,
                    0.9, 0.9, 0.7, 0.5, 0.3, 0.15, 0.1, 0.1, 0.1, 0.3, 0.6, 0.6),
        "weekend": (0.3, 0.3, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1,
                    0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3),
    },
    "flat": {"weekday": (1.0,) * 24, "weekend": (1.0,) * 24},
}
# fmt: on


class UnknownShapeError(ValueError):
    """A scenario names a load shape that does not exist."""


def check_shape(name: str) -> str:
    if name not in SHAPES:
        raise UnknownShapeError(
            f"unknown load shape {name!r}; choose one of: {', '.join(sorted(SHAPES))}"
        )
    return name


def zone(name: str) -> tzinfo:
    """A time zone by IANA name; 'UTC' or '+01:00' style offsets work without tzdata."""
    if name.upper() == "UTC":
        return UTC
    if name[:1] in "+-" and ":" in name:
        sign = -1 if name[0] == "-" else 1
        hours, minutes = name[1:].split(":")
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' "
            "(needs the system tz database) or a fixed offset such as '+01:00'"
        ) from exc


def load_share(shape: str, ts_ms: int, tz: tzinfo) -> float:
    """Share (0..1) of the variable load in use at simulated time ts_ms (UTC ms)."""
    local = datetime.fromtimestamp(ts_ms / 1000.0, tz)
    table = SHAPES[shape]["weekend" if local.weekday() >= 5 else "weekday"]
    hour_f = local.hour + local.minute / 60.0 + local.second / 3600.0
    h0 = int(hour_f)
    frac = hour_f - h0
    # Interpolate towards the next hour of the same day type; at midnight the next day
    # may switch type, which only makes a short step at 00:00.
    return table[h0] + (table[(h0 + 1) % 24] - table[h0]) * frac

"""The store-and-forward buffer: commits, persistent batches and sequence numbers, acks,
bounds, live vs backlog, and survival of SIGKILL at random moments."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.store import Store, StoreError

T0 = 1_750_000_000_000  # 2025-06-15, a fixed "now" for the tests
CH_V = 1 << 8 | 1  # device 1, voltage_l1
CH_P = 1 << 8 | 14  # device 1, power_total


def poll(ts_ms: int, n: int = 20) -> list[tuple[int, int, float]]:
    """One poll result: n channels of device 1 at ts_ms."""
    return [(1 << 8 | (q + 1), ts_ms, 230.0 + q / 10) for q in range(n)]


def open_store(path: Path, **kw: object) -> Store:
    kw.setdefault("live_window_s", 60)
    return Store(path / "buffer.db", **kw)  # type: ignore[arg-type]


def test_append_commits_and_skips_what_is_not_a_reading(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    stored = s.append(
        [(CH_V, T0, 230.1), (CH_P, T0, None), (CH_P, T0, math.nan), (CH_P, T0, 2**64 - 1)],
        T0,
    )
    assert stored == 1
    assert s.depth == 1
    s.close()
    s = open_store(tmp_path)
    assert s.depth == 1
    batch = s.next_live_batch(100, T0)
    assert batch is not None and batch.readings == [(CH_V, T0, 230.1)]


def test_bad_channel_or_timestamp_raises_and_stores_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    with pytest.raises(ValueError, match="channel"):
        s.append([(CH_V, T0, 1.0), (-1, T0, 1.0)], T0)
    with pytest.raises(ValueError, match="ts_ms"):
        s.append([(CH_V, T0, 1.0), (CH_V, 1.5, 1.0)], T0)  # type: ignore[list-item]
    assert s.depth == 0


def test_ints_and_floats_come_back_as_they_went_in(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.append([(CH_P, T0, 12345678901), (CH_V, T0, 0.1)], T0)
    batch = s.next_live_batch(10, T0)
    assert batch is not None
    assert batch.readings == [(CH_P, T0, 12345678901), (CH_V, T0, 0.1)]
    assert type(batch.readings[0][2]) is int


def test_boot_counter_increments_once_per_start_and_survives(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    assert s.increment_boot() == 1
    s.close()
    s = open_store(tmp_path)
    assert s.boot == 1
    assert s.increment_boot() == 2
    s.close()
    assert open_store(tmp_path, readonly=True).status().boot == 2


def test_resent_batch_after_restart_has_same_seq_and_content(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.append(poll(T0), T0)
    s.append(poll(T0 + 10_000), T0 + 10_000)
    b1 = s.next_live_batch(30, T0 + 10_000)
    b2 = s.next_live_batch(30, T0 + 10_000)
    assert b1 is not None and b2 is not None
    assert (b1.seq, b2.seq) == (1, 2)
    assert len(b1.readings) == 30 and len(b2.readings) == 10
    s.close()

    s = open_store(tmp_path)
    again = s.unacked_batches()
    assert [(b.seq, b.historical, b.readings) for b in again] == [
        (1, False, b1.readings),
        (2, False, b2.readings),
    ]
    s.append(poll(T0 + 20_000, 1), T0 + 20_000)
    b3 = s.next_live_batch(30, T0 + 20_000)
    assert b3 is not None and b3.seq == 3  # the counter survived the restart
    assert s.next_live_batch(30, T0 + 20_000) is None  # nothing is batched twice


def test_ack_removes_exactly_that_batch(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    for i in range(3):
        s.append(poll(T0 + i * 10_000, 5), T0 + i * 10_000)
    batches = [s.next_live_batch(5, T0 + 30_000) for _ in range(3)]
    assert [b.seq for b in batches if b] == [1, 2, 3]
    assert s.ack(2, T0 + 31_000) == 5
    assert s.depth == 10
    assert s.unacked_seqs() == [1, 3]
    assert s.ack(2) == 0  # a second ack of the same batch changes nothing
    assert s.ack(99) == 0
    st = s.status()
    assert (st.last_ack_seq, st.last_ack_ms, st.acked_readings) == (2, T0 + 31_000, 5)
    assert [b.readings for b in s.unacked_batches()] == [batches[0].readings, batches[2].readings]  # type: ignore[union-attr]


def test_a_refused_batch_is_moved_aside_and_counted_as_dropped(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.append(poll(T0, 3), T0)
    b = s.next_live_batch(10, T0)
    assert b is not None
    assert s.ack(b.seq, T0, error="device 1 is not registered") == 3
    assert (s.depth, s.dropped_readings, s.status().acked_readings) == (0, 3, 0)
    assert s.refused_batches() == [(b.seq, T0, "device 1 is not registered", b.readings)]


def test_readings_that_waited_longer_than_the_live_window_leave_as_history(
    tmp_path: Path,
) -> None:
    s = open_store(tmp_path, live_window_s=60)
    for i in range(6):  # an hour of outage: one poll every 10 minutes
        s.append(poll(T0 + i * 600_000, 2), T0 + i * 600_000)
    now = T0 + 3_600_000
    s.append(poll(now, 2), now)  # taken just now
    live = s.next_live_batch(100, now)
    assert live is not None and not live.historical
    assert [r[1] for r in live.readings] == [now, now]
    hist = [s.next_historical_batch(4, now) for _ in range(3)]
    assert all(b is not None and b.historical for b in hist)
    ts = [r[1] for b in hist for r in b.readings]  # type: ignore[union-attr]
    assert ts == sorted(ts) and len(ts) == 12  # oldest first, all of them
    assert s.next_historical_batch(4, now) is None
    assert s.backlog() == 0


def test_live_data_is_not_starved_by_backlog_nor_backlog_by_live(tmp_path: Path) -> None:
    s = open_store(tmp_path, live_window_s=60)
    for i in range(100):
        s.append(poll(T0 + i * 1000), T0 + i * 1000)  # 2000 readings
    now = T0 + 1_000_000
    hist = s.next_historical_batch(500, now)
    assert hist is not None and hist.historical
    s.append(poll(now), now)
    live = s.next_live_batch(500, now)
    assert live is not None and [r[1] for r in live.readings] == [now] * 20
    hist2 = s.next_historical_batch(500, now)
    assert hist2 is not None and hist2.readings[0][1] > hist.readings[-1][1]
    assert s.backlog() == 1000


def test_backlog_steps_over_a_live_batch_that_was_in_flight(tmp_path: Path) -> None:
    s = open_store(tmp_path, live_window_s=60)
    s.append(poll(T0, 4), T0)
    in_flight = s.next_live_batch(100, T0)  # sent, never acknowledged (fleet down)
    assert in_flight is not None
    s.append(poll(T0 + 10_000, 4), T0 + 10_000)
    now = T0 + 600_000
    hist = s.next_historical_batch(100, now)
    assert hist is not None and [r[1] for r in hist.readings] == [T0 + 10_000] * 4
    assert s.next_historical_batch(100, now) is None
    assert s.unacked_seqs() == [in_flight.seq, hist.seq]  # the old live batch keeps its seq


def test_size_bound_drops_oldest_unsent_first_and_counts(tmp_path: Path) -> None:
    s = open_store(tmp_path, max_readings=100)
    for i in range(5):
        s.append(poll(T0 + i * 1000), T0 + i * 1000)  # 100 readings
    batch = s.next_live_batch(20, T0 + 5000)  # the oldest poll is in flight
    assert batch is not None
    s.append(poll(T0 + 5000, 30), T0 + 5000)
    assert s.depth == 100
    assert s.dropped_readings == 30
    assert s.unacked_seqs() == [batch.seq]  # the batch in flight is kept whole
    s.close()
    s = open_store(tmp_path, max_readings=100)
    assert s.status().dropped_readings == 30  # the count survives restarts
    rest = s.next_historical_batch(1000, T0 + 10_000_000)
    assert rest is not None
    # The whole second poll and the first 10 readings of the third were dropped: oldest first.
    assert rest.readings[0] == (1 << 8 | 11, T0 + 2000, 231.0)


def test_size_bound_drops_whole_batches_when_nothing_else_is_left(tmp_path: Path) -> None:
    s = open_store(tmp_path, max_readings=100)
    s.append(poll(T0), T0)
    s.append(poll(T0 + 1000), T0 + 1000)
    b = s.next_live_batch(40, T0 + 1000)
    assert b is not None
    s.close()
    s = open_store(tmp_path, max_readings=30)  # the bound was lowered below the batch
    s.append(poll(T0 + 2000, 5), T0 + 2000)
    assert s.depth == 0
    assert s.unacked_seqs() == []
    assert s.ack(b.seq) == 0
    assert s.dropped_readings == 45


def test_age_bound_drops_readings_older_than_max_age(tmp_path: Path) -> None:
    s = open_store(tmp_path, max_age_days=1)
    s.append(poll(T0, 3), T0)
    s.append(poll(T0 + 3_600_000, 3), T0 + 3_600_000)
    later = T0 + 86_400_000 + 1
    s.append(poll(later, 3), later)
    assert s.dropped_readings == 3
    assert s.depth == 6
    assert s.status().oldest_unsent_ts_ms == T0 + 3_600_000


def test_status_and_integrity(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.append(poll(T0), T0)
    st = s.status()
    assert (st.depth, st.oldest_unsent_ts_ms, st.last_ack_seq, st.dropped_readings) == (
        20,
        T0,
        None,
        0,
    )
    assert s.integrity_check() == []
    ro = open_store(tmp_path, readonly=True)
    assert ro.status().depth == 20
    with pytest.raises(StoreError, match="read-only"):
        ro.append(poll(T0), T0)


def test_a_file_that_is_not_a_database_gets_an_actionable_error(tmp_path: Path) -> None:
    (tmp_path / "buffer.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="move the file aside"):
        open_store(tmp_path)


_WRITER = textwrap.dedent(
    """
    import random, sys
    from edge.store import Store
    base = int(sys.argv[2])
    s = Store(sys.argv[1], max_readings=10**9, live_window_s=10**6)
    s.increment_boot()
    rnd = random.Random(base)
    i = 0
    while True:
        ts = base + i
        s.append([(256 + q, ts, float(q)) for q in range(1, 21)], base)
        print("a", ts, flush=True)
        i += 1
        if i % 7 == 0:
            b = s.next_live_batch(50, base)
            if b is not None:
                print("b", b.seq, len(b.readings), b.readings[0][1], b.readings[-1][1], flush=True)
                if rnd.random() < 0.5:
                    s.ack(b.seq)
                    print("k", b.seq, flush=True)
    """
)


def test_sigkill_at_random_moments_loses_no_committed_reading(tmp_path: Path) -> None:
    """20 writer processes killed at random moments while appending, batching and acking:
    every reading whose append() returned is still there unless its batch was acknowledged,
    every batch keeps its seq and content, and the file passes the integrity check."""
    db = tmp_path / "buffer.db"
    rnd = random.Random(4)
    appended: set[tuple[int, int]] = set()  # (ts, channel) of readings whose append returned
    batches: dict[int, tuple[int, tuple[int, int], tuple[int, int]]] = {}  # seq -> n, first, last
    acked: set[int] = set()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    kills = 20
    for run in range(kills):
        base = T0 + run * 10_000_000
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), str(base)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # started and committed at least once
        time.sleep(rnd.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        out = first + proc.stdout.read()
        proc.wait(timeout=10)
        proc.stdout.close()
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["a"] and len(parts) == 2:
                ts = int(parts[1])
                appended.update((ts, 256 + q) for q in range(1, 21))
            elif parts[:1] == ["b"] and len(parts) == 5:
                first_ts, last_ts = int(parts[3]), int(parts[4])
                batches[int(parts[1])] = (int(parts[2]), (first_ts, 0), (last_ts, 1 << 30))
            elif parts[:1] == ["k"] and len(parts) == 2:
                acked.add(int(parts[1]))

        s = Store(db, max_readings=10**9, live_window_s=10**6)
        assert s.integrity_check() == []
        assert s.boot == run + 1
        unacked = {b.seq: b for b in s.unacked_batches()}
        assert not acked & set(unacked)
        in_db = {(r[1], r[0]) for b in unacked.values() for r in b.readings}
        for seq, b in unacked.items():
            if seq in batches:
                n, lo, hi = batches[seq]
                keys = [(r[1], r[0]) for r in b.readings]
                assert len(keys) == n and lo <= keys[0] and keys[-1] <= hi
        rest = s.next_live_batch(10**6, T0)
        if rest is not None:
            in_db |= {(r[1], r[0]) for r in rest.readings}
            first_key = (rest.readings[0][1], rest.readings[0][0])
            last_key = (rest.readings[-1][1], rest.readings[-1][0])
            batches[rest.seq] = (len(rest.readings), first_key, last_key)
        gone = [(lo, hi) for seq, (_, lo, hi) in batches.items() if seq not in unacked]
        if rest is not None:
            gone = [
                (lo, hi)
                for seq, (_, lo, hi) in batches.items()
                if seq != rest.seq and seq not in unacked
            ]
        missing = [k for k in appended - in_db if not any(lo <= k <= hi for lo, hi in gone)]
        assert missing == [], f"committed readings missing after SIGKILL: {missing[:5]}"
        s.close()  # the extra batch stays unacknowledged: the next writer must cope with it
    assert len(appended) > kills * 100
    assert acked

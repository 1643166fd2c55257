"""The gateway's store-and-forward buffer: readings committed to SQLite (WAL) until the fleet
acknowledges the batch that carried them. It never refuses new readings and never talks to
the network; edge/uplink.py moves its batches.

Policy (docs/edge.md repeats it for operators):

* A reading counts as taken once ``append()`` returned: its transaction is committed.
  ``synchronous="FULL"`` (the default) also makes that commit survive a power cut;
  ``"NORMAL"`` survives a crash of the agent (kill -9) but may lose the last commits on power
  loss. Neither can corrupt the file.
* Readings leave the buffer only by ``ack(seq)`` of the batch that carried them, or by the
  bounds: over ``max_readings`` or older than ``max_age_days``, the oldest readings not yet in
  a batch are dropped first (whole batches only if nothing else is left), and every dropped
  reading is counted in ``dropped_readings``, which survives restarts.
* A batch is a contiguous run of readings (by append order) with a sequence number that is
  assigned once and stored, so a batch resent after a crash has the same seq and the same
  content. Live batches take the newest unsent readings; readings that waited longer than
  ``live_window_s`` (an outage, a fleet that stopped acknowledging) become backlog and leave,
  oldest first, in batches flagged historical.

All methods are synchronous and short (one transaction); call them from one thread.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocols.codec import MAX_CHANNEL, MAX_TS_MS

Reading = tuple[int, int, float]  # (channel, ts_ms, value); value may also be an int

SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
_AGE_CHECK_INTERVAL_MS = 60_000
REFUSED_KEPT = 100  # refused batches kept aside for a technician; older ones are deleted
_MAX_INT_VALUE = 2**62 - 1  # the codec's largest step count; SQLite itself stops at 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value NOT NULL
);
CREATE TABLE IF NOT EXISTS batch (
    seq INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    historical INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_first_id ON batch (first_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused (
    seq INTEGER PRIMARY KEY,
    refused_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    readings TEXT NOT NULL
);
"""

# Cursors over reading ids (ids only grow): every reading below hist_cursor that is older
# than split_id is in a batch; readings in [split_id, live_cursor) are in live batches;
# readings from live_cursor on are unsent live readings. Backlog = ids below split_id that
# are in no batch (live batches that were in flight when the split moved stay where they are).
_META_DEFAULTS = {
    "schema_version": SCHEMA_VERSION,
    "boot": 0,
    "next_seq": 1,
    "hist_cursor": 1,
    "split_id": 1,
    "live_cursor": 1,
    "dropped_readings": 0,
    "acked_readings": 0,
    "last_ack_seq": -1,
    "last_ack_ms": -1,
}

_NOT_IN_BATCH = "NOT EXISTS (SELECT 1 FROM batch b WHERE b.first_id <= r.id AND b.last_id >= r.id)"


class StoreError(Exception):
    """The buffer file cannot be used; the message says which file and what to do."""


@dataclass(frozen=True)
class PendingBatch:
    """A batch that was assigned a sequence number and awaits the fleet's acknowledgement.

    readings are in append order; resending the batch means encoding exactly these again."""

    seq: int
    historical: bool
    readings: list[Reading]
    created_ms: int


@dataclass(frozen=True)
class StoreStatus:
    """What `edge status` and the status message show about the buffer."""

    path: str
    depth: int  # readings in the buffer (unsent + in unacknowledged batches)
    backlog: int  # of those, readings waiting to leave as historical batches
    unacked_batches: int
    oldest_unsent_ts_ms: int | None  # ts_ms of the oldest reading still in the buffer
    last_ack_seq: int | None
    last_ack_ms: int | None  # wall-clock time the last acknowledgement was processed
    next_seq: int
    boot: int
    dropped_readings: int
    acked_readings: int
    file_bytes: int


def now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    """The buffer in one SQLite file. Open it once per process (``readonly=True`` for a
    second process that only looks, such as `edge status` next to a running agent).

    max_readings: bound on buffered readings; max_age_days: readings older than this are
    dropped (unless already in a batch in flight); live_window_s: unsent readings older than
    this leave as historical backlog instead of live data; synchronous: "FULL" or "NORMAL"
    (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_readings: int = 5_000_000,
        max_age_days: float = 90.0,
        live_window_s: float = 120.0,
        synchronous: str = "FULL",
        readonly: bool = False,
    ) -> None:
        if max_readings < 1:
            raise ValueError(f"max_readings {max_readings}: must be at least 1")
        if max_age_days <= 0:
            raise ValueError(f"max_age_days {max_age_days}: must be positive")
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous {synchronous!r}: must be one of {SYNCHRONOUS_MODES}")
        self.path = str(path)
        self.max_readings = max_readings
        self.max_age_ms = int(max_age_days * 86_400_000)
        self.live_window_ms = int(live_window_s * 1000)
        self.readonly = readonly
        self._next_age_check_ms = 0
        try:
            if readonly:
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(
                        f"{self.path}: SQLite refused WAL mode ({mode}); put the buffer on a "
                        "local file system (not NFS or a FAT-formatted stick)"
                    )
                self._db.execute(f"PRAGMA synchronous = {synchronous}")
                self._db.executescript(_SCHEMA)
            self._meta = self._load_meta()
            if self._meta["schema_version"] != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: buffer schema {self._meta['schema_version']}, this agent "
                    f"knows {SCHEMA_VERSION}; upgrade the agent or move the file aside"
                )
            self._count = self._db.execute("SELECT count(*) FROM reading").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path}: cannot open the reading buffer ({e}); if the file is damaged, "
                "stop the agent, move the file aside and start again (a new buffer is created)"
            ) from e

    # -- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def increment_boot(self) -> int:
        """Count one more start of the agent and return the new boot counter (call once per
        process start; it goes into the birth and last-will messages)."""
        with self._tx():
            self._set("boot", self._meta["boot"] + 1)
        return self._meta["boot"]

    @property
    def boot(self) -> int:
        return self._meta["boot"]

    @property
    def depth(self) -> int:
        """Readings in the buffer: unsent or in a batch not yet acknowledged."""
        return self._count

    @property
    def dropped_readings(self) -> int:
        return self._meta["dropped_readings"]

    # -- writing ------------------------------------------------------------------------

    def append(
        self, readings: Iterable[tuple[int, int, float | None]], now_ms_: int | None = None
    ) -> int:
        """Commit readings [(channel, ts_ms, value), ...] in one transaction (one poll result);
        return how many were stored. Readings whose value is None or not a finite number are
        not readings and are skipped; a bad channel or ts_ms raises ValueError (a bug in the
        caller) and stores nothing. Bounds are enforced in the same transaction."""
        rows = []
        for channel, ts_ms, value in readings:
            if value is None or isinstance(value, bool):
                continue
            if isinstance(value, float):
                if not math.isfinite(value):
                    continue
            elif not isinstance(value, int):
                raise ValueError(f"reading {channel}/{ts_ms}: value {value!r} is not a number")
            elif not -_MAX_INT_VALUE <= value <= _MAX_INT_VALUE:
                continue  # a "not available" marker such as 0xFFFFFFFFFFFFFFFF, not a reading
            if type(channel) is not int or not 0 <= channel <= MAX_CHANNEL:
                raise ValueError(f"channel {channel!r}: must be an integer 0..{MAX_CHANNEL}")
            if type(ts_ms) is not int or not 0 <= ts_ms <= MAX_TS_MS:
                raise ValueError(f"ts_ms {ts_ms!r}: must be UTC milliseconds since 1970")
            rows.append((channel, ts_ms, value))
        if not rows:
            return 0
        t = now_ms() if now_ms_ is None else now_ms_
        with self._tx():
            self._db.executemany(
                "INSERT INTO reading (channel, ts_ms, value) VALUES (?, ?, ?)", rows
            )
            self._count += len(rows)
            if self._count > self.max_readings:
                self._drop_oldest(self._count - self.max_readings)
            if t >= self._next_age_check_ms:
                self._drop_older_than(t - self.max_age_ms)
                self._next_age_check_ms = t + _AGE_CHECK_INTERVAL_MS
        return len(rows)

    def next_live_batch(self, max_readings: int, now_ms_: int | None = None) -> PendingBatch | None:
        """The next batch of unsent live readings (newest data, not historical), committed with
        its new seq; None if there are none. First moves unsent readings older than the live
        window to the backlog."""
        t = now_ms() if now_ms_ is None else now_ms_
        with self._tx():
            self._age_live(t - self.live_window_ms)
            rows = self._db.execute(
                "SELECT id, channel, ts_ms, value FROM reading WHERE id >= ? ORDER BY id LIMIT ?",
                (self._meta["live_cursor"], max_readings),
            ).fetchall()
            if not rows:
                return None
            self._set("live_cursor", rows[-1][0] + 1)
            return self._new_batch(rows, False, t)

    def next_historical_batch(
        self, max_readings: int, now_ms_: int | None = None
    ) -> PendingBatch | None:
        """The next batch of backlog readings, oldest first, flagged historical, committed with
        its new seq; None if the backlog is empty."""
        t = now_ms() if now_ms_ is None else now_ms_
        with self._tx():
            self._age_live(t - self.live_window_ms)
            h = self._meta["hist_cursor"]
            split = self._meta["split_id"]
            while h < split:
                nb = self._db.execute(
                    "SELECT first_id, last_id FROM batch WHERE first_id >= ? "
                    "ORDER BY first_id LIMIT 1",
                    (h,),
                ).fetchone()
                end = split if nb is None else min(split, nb[0])
                rows = self._db.execute(
                    "SELECT id, channel, ts_ms, value FROM reading WHERE id >= ? AND id < ? "
                    "ORDER BY id LIMIT ?",
                    (h, end, max_readings),
                ).fetchall()
                if rows:
                    self._set("hist_cursor", rows[-1][0] + 1)
                    return self._new_batch(rows, True, t)
                # Nothing unsent before the next batch (a live batch still in flight when its
                # readings became backlog): step over it.
                h = split if nb is None or nb[0] >= split else max(h, nb[1] + 1)
            if h != self._meta["hist_cursor"]:
                self._set("hist_cursor", h)
            return None

    def next_batch(self, max_readings: int, now_ms_: int | None = None) -> PendingBatch | None:
        """Live readings first, else backlog: the simplest schedule (the uplink rate-limits
        the backlog itself with the two methods above)."""
        live = self.next_live_batch(max_readings, now_ms_)
        return live if live is not None else self.next_historical_batch(max_readings, now_ms_)

    def ack(self, seq: int, now_ms_: int | None = None, error: str | None = None) -> int:
        """The fleet stored batch seq: delete its readings in one transaction and return how
        many; 0 if seq is unknown (already acknowledged, or dropped by the bounds).

        error: the fleet refused the batch for good (it will never store it): its readings
        are moved aside to the ``refused`` table (the last REFUSED_KEPT batches, as JSON,
        with the reason) and counted in dropped_readings."""
        t = now_ms() if now_ms_ is None else now_ms_
        with self._tx():
            row = self._db.execute(
                "SELECT first_id, last_id FROM batch WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None:
                return 0
            if error is not None:
                rows = self._db.execute(
                    "SELECT channel, ts_ms, value FROM reading WHERE id BETWEEN ? AND ? "
                    "ORDER BY id",
                    (row[0], row[1]),
                ).fetchall()
                self._db.execute(
                    "INSERT OR REPLACE INTO refused (seq, refused_ms, reason, readings) "
                    "VALUES (?, ?, ?, ?)",
                    (seq, t, error, json.dumps(rows)),
                )
                self._db.execute(
                    "DELETE FROM refused WHERE seq NOT IN "
                    "(SELECT seq FROM refused ORDER BY seq DESC LIMIT ?)",
                    (REFUSED_KEPT,),
                )
            n = self._db.execute(
                "DELETE FROM reading WHERE id BETWEEN ? AND ?", (row[0], row[1])
            ).rowcount
            self._db.execute("DELETE FROM batch WHERE seq = ?", (seq,))
            self._count -= n
            if error is None:
                self._set("acked_readings", self._meta["acked_readings"] + n)
            else:
                self._set("dropped_readings", self._meta["dropped_readings"] + n)
            self._set("last_ack_seq", seq)
            self._set("last_ack_ms", t)
            return n

    def refused_batches(self) -> list[tuple[int, int, str, list[Reading]]]:
        """The batches the fleet refused for good, newest first: (seq, refused_ms, reason,
        readings), for a technician to look at."""
        rows = self._db.execute(
            "SELECT seq, refused_ms, reason, readings FROM refused ORDER BY seq DESC"
        ).fetchall()
        return [(r[0], r[1], r[2], [tuple(x) for x in json.loads(r[3])]) for r in rows]

    # -- reading ------------------------------------------------------------------------

    def unacked_batches(self) -> list[PendingBatch]:
        """Every batch sent (or about to be) and not yet acknowledged, in seq order, with the
        content it was first given: resend these after a reconnect or a restart."""
        batches = self._db.execute(
            "SELECT seq, first_id, last_id, historical, created_ms FROM batch ORDER BY seq"
        ).fetchall()
        out = []
        for seq, first_id, last_id, historical, created_ms in batches:
            rows = self._db.execute(
                "SELECT channel, ts_ms, value FROM reading WHERE id BETWEEN ? AND ? ORDER BY id",
                (first_id, last_id),
            ).fetchall()
            out.append(PendingBatch(seq, bool(historical), rows, created_ms))
        return out

    def unacked_seqs(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT seq FROM batch ORDER BY seq")]

    def backlog(self) -> int:
        """Readings waiting to leave as historical batches (counted, so not for hot paths)."""
        return self._db.execute(
            f"SELECT count(*) FROM reading r WHERE id >= ? AND id < ? AND {_NOT_IN_BATCH}",
            (self._meta["hist_cursor"], self._meta["split_id"]),
        ).fetchone()[0]

    def status(self) -> StoreStatus:
        if self.readonly:
            self._meta = self._load_meta()
            self._count = self._db.execute("SELECT count(*) FROM reading").fetchone()[0]
        oldest = self._db.execute("SELECT ts_ms FROM reading ORDER BY id LIMIT 1").fetchone()
        unacked = self._db.execute("SELECT count(*) FROM batch").fetchone()[0]
        page_count = self._db.execute("PRAGMA page_count").fetchone()[0]
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        m = self._meta
        return StoreStatus(
            path=self.path,
            depth=self._count,
            backlog=self.backlog(),
            unacked_batches=unacked,
            oldest_unsent_ts_ms=None if oldest is None else oldest[0],
            last_ack_seq=None if m["last_ack_seq"] < 0 else m["last_ack_seq"],
            last_ack_ms=None if m["last_ack_ms"] < 0 else m["last_ack_ms"],
            next_seq=m["next_seq"],
            boot=m["boot"],
            dropped_readings=m["dropped_readings"],
            acked_readings=m["acked_readings"],
            file_bytes=page_count * page_size,
        )

    def integrity_check(self) -> list[str]:
        """SQLite's full integrity check: [] if the file is sound, else the problems found."""
        rows = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (it also happens on its own every ~1000 pages)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- internals ----------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only, cannot change the buffer")
        return _Transaction(self)

    def _load_meta(self) -> dict[str, int]:
        meta = dict(_META_DEFAULTS)
        try:
            meta.update(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if not self.readonly:
                raise
            raise StoreError(f"{self.path}: not a reading buffer ({e})") from e
        return meta

    def _set(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        self._meta[key] = value

    def _new_batch(
        self, rows: Sequence[tuple[int, int, int, float]], historical: bool, t: int
    ) -> PendingBatch:
        seq = self._meta["next_seq"]
        self._db.execute(
            "INSERT INTO batch (seq, first_id, last_id, historical, readings, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (seq, rows[0][0], rows[-1][0], int(historical), len(rows), t),
        )
        self._set("next_seq", seq + 1)
        return PendingBatch(seq, historical, [(r[1], r[2], r[3]) for r in rows], t)

    def _age_live(self, cutoff_ms: int) -> None:
        """Move unsent live readings taken before cutoff_ms into the backlog."""
        v = self._meta["live_cursor"]
        first = self._db.execute(
            "SELECT ts_ms FROM reading WHERE id >= ? ORDER BY id LIMIT 1", (v,)
        ).fetchone()
        if first is None or first[0] >= cutoff_ms:
            return
        row = self._db.execute(
            "SELECT id FROM reading WHERE id >= ? AND ts_ms >= ? ORDER BY id LIMIT 1",
            (v, cutoff_ms),
        ).fetchone()
        if row is None:
            row = self._db.execute("SELECT max(id) + 1 FROM reading").fetchone()
        if self._meta["hist_cursor"] >= self._meta["split_id"]:
            # No backlog left before the old split, and everything from there to the live
            # cursor is in live batches: the backlog starts with the first reading that moves.
            self._set("hist_cursor", v)
        self._set("split_id", row[0])
        self._set("live_cursor", row[0])

    def _drop(self, sql: str, params: Sequence[int]) -> int:
        n = self._db.execute(sql, params).rowcount
        if n > 0:
            self._count -= n
            self._set("dropped_readings", self._meta["dropped_readings"] + n)
        return n

    def _drop_oldest(self, excess: int) -> None:
        n = self._drop(
            "DELETE FROM reading WHERE id IN (SELECT id FROM reading r "
            f"WHERE id >= ? AND {_NOT_IN_BATCH} ORDER BY id LIMIT ?)",
            (self._meta["hist_cursor"], excess),
        )
        excess -= n
        while excess > 0:
            # Every reading left is in a batch: drop whole batches, oldest first, so that a
            # batch is resent complete or not at all.
            row = self._db.execute(
                "SELECT seq, first_id, last_id FROM batch ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return
            excess -= self._drop("DELETE FROM reading WHERE id BETWEEN ? AND ?", row[1:])
            self._db.execute("DELETE FROM batch WHERE seq = ?", (row[0],))

    def _drop_older_than(self, cutoff_ms: int) -> None:
        h = self._meta["hist_cursor"]
        oldest = self._db.execute(
            "SELECT min(ts_ms) FROM (SELECT ts_ms FROM reading WHERE id >= ? ORDER BY id LIMIT 1000)",
            (h,),
        ).fetchone()[0]
        if oldest is None or oldest >= cutoff_ms:
            return
        self._drop(
            f"DELETE FROM reading WHERE id IN (SELECT id FROM reading r WHERE id >= ? "
            f"AND ts_ms < ? AND {_NOT_IN_BATCH})",
            (h, cutoff_ms),
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK (and reload the cached counters) on error."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        s = self._store
        if exc_type is None:
            s._db.execute("COMMIT")
            return
        s._db.execute("ROLLBACK")
        s._meta = s._load_meta()
        s._count = s._db.execute("SELECT count(*) FROM reading").fetchone()[0]

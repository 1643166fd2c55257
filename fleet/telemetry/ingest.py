"""Ingest of uplink telemetry batches (contract 1): decode, validate, store idempotently on
(gateway, seq) in one transaction, and only then hand back the ack to publish. Never publishes
anything itself and never acks before the commit; the MQTT bridge (fleet/mqtt) does the I/O.

Outcomes: "accepted" (stored now; ack), "duplicate" (the same content was stored before; ack
again, nothing changes), "rejected" (malformed, unknown gateway or channel, impossible
timestamps, a different content under a stored seq: recorded in rejected_batches and acked
with the error so the gateway sets it aside; nothing stored is touched). A gateway that waits
for approval gets no ack at all (it resends once accepted). A database failure raises: no ack,
the gateway resends."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, bindparam, case, or_, select, tuple_, update
from sqlalchemy.exc import DBAPIError

from fleet import alerts
from fleet.db import upsert
from fleet.db.engine import transaction
from fleet.db.tables import batches, channels, gateways, latest, rejected_batches
from fleet.telemetry.storage import stage
from protocols import codec, messages
from protocols import quantities as q

log = logging.getLogger(__name__)

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: a clock before this was never set
FUTURE_TOLERANCE_MS = 300_000  # 5 minutes ahead of the fleet's clock
_RETRIES = 5
_RETRY_SQLSTATES = {"40P01", "40001"}  # PostgreSQL deadlock, serialization failure
_CHUNK = 400

# Quantities that only grow (energy and volume counters): a lower reading than the one before
# it in time opens a counter_backwards alert (meter replaced or reset, wrong register).
COUNTER_CODES = frozenset(
    code
    for name, (code, _unit, _res) in q.QUANTITIES.items()
    if "energy" in name or name in ("pulse_count", "gas_volume", "water_volume")
)

# Statements built once (their construction, not only their compilation, costs per call).
_g = gateways.c
_ADVANCE_SEQ = (
    update(gateways)
    .where(_g.id == bindparam("b_gw"))
    .values(
        next_expected_seq=case(
            (_g.next_expected_seq < bindparam("b_top"), bindparam("b_top")),
            else_=_g.next_expected_seq,
        ),
        # a batch is contact: the offline alert counts missed batch intervals
        last_seen_ts_ms=case(
            (
                or_(_g.last_seen_ts_ms.is_(None), _g.last_seen_ts_ms < bindparam("b_now")),
                bindparam("b_now"),
            ),
            else_=_g.last_seen_ts_ms,
        ),
    )
)
_LATEST_OF = select(latest.c.gateway_id, latest.c.channel, latest.c.ts_ms, latest.c.value).where(
    tuple_(latest.c.gateway_id, latest.c.channel).in_(bindparam("keys", expanding=True))
)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


class IngestResult(NamedTuple):
    """What became of one batch. ack: the bytes to publish on gw/<id>/ack (after the commit,
    which has happened when this is returned), or None when nothing must be sent."""

    outcome: str
    ack: bytes | None
    reason: str | None = None
    seq: int | None = None
    readings: int = 0
    kind: str | None = None  # of a rejection: malformed, gateway, unknown_channel, future, ...


class _Item:
    """One batch on its way through ingest_many."""

    __slots__ = ("gateway_id", "payload", "batch", "seq", "result", "digest", "latest", "counters")

    def __init__(self, gateway_id: str, payload: bytes) -> None:
        self.gateway_id = gateway_id
        self.payload = payload
        self.batch: codec.Batch | None = None
        self.seq: int | None = None
        self.result: IngestResult | None = None
        self.digest = b""
        self.latest: dict[int, tuple[int, float]] = {}
        # counter channel -> its oldest reading in this batch (the newest is in latest)
        self.counters: dict[int, tuple[int, float]] = {}


def peek_seq(payload: bytes) -> int | None:
    """The seq of a batch whose body does not decode, if its header does (to ack the error)."""
    if len(payload) < 3 or payload[0] != codec.FORMAT:
        return None
    u = 0
    shift = 0
    for b in payload[2:12]:
        u |= (b & 0x7F) << shift
        if b < 0x80:
            return u if u <= codec.MAX_SEQ else None
        shift += 7
    return None


def content_digest(batch: codec.Batch) -> bytes:
    """16 bytes identifying a batch's readings (not its encoding): equal for a resend."""
    h = hashlib.sha256(repr(batch.steps).encode())
    h.update(repr(sorted(batch.resolutions.items())).encode())
    return h.digest()[:16]


def _newer_or_same(table: Any, excluded: Any) -> Any:
    """The latest value moves only forward in time (contract 2); one function, so the upsert's
    statement is built once (fleet/db/upsert.py caches it per where-function)."""
    return excluded.ts_ms >= table.c.ts_ms


class Ingestor:
    """Ingest for one fleet instance; thread-safe. Caches each gateway's channel list, keyed by
    gateways.channels_rev, so a configuration change is seen on the next batch."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_readings: int = codec.MAX_READINGS,
        future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.engine = engine
        self.max_readings = max_readings
        self.future_tolerance_ms = future_tolerance_ms
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._channels: dict[str, tuple[int, frozenset[int]]] = {}
        self._lock = threading.Lock()
        self.counts = {ACCEPTED: 0, DUPLICATE: 0, REJECTED: 0, "readings": 0}

    def ingest(self, gateway_id: str, payload: bytes) -> IngestResult:
        return self.ingest_many([(gateway_id, payload)])[0]

    def ingest_many(self, items: Sequence[tuple[str, bytes]]) -> list[IngestResult]:
        """Ingest several batches in one transaction (group commit: the MQTT bridge collects
        what arrived within a few milliseconds). Results in the order of items."""
        work = [_Item(gw, bytes(p)) for gw, p in items]
        now = self.clock_ms()
        for it in work:
            self._decode_and_check(it, now)
        for i in range(0, len(work), _CHUNK):
            self._store(work[i : i + _CHUNK], now)
        out: list[IngestResult] = []
        with self._lock:
            for it in work:
                assert it.result is not None
                self.counts[it.result.outcome] += 1
                if it.result.outcome == ACCEPTED:
                    self.counts["readings"] += it.result.readings
                out.append(it.result)
        return out

    # --- steps ---------------------------------------------------------------------------

    def _reject(self, it: _Item, kind: str, reason: str, ack: bool = True) -> None:
        seq = it.seq
        body = None if seq is None or not ack else messages.encode_ack(seq, reason)
        it.result = IngestResult(REJECTED, body, reason, seq, 0, kind)

    def _decode_and_check(self, it: _Item, now: int) -> None:
        try:
            batch = codec.decode_batch(it.payload, self.max_readings)
        except codec.CodecError as exc:
            it.seq = peek_seq(it.payload)
            self._reject(it, "malformed", f"batch does not decode: {exc}")
            return
        it.batch = batch
        it.seq = batch.seq
        if not batch.steps:
            return
        newest = max(t for _, t, _ in batch.steps)
        oldest = min(t for _, t, _ in batch.steps)
        if newest > now + self.future_tolerance_ms:
            self._reject(
                it,
                "future",
                f"reading timestamp {newest} ms is {(newest - now) // 1000} s ahead of the fleet's "
                "clock: set the gateway's clock (NTP) and check its time zone handling (UTC ms)",
            )
        elif oldest < MIN_TS_MS:
            self._reject(
                it,
                "past",
                f"reading timestamp {oldest} ms is before 2000-01-01: the gateway's clock was not "
                "set when it read; set its clock (NTP/RTC)",
            )
        else:
            it.digest = content_digest(batch)
            newest_per_channel: dict[int, tuple[int, float]] = {}
            oldest_per_channel: dict[int, tuple[int, float]] = {}
            # readings come by device, then timestamp: a channel's first one is its oldest
            for channel, t, v in batch.readings:
                got = newest_per_channel.get(channel)
                if got is None:
                    newest_per_channel[channel] = oldest_per_channel[channel] = (t, float(v))
                elif t >= got[0]:
                    newest_per_channel[channel] = (t, float(v))
            it.latest = newest_per_channel
            it.counters = {
                ch: first for ch, first in oldest_per_channel.items() if ch & 0xFF in COUNTER_CODES
            }

    def _store(self, work: list[_Item], now: int) -> None:
        for attempt in range(_RETRIES):
            for it in work:  # results of an attempt that rolled back do not count
                if it.result is not None and it.result.kind not in ("malformed", "future", "past"):
                    it.result = None
            try:
                with transaction(self.engine) as conn:
                    self._store_in(conn, work, now)
                return
            except DBAPIError as exc:
                state = getattr(exc.orig, "sqlstate", None)
                if state not in _RETRY_SQLSTATES or attempt == _RETRIES - 1:
                    raise
                log.info("ingest transaction retried after %s", state)
                time.sleep(0.005 * (attempt + 1))

    def _store_in(self, conn: Connection, work: list[_Item], now: int) -> None:
        gw_ids = sorted({it.gateway_id for it in work})
        g = gateways.c
        gw_rows = {
            r.id: r
            for r in conn.execute(select(g.id, g.status, g.channels_rev).where(g.id.in_(gw_ids)))
        }
        pending: list[_Item] = []
        for it in work:
            if it.result is not None:
                continue
            row = gw_rows.get(it.gateway_id)
            if row is None or row.status in ("revoked", "rejected"):
                why = "unknown to this fleet" if row is None else f"{row.status}"
                self._reject(
                    it,
                    "gateway",
                    f"gateway {it.gateway_id!r} is {why}: provision it again with a claim token",
                )
                continue
            if row.status == "pending":
                self._reject(
                    it,
                    "pending",
                    f"gateway {it.gateway_id!r} awaits an operator's approval; resend later",
                    ack=False,
                )
                continue
            known = self._known_channels(conn, it.gateway_id, int(row.channels_rev))
            assert it.batch is not None
            unknown = sorted({c for c, _, _ in it.batch.steps} - known)
            if unknown:
                names = ", ".join(codec.channel_name(c) for c in unknown[:8])
                more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
                self._reject(
                    it,
                    "unknown_channel",
                    f"channels not in the gateway's configuration: {names}{more}: the gateway "
                    "runs another configuration than the fleet holds; check config/reported",
                )
                continue
            pending.append(it)
        self._insert_batches(conn, pending, now)
        self._record_rejections(conn, work, now)

    def _known_channels(self, conn: Connection, gateway_id: str, rev: int) -> frozenset[int]:
        cached = self._channels.get(gateway_id)
        if cached is not None and cached[0] == rev:
            return cached[1]
        rows = conn.execute(
            select(channels.c.channel).where(
                channels.c.gateway_id == gateway_id, channels.c.active.is_(True)
            )
        )
        known = frozenset(int(r[0]) for r in rows)
        self._channels[gateway_id] = (rev, known)
        return known

    def _insert_batches(self, conn: Connection, pending: list[_Item], now: int) -> None:
        if not pending:
            return
        b = batches.c
        # Duplicates: stored earlier, or twice in this group.
        keys = list({(it.gateway_id, it.seq) for it in pending})
        stored: dict[tuple[str, int], bytes] = {}
        rows = conn.execute(
            select(b.gateway_id, b.seq, b.digest).where(tuple_(b.gateway_id, b.seq).in_(keys))
        )
        for gw, seq, digest in rows:
            stored[(gw, int(seq))] = bytes(digest)
        fresh: list[_Item] = []
        for it in pending:
            key = (it.gateway_id, int(it.seq or 0))
            if key in stored:
                self._duplicate(it, stored[key])
            else:
                stored[key] = it.digest
                fresh.append(it)
        if not fresh:
            return
        values = [
            {
                "gateway_id": it.gateway_id,
                "seq": it.seq,
                "received_ts_ms": now,
                "readings": len(it.batch.steps),  # type: ignore[union-attr]
                "historical": bool(it.batch.historical),  # type: ignore[union-attr]
                "digest": it.digest,
            }
            for it in fresh
        ]
        inserted = {
            (gw, int(seq))
            for gw, seq in conn.execute(
                upsert.insert_ignore(conn, batches, ("gateway_id", "seq"))
                .values(values)
                .returning(b.gateway_id, b.seq)
            )
        }
        stored_now: list[_Item] = []
        raced: list[_Item] = []
        for it in fresh:
            (stored_now if (it.gateway_id, it.seq) in inserted else raced).append(it)
        if raced:  # another fleet instance committed the same (gateway, seq) meanwhile
            keys = [(it.gateway_id, it.seq) for it in raced]
            digests = {
                (gw, int(seq)): bytes(d)
                for gw, seq, d in conn.execute(
                    select(b.gateway_id, b.seq, b.digest).where(
                        tuple_(b.gateway_id, b.seq).in_(keys)
                    )
                )
            }
            for it in raced:
                self._duplicate(it, digests[(it.gateway_id, int(it.seq or 0))])
        if not stored_now:
            return
        stage(
            conn,
            [
                {
                    "gateway_id": it.gateway_id,
                    "seq": it.seq,
                    "min_ts_ms": min((t for _, t, _ in it.batch.steps), default=0),  # type: ignore[union-attr]
                    "max_ts_ms": max((t for _, t, _ in it.batch.steps), default=0),  # type: ignore[union-attr]
                    "payload": it.payload,
                }
                for it in stored_now
                if it.batch is not None and it.batch.steps
            ],
        )
        self._check_counters(conn, stored_now, now)
        self._update_latest(conn, stored_now, now)
        self._advance_seq(conn, stored_now, now)
        for it in stored_now:
            n = len(it.batch.steps)  # type: ignore[union-attr]
            it.result = IngestResult(ACCEPTED, messages.encode_ack(it.seq), None, it.seq, n)

    def _duplicate(self, it: _Item, stored_digest: bytes) -> None:
        if stored_digest == it.digest:
            it.result = IngestResult(DUPLICATE, messages.encode_ack(it.seq), None, it.seq, 0)
        else:
            self._reject(
                it,
                "seq_conflict",
                f"seq {it.seq} was stored before with other readings; the stored batch is kept. "
                "The gateway reused a sequence number (storage wiped?): re-provision it so it "
                "continues after the fleet's next_expected_seq",
            )

    def _check_counters(self, conn: Connection, stored_now: list[_Item], now: int) -> None:
        """Open a counter_backwards alert where a counter's reading is lower than the one
        before it in time: the stored latest value (read before this group updates it) or an
        earlier batch of this group, or, within one batch, its newest reading below its oldest
        (a dip that recovers within one batch is not seen). Costs one SELECT per group of
        batches with counters; readings older than the latest (backfill) are not compared."""
        spans: dict[tuple[str, int], list[tuple[tuple[int, float], tuple[int, float]]]] = {}
        for it in stored_now:
            for ch, first in it.counters.items():
                spans.setdefault((it.gateway_id, ch), []).append((first, it.latest[ch]))
        if not spans:
            return
        before: dict[tuple[str, int], tuple[int, float]] = {}
        keys = sorted(spans)
        for i in range(0, len(keys), _CHUNK):
            for gw, ch, t, v in conn.execute(_LATEST_OF, {"keys": keys[i : i + _CHUNK]}):
                before[(gw, int(ch))] = (int(t), float(v))
        for (gw, ch), pairs in sorted(spans.items()):  # one lock order for all instances
            prev = before.get((gw, ch))
            for first, newest in sorted(pairs):
                if prev is not None and first[0] > prev[0] and first[1] < prev[1]:
                    alerts.counter_went_backwards(conn, gw, ch, prev[1], first[1], first[0], now)
                elif newest[1] < first[1]:
                    alerts.counter_went_backwards(conn, gw, ch, first[1], newest[1], newest[0], now)
                if prev is None or newest[0] > prev[0]:
                    prev = newest

    def _update_latest(self, conn: Connection, stored_now: list[_Item], now: int) -> None:
        newest: dict[tuple[str, int], tuple[int, float]] = {}
        for it in stored_now:
            for channel, (t, v) in it.latest.items():
                key = (it.gateway_id, channel)
                got = newest.get(key)
                if got is None or t >= got[0]:
                    newest[key] = (t, v)
        rows = [
            {"gateway_id": gw, "channel": ch, "ts_ms": t, "value": v, "received_ts_ms": now}
            for (gw, ch), (t, v) in sorted(newest.items())  # one lock order for all instances
        ]
        upsert.insert_or_update(
            conn,
            latest,
            rows,
            ("gateway_id", "channel"),
            ("ts_ms", "value", "received_ts_ms"),
            where=_newer_or_same,
        )

    def _advance_seq(self, conn: Connection, stored_now: list[_Item], now: int) -> None:
        """next_expected_seq, and last_seen (a batch is contact) in the same UPDATE."""
        top: dict[str, int] = {}
        for it in stored_now:
            top[it.gateway_id] = max(top.get(it.gateway_id, 0), int(it.seq or 0) + 1)
        conn.execute(  # one statement for every gateway of the group, in one lock order
            _ADVANCE_SEQ, [{"b_gw": gw, "b_top": top[gw], "b_now": now} for gw in sorted(top)]
        )

    def _record_rejections(self, conn: Connection, work: list[_Item], now: int) -> None:
        rows: list[dict[str, Any]] = []
        per_gateway: dict[str, int] = {}
        for it in work:
            r = it.result
            if r is None or r.outcome != REJECTED or r.kind == "pending":
                continue  # a pending gateway's batches are not faulty, only early
            rows.append(
                {
                    "gateway_id": it.gateway_id[:64],
                    "seq": it.seq,
                    "reason": r.reason or "",
                    "kind": r.kind or "",
                    "ts_ms": now,
                    "size_bytes": len(it.payload),
                }
            )
            per_gateway[it.gateway_id] = per_gateway.get(it.gateway_id, 0) + 1
        if not rows:
            return
        conn.execute(rejected_batches.insert(), rows)
        g = gateways.c
        for gw in sorted(per_gateway):
            conn.execute(
                update(gateways)
                .where(g.id == gw)
                .values(rejected_batches=g.rejected_batches + per_gateway[gw])
            )


def ingest(engine: Engine, gateway_id: str, payload: bytes, **options: Any) -> IngestResult:
    """One batch with a throwaway Ingestor (no channel cache); the bridge keeps an Ingestor."""
    return Ingestor(engine, **options).ingest(gateway_id, payload)

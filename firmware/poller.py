"""Polls the Modbus meters of one RS-485 bus at wall-clock-aligned ticks: plans with
protocols.planner, reads through firmware.rs485, decodes with protocols.values and hands
each meter's readings to the buffer in one append. Never talks MQTT, never touches files."""

import asyncio
import gc

from firmware.rs485 import NoAnswerError, RtuMaster
from protocols import modbus, values
from protocols.modbus import CrcError, ModbusError, ModbusExceptionResponse

MAX_BACKOFF_S = 300  # a silent meter is still tried at least every 5 min
_MAX_DUE_SETS = 16  # more sets of intervals due together: plan at each tick, keep no plans


class MeterStats:
    """One meter as the poller keeps it once planned: its unit and interval, and its counters
    for the status message (same fields as edge). The Meter it was made from is not kept."""

    def __init__(self, device_id, name, unit=None, interval_s=10):
        self.device_id = device_id
        self.name = name
        self.unit = unit
        self.interval_s = interval_s
        self.polls_ok = 0
        self.polls_failed = 0
        self.timeouts = 0
        self.crc_errors = 0
        self.exceptions = 0
        self.frame_errors = 0
        self.missing_values = 0
        self.skipped_backoff = 0
        self.consecutive_failures = 0
        self.backoff_until_s = 0
        self.last_ok_ts_ms = None
        self.last_error = None

    def count(self, exc):
        if isinstance(exc, NoAnswerError):
            self.timeouts += 1
        elif isinstance(exc, CrcError):
            self.crc_errors += 1
        elif isinstance(exc, ModbusExceptionResponse):
            self.exceptions += 1
        else:
            self.frame_errors += 1
        self.last_error = str(exc)

    def as_status(self):
        """The meter's entry in the status message ("meters")."""
        return {
            "id": self.device_id,
            "name": self.name,
            "polls_ok": self.polls_ok,
            "polls_failed": self.polls_failed,
            "timeouts": self.timeouts,
            "crc_errors": self.crc_errors,
            "exceptions": self.exceptions,
            "frame_errors": self.frame_errors,
            "missing_values": self.missing_values,
            "last_ok_ts_ms": self.last_ok_ts_ms,
            "last_error": self.last_error,
        }


def _one(same, value, key=None):
    """The object equal to value that same already holds, else value, now held. key (default
    value) says what is equal: tuples are keyed by the id() of what they hold, since == takes
    a format with scale 2 for one with 2.0 (decode gives ints for one, floats for the other)."""
    return same.setdefault(value if key is None else key, value)


class _Plans:
    """Every due set's plan, made at start-up ({(interval_s due at the tick, ...): plan}), with
    the plan_for() of protocols.planner.Planner: all poll_tick needs, so the planner module
    can be unloaded."""

    def __init__(self, intervals, plans):
        self.intervals = intervals
        self._cache = plans

    def plan_for(self, t_s):
        key = []
        for i in self.intervals:
            if t_s % i == 0:
                key.append(i)
        return self._cache.get(tuple(key), ())


class Poller:
    """Polls one RTU bus forever (run()) or tick by tick (poll_tick(), for tests).

    bus: the config's bus dict (type rtu); meters: [firmware.meter.Meter], not kept once
    planned; buffer: has append(readings) with readings [(channel, ts_ms, value)], which
    takes all of them or, raising, none; board: firmware.boards Board (uart, utc_ms).
    A meter that stopped answering is tried ever less often (no retries) up to MAX_BACKOFF_S,
    so the others keep their schedule; a late cycle skips the ticks it missed (ticks_missed).
    A MemoryError never ends polling: the step that failed is retried once after a
    collection; readings that still find no room are counted (dropped_readings), and a tick
    that fails elsewhere is given up (memory_errors counts every MemoryError caught)."""

    def __init__(self, bus, meters, buffer, board, master=None, max_backoff_s=MAX_BACKOFF_S):
        self.bus_id = bus["id"]
        self.board = board
        self.buffer = buffer
        self.timeout_ms = bus.get("timeout_ms", 300)
        self.retries = bus.get("retries", 1)
        self.max_backoff_s = max_backoff_s
        self.meters = {}  # unit -> MeterStats
        self.stats = {}  # device id -> MeterStats
        self._quantities = {}  # unit -> the profile's quantities, until planned
        for m in meters:
            st = MeterStats(m.device_id, m.name, m.unit, m.interval_s)
            self.meters[m.unit] = self.stats[m.device_id] = st
            self._quantities[m.unit] = m.quantities
        parity = bus.get("parity", "E")
        stopbits = bus.get("stopbits", 1)
        baud = bus.get("baud", 9600)
        self._pdu = modbus.read_request_pdu  # loads protocols.modbus_client now
        self.planner = None
        self._compacted = False
        if meters:
            self._plan(meters, baud, 10 if parity == "N" and stopbits == 1 else 11)
        for m in meters:  # the caller's list may outlive planning: keep nothing big alive
            m.device = m.quantities = m.names = None
        self.intervals = sorted(set(st.interval_s for st in self.meters.values()))
        if master is None:
            master = RtuMaster(board.uart(bus["port"], baud, parity, stopbits, bus.get("de_pin")))
        self.master = master
        self.last_tick_s = None
        self.ticks_missed = 0
        self.cycles = 0
        self.memory_errors = 0
        self.dropped_readings = 0  # decoded, but no room to keep them (status: dropped_readings)
        self.polling = False  # a tick is in progress: its readings are not all appended yet
        self.stopping = False  # run() starts no new tick (App.quiesce, before a restart)

    def _plan(self, meters, baud, bits):
        """Plan every due set (self.planner) one meter at a time: a unit's requests do not
        depend on the other units, so only one meter's Items and Requests are in the heap at
        once, each compacted before the next is made, and meters alike (quantities, device,
        names, interval) are planned once. More distinct due sets than _MAX_DUE_SETS: a
        protocols.planner.Planner of all the meters that plans at each tick instead."""
        from protocols.planner import Bus, Planner, due_sets

        bus = Bus(baud, bits)
        same = {}  # type: dict  # for _compact: equal formats, PDUs and request lists are one object
        alike = {}  # type: dict  # (quantities, device, names, interval) ids -> its requests
        mine = {}  # unit -> (interval_s, its compacted requests)
        for m in meters:
            key = (id(m.quantities), id(m.device), tuple(m.names or ()), m.interval_s)
            requests = alike.get(key)
            if requests is None:
                reads = [(it, m.interval_s) for it in m.items]
                # all reads are due at tick 0: its plan is the meter's whole plan
                plan = Planner(reads, {m.unit: m.device}, bus).plan_for(0)
                reads = None
                plan = self._compact(plan, same)
                requests = alike[key] = plan[0][1] if plan else ()
                plan = None
            mine[m.unit] = (m.interval_s, requests)
        alike = same = None
        intervals = sorted(set(m.interval_s for m in meters))
        sets = due_sets(intervals)
        if len(sets) > _MAX_DUE_SETS:
            mine = None
            reads = []
            devices = {}
            for m in meters:
                for it in m.items:
                    reads.append((it, m.interval_s))
                devices[m.unit] = m.device
            self.planner = Planner(reads, devices, bus, max_cached=_MAX_DUE_SETS)
            return
        units = sorted(mine)
        plans = {}
        for _t, key in sets:
            plan = []
            for unit in units:
                interval_s, requests = mine[unit]
                if requests and interval_s in key:
                    plan.append((unit, requests))
            plans[key] = plan
        self.planner = _Plans(intervals, plans)  # protocols.planner can go (App.start_io)
        self._compacted = True
        self._quantities = None  # planned: what decoding needs is in the plans

    def _compact(self, requests, same=None):
        """A planner plan as the poller keeps it: [(unit, ((request pdu, (offset, code,
        format, offset, code, format, ...)), ...))], one entry per meter, where format is
        (type, word_order, byte_order, scale, offset, na). No Request, Part or QuantitySpec
        objects: of a quantity only what decoding needs. same: a dict that makes equal
        formats, PDUs and request lists one object each, so meters of one model with the same
        quantities share theirs (4 SDM630s: 5 KB less heap on a 32-bit board)."""
        if same is None:
            same = {}
        out = []
        unit = None
        reqs = []  # type: list
        for r in requests:
            if r.unit != unit:
                if reqs:
                    out.append((unit, _one(same, tuple(reqs), tuple(id(x) for x in reqs))))
                unit = r.unit
                reqs = []
            quantities = self._quantities[unit]
            parts = []  # type: list
            key = []  # type: list
            for part in r.items:
                q = quantities[part.key[1]]
                fmt = (q.type, q.word_order, q.byte_order, q.scale, q.offset, q.na)
                fmt = _one(same, fmt, (repr(fmt),))  # in a tuple: a str key beside bytes warns
                parts += (part.offset, q.code, fmt)
                key += (part.offset, q.code, id(fmt))
            pdu = _one(same, self._pdu(r.function, r.address, r.count))
            parts = _one(same, tuple(parts), tuple(key))
            reqs.append(_one(same, (pdu, parts), (id(pdu), id(parts))))
        if reqs:
            out.append((unit, _one(same, tuple(reqs), tuple(id(x) for x in reqs))))
        return out

    def _out_of_memory(self):
        self.memory_errors += 1
        gc.collect()

    def status(self):
        """The bus's counters for the status message (its entry in "buses", as edge's)."""
        return {
            "ticks_missed": self.ticks_missed,
            "cycles": self.cycles,
            "memory_errors": self.memory_errors,
            "dropped_readings": self.dropped_readings,
        }

    def next_tick(self, now_s):
        """The first tick at or after now_s (and after the last one run) with a meter due."""
        best = None
        last = self.last_tick_s
        for i in self.intervals:
            t = -(-now_s // i) * i
            if last is not None and t <= last:
                t = (last // i + 1) * i
            if best is None or t < best:
                best = t
        return best

    async def run(self):
        """Poll until cancelled; a failing tick is logged in stats, never ends polling."""
        if self.planner is None:
            return
        while True:
            t = None
            try:
                t = await self._until_next_tick()
                if self.stopping:
                    return
                self.polling = True
                await self.poll_tick(t)
            except MemoryError:
                # The meters not yet polled lose this tick; a dead task would lose every
                # tick until the watchdog restarts the gateway, and the next may find room.
                self.polling = False
                self._out_of_memory()
                if t is not None:
                    self.last_tick_s = t  # not this tick again at once: wait for the next
                print("poller: bus", self.bus_id, "ran out of memory; on to the next tick")
                await asyncio.sleep_ms(100)  # never a busy loop that starves the watchdog
            finally:
                self.polling = False

    async def _until_next_tick(self):
        """Wait for the next tick with a meter due and return it (UTC s)."""
        board = self.board
        scale = getattr(board, "clock_scale", 1)
        now_ms = board.utc_ms()
        t = self.next_tick(now_ms // 1000 if now_ms % 1000 == 0 else now_ms // 1000 + 1)
        if self.last_tick_s is not None:
            for k in range(self.last_tick_s + 1, t):
                for i in self.intervals:
                    if k % i == 0:
                        self.ticks_missed += 1
                        break
        while True:  # re-check: the clock may be stepped by NTP
            wait_ms = t * 1000 - board.utc_ms()
            if wait_ms <= 0:
                return t
            await asyncio.sleep_ms(min(-(-wait_ms // scale), 1000))

    async def poll_tick(self, t_s):
        """Poll every meter due at tick t_s (UTC s); readings get ts_ms = t_s * 1000."""
        self.last_tick_s = t_s
        if self.planner is None:
            return
        plan = self.planner.plan_for(t_s)
        if not self._compacted:  # more due sets than the planner keeps: compact each time
            plan = self._compact(plan)
        later = []
        for unit, requests in plan:
            st = self.meters[unit]
            if t_s < st.backoff_until_s:
                st.skipped_backoff += 1
            elif st.consecutive_failures >= 2:
                later.append((st, requests))  # silent meters last: no delay for the others
            else:
                await self.poll_meter(st, requests, t_s)
        for st, requests in later:
            await self.poll_meter(st, requests, t_s)
        self.cycles += 1

    async def poll_meter(self, st, requests, t_s):
        """Read one meter's (MeterStats st) requests, append its readings at once; True if
        all came."""
        retries = 0 if st.consecutive_failures >= 2 else self.retries
        ts_ms = t_s * 1000
        readings = []
        answered = False
        complete = True
        base = st.device_id << 8  # channel = base | the quantity's code (quantities.channel_id)
        short = False  # ran out of memory: no verdict on the meter's health
        for pdu, parts in requests:
            try:
                data = await self.master.read(st.unit, pdu, self.timeout_ms, retries, st)
            except MemoryError:
                self._out_of_memory()  # this request's values are lost; the others may fit
                complete = False
                short = True
                st.last_error = "out of memory reading it"
                continue
            except ModbusError as exc:
                complete = False
                if isinstance(exc, ModbusExceptionResponse):
                    answered = True
                    continue
                if isinstance(exc, NoAnswerError) and not answered:
                    break  # a silent meter: do not spend the bus on its other requests
                continue
            answered = True
            for i in range(0, len(parts), 3):
                f = parts[i + 2]
                for attempt in (0, 1):
                    try:
                        v = values.decode(data, parts[i], f[0], f[1], f[2], f[3], f[4], f[5])
                        if v is None:
                            st.missing_values += 1
                        else:
                            readings.append((base | parts[i + 1], ts_ms, v))
                        break
                    except MemoryError:  # decoding or keeping it: once more after a collection
                        self._out_of_memory()
                        if attempt:
                            self.dropped_readings += 1
        data = None
        if readings:
            for attempt in (0, 1):
                try:
                    self.buffer.append(readings)  # all taken, or (raising) none
                    break
                except MemoryError:
                    self._out_of_memory()
                    if attempt:
                        self.dropped_readings += len(readings)
                        print("poller: no memory to store", len(readings), "readings")
                except OSError as e:  # the flash failed: those readings are gone, not polling
                    self.dropped_readings += len(readings)
                    print("poller: readings not stored:", e)
                    break
            readings = None
        if complete:
            st.polls_ok += 1
            st.last_ok_ts_ms = ts_ms
            st.last_error = None
        else:
            st.polls_failed += 1
        if answered:
            st.consecutive_failures = 0
            st.backoff_until_s = 0
        elif not short:  # out of memory, the gateway failed, not the meter: no backoff
            st.consecutive_failures += 1
            n = st.consecutive_failures
            if n >= 2:
                cap = max(self.max_backoff_s, st.interval_s)
                st.backoff_until_s = t_s + min(st.interval_s * (1 << min(n - 1, 16)), cap)
        return complete

"""The gateway application: wires board -> pollers / LoRa -> time sync -> flash buffer ->
uplink -> configuration, one asyncio task per concern, and feeds the watchdog while they live.
Board-independent; firmware/main.py (boards) and firmware/run_unix.py (unix port) start it.

settings (the local bootstrap file, never remote): gateway, mqtt {host, port, user, password,
tls, keepalive_s}, keys [signing keys, text] and/or keys_hex [the same as hex digits, as the
fleet issues them at provisioning], config (the initial configuration document),
and optionally board {...}, ntp_host, status_interval_s, watchdog_ms, time_scale (tests)."""

import asyncio
import binascii
import gc
import time

from firmware.configmgr import ApplyError, ConfigManager
from firmware.version import FW_VERSION


class Restart(Exception):
    """A new configuration (or a rollback) takes effect by restarting the gateway: loading
    meter profiles needs more heap than a running gateway has to spare. Boards soft-reset;
    run_unix.py starts the app again in the same process."""


class _Sink:
    """What pollers and the LoRa receiver append to: time correction, then the buffer; the
    uplink is told so a live batch can leave."""

    def __init__(self, app):
        self.app = app

    def append(self, readings):
        self.app.buffer.append(readings)
        if self.app.uplink is not None:
            self.app.uplink.notify()


class App:
    def __init__(self, board, settings):
        self.board = board
        self.settings = settings
        self.gateway = settings["gateway"]
        self.started_ms = time.ticks_ms()
        self.buffer = None
        self.uplink = None
        self.config = None
        self.pollers = []
        self.lora = None
        self._io_tasks = []
        self.started = False
        self.restart_requested = False

    # -- configuration ----------------------------------------------------------------

    async def apply(self, doc):
        """At start-up: start the pollers and the radio of doc (None: none); ApplyError if a
        port cannot be opened or a meter cannot be planned. Once running: request a restart
        (returns True), since the configuration is persisted and runs after it."""
        if self.started:
            self.restart_requested = True
            return True
        await self.stop_io()
        self.start_io(doc)
        return None

    def request_restart(self):
        """Restart the gateway between ticks (the watchdog loop stops everything first)."""
        self.restart_requested = True

    async def stop_io(self):
        for t in self._io_tasks:
            t.cancel()
        for t in self._io_tasks:
            try:
                await t
            except BaseException:  # noqa: B036 - cancelled or failed: it is gone either way
                pass
        self._io_tasks = []
        for p in self.pollers:
            uart = getattr(p.master, "uart", None)
            if uart is not None:
                uart.close()
        if self.lora is not None:
            close = getattr(self.lora, "close", None)
            if close is not None:
                close()
        self.pollers = []
        self.lora = None
        gc.collect()

    def start_io(self, doc):
        if not doc:
            return
        sink = self.timesync
        try:
            from firmware.meter import forget, load_meters

            meters = load_meters(doc.get("meters", ()))
            from firmware.poller import Poller

            for bus in doc.get("buses", ()):
                if bus.get("type", "rtu") != "rtu":
                    print("app: bus %s: Modbus TCP is not supported on boards" % bus["id"])
                    continue
                mine = [m for m in meters if m.bus_id == bus["id"]]
                self.pollers.append(Poller(bus, mine, sink, self.board))
            meters = mine = load_meters = None
            # planned: the pollers keep their plans, not the planner, nor this loader
            forget("planner", "firmware.meter")
            forget = None
            if doc.get("lora") and doc.get("sensors"):
                from firmware.lora import LoraReceiver

                self.lora = LoraReceiver(doc["lora"], doc["sensors"], sink, self.board)
        except (OSError, ValueError, KeyError) as e:
            raise ApplyError("%s: %s" % (type(e).__name__, e))
        for p in self.pollers:
            self._io_tasks.append(asyncio.create_task(p.run()))
        if self.lora is not None:
            self._io_tasks.append(asyncio.create_task(self.lora.run()))
        gc.collect()

    def poll_ok_ms(self):
        best = None
        for p in self.pollers:
            for st in p.stats.values():
                t = st.last_ok_ts_ms
                if t is not None and (best is None or t > best):
                    best = t
        return best

    def contact_ms(self):
        """UTC ms of the last message from the fleet (None: none yet)."""
        return None if self.uplink is None else self.uplink.last_contact_ms

    def has_meters(self):
        for p in self.pollers:
            if p.stats:
                return True
        return False

    # -- status -----------------------------------------------------------------------

    def status(self):
        b = self.board
        buf = self.buffer.status()
        meters = []
        for p in self.pollers:
            for st in p.stats.values():
                meters.append(
                    {
                        "id": st.device_id,
                        "polls_ok": st.polls_ok,
                        "timeouts": st.timeouts,
                        "crc_errors": st.crc_errors,
                        "exceptions": st.exceptions,
                    }
                )
        dropped = buf["dropped_readings"] + self.timesync.dropped
        buses = {}
        for p in self.pollers:
            st = p.status()
            dropped += st["dropped_readings"]
            buses[p.bus_id] = st
        config = self.config.summary()
        gc.collect()
        return {
            "gateway": self.gateway,
            "boot": self.boot,
            "ts_ms": self.timesync.now_ms(),
            "uptime_s": time.ticks_diff(time.ticks_ms(), self.started_ms) // 1000,
            "fw_version": FW_VERSION,
            "config_version": config["version"],
            "free_heap_bytes": b.free_heap(),
            "buffer_depth": buf["depth"],
            "oldest_unsent_ts_ms": buf["oldest_unsent_ts_ms"],
            "dropped_readings": dropped,
            "rssi_dbm": b.rssi_dbm(),
            "reset_cause": b.reset_cause(),
            "meters": meters,
            "buses": buses,
            "uplink": self.uplink.counters(),
            "config": config,
        }

    async def _flush_loop(self, interval_s):
        """Readings wait in RAM for a full record; a power cut loses at most interval_s."""
        while True:
            await asyncio.sleep(interval_s)
            self.buffer.flush()

    async def _status_loop(self, interval_s):
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.uplink.publish_status(self.status())
            except (ValueError, OSError, MemoryError) as e:  # the next one may go
                print("app: status not sent: %r" % e)

    async def _config_loop(self):
        while True:
            await asyncio.sleep_ms(200)
            await self.config.step()

    async def quiesce(self, wdt, timeout_ms=10000):
        """Let every poller finish the tick in progress (the meters served its values) and
        start no new one; at most timeout_ms."""
        for p in self.pollers:
            p.stopping = True
        start = time.ticks_ms()
        while any(p.polling for p in self.pollers):
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                break
            wdt.feed()
            await asyncio.sleep_ms(20)

    async def _watchdog_loop(self, tasks, timeout_ms):
        wdt = self.board.watchdog(timeout_ms)
        while True:
            if self.restart_requested:
                await self.quiesce(wdt)
                for t in tasks:
                    t.cancel()
                await self.stop_io()
                self.buffer.flush()  # the readings still in RAM: a restart must lose nothing
                self.uplink.client.close()
                await asyncio.sleep_ms(0)
                raise Restart()
            for t in tasks:
                if t.done():  # a concern died: stop feeding, the watchdog restarts us
                    raise RuntimeError("a gateway task ended; the watchdog restarts the gateway")
            wdt.feed()
            await asyncio.sleep_ms(min(timeout_ms, 8000) // 4)  # rp2: WDT at most 8.3 s

    # -- start ------------------------------------------------------------------------

    async def run(self):
        # Order matters for the heap: the big passing users (config validation, profiles)
        # run first and are unloaded, so the long-lived modules load into a clean heap.
        s = self.settings
        board = self.board
        root = board.mount_flash()
        keys = [k.encode() for k in s.get("keys", ())]
        keys += [binascii.unhexlify(k) for k in s.get("keys_hex", ())]  # as the fleet issues

        async def report(version, desired, status, reason):
            if self.uplink is None:  # at start-up: sent once the uplink exists
                self.config.boot_report = [version, desired, status, reason]
            else:
                await self.uplink.report_config(version, desired, status, reason)

        self.config = ConfigManager(
            root + "/config",
            self.gateway,
            keys,
            self.apply,
            report,
            self.contact_ms,
            self.poll_ok_ms,
            self.has_meters,
            board.utc_ms,
            time_scale=s.get("time_scale", 1.0),
            restart=self.request_restart,
        )
        doc = self.config.boot(s.pop("config", None))
        gc.collect()
        from firmware.flashlog import Buffer
        from firmware.timesync import TimeSync

        self.buffer = Buffer(root + "/log", **s.get("buffer", {}))
        self.boot = self.buffer.increment_boot()
        self.timesync = TimeSync(board, _Sink(self), s.get("ntp_host") or "pool.ntp.org")
        reason = self.config.boot_rollback
        if reason is None:
            try:
                await self.apply(doc)
            except ApplyError as e:
                if not self.config.trial:
                    raise
                reason = "could not be applied: %s" % e
        if reason is not None:
            await self.config.rollback(reason)  # applies the last good one (not started yet)
            doc = self.config.running
        gc.collect()
        from firmware.mqtt import MQTTClient
        from firmware.uplink import Uplink

        m = s["mqtt"]
        client = MQTTClient(
            m.get("client_id", self.gateway),
            m["host"],
            m.get("port", 8883 if m.get("tls") else 1883),
            m.get("user"),
            m.get("password"),
            m.get("keepalive_s", 30),
            ssl=_tls(m),
            timeout_s=m.get("timeout_s", 10),
        )
        ul = (doc or {}).get("uplink", {})
        up = self.uplink = Uplink(
            client,
            self.buffer,
            self.gateway,
            self.boot,
            FW_VERSION,
            self.timesync.now_ms,
            config_version=(doc or {}).get("version", 0),
            on_config=self.config.on_desired,
            window=s.get("window", 4),
            # the flash log sizes its encode buffer for buffer.batch_readings (settings), 96
            max_batch_readings=min(ul.get("max_batch_readings", 200), self.buffer.batch_readings),
            batch_interval_s=ul.get("batch_interval_s", 10) / board.clock_scale,
            backlog_readings_per_s=ul.get("backlog_readings_per_s", 2000),
            ack_timeout_s=s.get("ack_timeout_s", 30),
        )
        doc = ul = None  # this frame lives as long as the gateway: the config stays in flash
        if self.config.boot_report:
            await up.report_config(*self.config.boot_report)
            self.config.boot_report = None
        self.started = True
        tasks = [asyncio.create_task(up.run()), asyncio.create_task(self._config_loop())]
        if not self.timesync.synced() or s.get("ntp_host"):
            tasks.append(asyncio.create_task(self.timesync.run()))
        scale = board.clock_scale  # > 1 only in benchmarks on the unix port: a faster day
        status_s = s.get("status_interval_s", 60) / scale
        tasks.append(asyncio.create_task(self._status_loop(status_s)))
        tasks.append(asyncio.create_task(self._flush_loop(s.get("flush_interval_s", 30) / scale)))
        gc.collect()
        print(
            "app: gateway %s boot %d config %d, %d bytes heap free"
            % (self.gateway, self.boot, self.config.summary()["version"], gc.mem_free())
        )
        await self._watchdog_loop(tasks, s.get("watchdog_ms", 30000))


def _tls(m):
    """An SSLContext for settings m (tls, ca_file, cert_file, key_file), or None. Without
    ca_file the broker's certificate is not verified (say so in the log: use one)."""
    if not m.get("tls"):
        return None
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if m.get("cert_file"):
        ctx.load_cert_chain(_der(m["cert_file"]), _der(m["key_file"]))
    if m.get("ca_file"):
        ctx.load_verify_locations(cadata=_der(m["ca_file"]))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        print("app: TLS without ca_file: the broker's certificate is not verified")
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _der(path):
    """A certificate or key file as DER: PEM is decoded here, since MicroPython's mbedTLS
    builds may lack the PEM parser."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----"):
        return data
    import binascii

    body = b"".join(ln for ln in data.split(b"\n") if ln and not ln.startswith(b"-----"))
    return binascii.a2b_base64(body)

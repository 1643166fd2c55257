"""Remote configuration on the gateway (contract 4): verify the signed desired document
(protocols/sign.py), validate it (protocols/config.py), write it atomically, apply it, report,
and return to the last good one when the new one breaks the gateway. No MQTT, no polling.

Files in <dir>/ (each replaced atomically: temporary file, then rename, which littlefs and
POSIX both make atomic):
  running.json    {"doc", "trial", "trial_boots"}: the configuration in force
  last_good.json  {"doc"}: the last one that ran healthy for the whole rollback window
  verdicts.json   {version: [status, reason]}: versions rejected or rolled back, so a retained
                  desired message delivered again after a reconnect is not retried
  desired.pending {"payload", "tries"}: a desired envelope the heap had no room to check,
                  checked first thing after the restart it asked for
  desired.restarted {"sha256"}: the envelope that restart was for (a hash of its exact
                  bytes): delivered again (the fleet's desired message is retained: every
                  reconnect delivers it) it is checked without another restart, so no
                  document costs more than one; a different document that is checked clears it
Same rules as edge/remote_config.py: a new document is on trial until it ran healthy for the
longer rollback window; on trial, no fleet contact for rollback.contact_timeout_s, every poll
failing for rollback.all_polls_failing_s, or three restarts under it bring back the last good."""

import gc
import json
import os
import sys

MAX_TRIAL_BOOTS = 3
APPLIED = "applied"  # the report statuses of protocols/messages.py
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
# Imported for one check and unloaded again: the schema and signature code cost ~15 KB of
# heap that a gateway needs only when a new document arrives.
_CHECK_MODULES = (
    "protocols.config",
    "protocols.config_checks",
    "protocols.schema",
    "protocols.sign",
)


def unload():
    """Forget the checking modules (they are imported again for the next document)."""
    import firmware
    import protocols

    sys.modules.pop("firmware.configcheck", None)
    if "configcheck" in firmware.__dict__:
        delattr(firmware, "configcheck")
    for m in _CHECK_MODULES:
        sys.modules.pop(m, None)
        name = m[10:]
        if name in protocols.__dict__:
            delattr(protocols, name)  # the package keeps a reference to its submodules
    gc.collect()


_MAX_QUEUE = 2
_PENDING = "desired.pending"  # {"payload", "tries"}: a document to check after a restart
_RESTARTED = "desired.restarted"  # {"sha256"}: the document that restart was for
_NO_MEMORY = "the gateway ran out of memory checking it; send it again to retry"


def identity(payload):
    """A desired envelope's identity: the SHA-256 (hex) of its exact bytes. A retained message
    delivered again has the same; a document sent again has a new version, so a new
    signature and other bytes. Cheap in heap: no parsing, no copy of the payload."""
    import binascii
    import hashlib

    return binascii.hexlify(hashlib.sha256(payload).digest()).decode()


class ApplyError(Exception):
    """The gateway could not put a valid configuration into effect; the message says why."""


def write_json(path, data):
    """Replace path with data as JSON: a power cut leaves the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def read_json(path):
    """The JSON in path, or None if it is missing or unreadable (a torn temp file never is:
    only complete files are renamed into place)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def version_of(doc):
    return doc["version"] if doc else 0


_ON_FLASH = object()  # a document kept only in its file (running.json, last_good.json)


class ConfigManager:
    """The configuration state machine of one gateway.

    apply(doc) is a coroutine function that puts doc (None: no configuration) into effect
    (returns None) or schedules a restart that starts with it (returns True: the report then
    goes out after the restart, from boot_report), or raises ApplyError; report(version, desired_version, status, reason) a coroutine function
    that tells the fleet (Uplink.report_config); contact_ms() and poll_ok_ms() return the UTC
    ms of the last fleet contact / successful poll (None: never); has_meters() whether any
    meter is configured; now_ms() the clock. time_scale < 1 shortens the rollback windows
    (tests and time-accelerated benchmarks only)."""

    def __init__(
        self,
        path,
        gateway_id,
        keys,
        apply,
        report,
        contact_ms,
        poll_ok_ms,
        has_meters,
        now_ms,
        known_profiles=None,
        known_formats=None,
        time_scale=1.0,
        restart=None,
    ):
        self.path = path
        self.gateway_id = gateway_id
        self.keys = keys
        self._apply = apply
        self._report = report
        self.contact_ms = contact_ms
        self.poll_ok_ms = poll_ok_ms
        self.has_meters = has_meters
        self.now_ms = now_ms
        self.known_profiles = known_profiles
        self.known_formats = known_formats
        self.time_scale = time_scale
        self.restart = restart  # restart() asks for a restart (a fresh heap); None: none
        self._memory_tries = 0  # of the document at the head of the queue
        self._restarted = None  # identity() of the document that had its restart for memory
        # The documents stay in their files once written (read back for the rare rollback,
        # promotion or new document): only their versions and rollback windows are kept, 1-2
        # KB less heap on a 32-bit board. running / last_good are the documents (properties).
        self._running = self._last_good = None
        self._running_version = self._good_version = 0
        self._windows_s = (600, 600)  # rollback: contact_timeout_s, all_polls_failing_s
        self.trial = False
        self.trial_since_ms = 0
        self.verdicts = {}
        self.rollbacks = 0
        self.rejections = 0
        self.boot_rollback = None
        self.boot_report = None  # [version, desired, status, reason] of a restart to apply
        self._queue = []

    def _file(self, name):
        return self.path + "/" + name

    def _doc(self, held, name, version):
        """A document held in RAM, or read back from the file it was saved to; OSError if
        that no longer holds its version (a flash fault: better a restart than a document
        saved over with another)."""
        if held is not _ON_FLASH:
            return held
        if not version:  # every document has a version >= 1
            return None
        data = read_json(self._file(name))
        doc = data.get("doc") if isinstance(data, dict) else None
        if version_of(doc) != version:
            raise OSError("config: %s does not hold version %d: check the flash" % (name, version))
        return doc

    @property
    def running(self):
        """The configuration in force (None: none)."""
        return self._doc(self._running, "running.json", self._running_version)

    @running.setter
    def running(self, doc):
        self._running = doc
        self._running_version = version_of(doc)
        rb = (doc or {}).get("rollback", {})
        self._windows_s = (rb.get("contact_timeout_s", 600), rb.get("all_polls_failing_s", 600))

    @property
    def last_good(self):
        """The last configuration that ran healthy for the whole rollback window."""
        return self._doc(self._last_good, "last_good.json", self._good_version)

    @last_good.setter
    def last_good(self, doc):
        self._last_good = doc
        self._good_version = version_of(doc)

    def _save_running(self, trial_boots=0, report=None):
        write_json(
            self._file("running.json"),
            {
                "doc": self.running,
                "trial": self.trial,
                "trial_boots": trial_boots,
                "report": report,
            },
        )
        self._running = _ON_FLASH

    def _save_last_good(self):
        write_json(self._file("last_good.json"), {"doc": self.last_good})
        self._last_good = _ON_FLASH

    def _verdict(self, version, status, reason):
        self.verdicts[str(version)] = [status, reason]
        write_json(self._file("verdicts.json"), self.verdicts)

    def validate(self, doc):
        """The document with defaults, or protocols.config.ConfigError (a ValueError)."""
        from firmware.configcheck import validate

        try:
            return validate(self, doc)
        finally:
            unload()

    def boot(self, initial):
        """The configuration to start with: the running one of the last run (continuing its
        trial; a third restart under it schedules a rollback), else the trusted local initial
        one, else None."""
        try:
            os.mkdir(self.path)
        except OSError:
            pass
        self.verdicts = read_json(self._file("verdicts.json")) or {}
        pending = read_json(self._file(_PENDING))
        if isinstance(pending, dict) and isinstance(pending.get("payload"), str):
            # saved when the heap was too fragmented to check it: first thing, fresh heap
            self._queue.append(pending["payload"].encode())
            self._memory_tries = pending.get("tries", 1)
        mark = read_json(self._file(_RESTARTED))
        self._restarted = mark.get("sha256") if isinstance(mark, dict) else None
        good = read_json(self._file("last_good.json"))
        self.last_good = good.get("doc") if isinstance(good, dict) else None
        if self._last_good is not None:
            self._last_good = _ON_FLASH
        good = None
        run = read_json(self._file("running.json"))
        self.trial_since_ms = self.now_ms()
        doc = None
        if isinstance(run, dict) and run.get("doc"):
            doc = self.running = run["doc"]
            self.boot_report = run.get("report")
            self.trial = bool(run.get("trial"))
            boots = run.get("trial_boots", 0) + 1 if self.trial else 0
            run = None
            if self.trial and boots > MAX_TRIAL_BOOTS:
                self.boot_rollback = "the gateway restarted %d times under version %d" % (
                    boots - 1,
                    self._running_version,
                )
            self._save_running(boots)  # a pending report is made once, after this boot
        elif initial is not None:
            doc = self.running = self.last_good = self.validate(initial)
            self._save_running()
            self._save_last_good()
        return doc

    def on_desired(self, payload):
        """Uplink callback for config/desired (a copy of the payload); handled in run()."""
        if payload and len(self._queue) < _MAX_QUEUE:
            self._queue.append(bytes(payload))

    async def handle(self, payload):
        """Verify, validate and apply one desired envelope; returns the reported status."""
        from firmware.configcheck import handle

        try:
            return await handle(self, payload)
        finally:
            unload()

    def _windows_ms(self):
        contact_s, polls_s = self._windows_s
        return contact_s * 1000 * self.time_scale, polls_s * 1000 * self.time_scale

    def check(self):
        """One look at a configuration on trial: the reason to roll back, or None. Promotes
        it to last good once it ran healthy for the whole window."""
        if not self.trial:
            return None
        if self.boot_rollback:
            return self.boot_rollback
        now = self.now_ms()
        since = self.trial_since_ms
        contact_win, polls_win = self._windows_ms()
        seen = self.contact_ms() or 0
        if now - max(seen, since) >= contact_win:
            return "no contact with the fleet for %d s" % (contact_win // 1000)
        meters = self.has_meters()
        ok = self.poll_ok_ms() or 0
        if meters and now - max(ok, since) >= polls_win:
            return "every poll failed for %d s" % (polls_win // 1000)
        if (
            now - since >= max(contact_win, polls_win)
            and seen >= since
            and (not meters or ok >= since)
        ):
            self.trial = False
            doc = self.last_good = self.running
            self._save_last_good()
            self._running = doc  # written again as it is, not read back once more
            doc = None
            self._save_running()
        return None

    async def rollback(self, reason):
        bad = self._running_version
        good = self.last_good
        print("config: version %d: %s; returning to version %d" % (bad, reason, version_of(good)))
        self.boot_rollback = None
        self._verdict(bad, ROLLED_BACK, reason)
        self.running = good
        self.trial = False
        self.rollbacks += 1
        report = [version_of(good), bad, ROLLED_BACK, reason]
        self._save_running(0, report)
        if await self._apply(good):
            return  # reported after the restart
        self._running = good  # written again as it is, not read back
        good = None
        self._save_running()
        await self._report(*report)

    async def step(self):
        """Handle a queued desired document, if any, then look at the trial; called every
        second or so by the app's config task."""
        if self._queue:
            payload = self._queue.pop(0)
            short = False
            try:
                await self.handle(payload)
            except MemoryError as e:
                short = True
                payload = await self._out_of_memory(payload, e)
            except (OSError, ValueError, KeyError, TypeError) as e:
                print("config: handling a desired configuration failed: %r" % e)
            if not short:
                self._memory_tries = 0
                self._forget_pending()
                if self._restarted is not None:
                    self._checked(payload)
            payload = None
        reason = self.check()
        if reason is not None:
            await self.rollback(reason)

    async def _out_of_memory(self, payload, e):
        """A document the heap had no room to check: collect and retry it once; then save
        it and restart (a fresh heap checks it first thing); after that, give up on it.
        A document gets one such restart: delivered again (the retained message, on every
        reconnect) it is checked here and given up on again if the heap is still short, so
        no endless restarts. The contract 4 state stays consistent at every step:
        running.json is replaced atomically and a document put on trial before the error
        stays on trial after the restart."""
        payload_text = None
        gc.collect()
        self._memory_tries += 1
        tries = self._memory_tries
        print("config: out of memory handling a desired configuration (%r), try %d" % (e, tries))
        if tries == 1:
            self._queue.insert(0, payload)
            return
        if tries == 2 and self.restart is not None:
            try:
                ident = identity(payload)
            except MemoryError:
                ident = None  # unknown: it may be the one that had its restart
            if ident is None or ident == self._restarted:
                print("config: it had its restart for lack of memory already: not another")
            else:
                try:
                    payload_text = bytes(payload).decode()
                    # The mark first: a power cut between the two costs the document its
                    # restart, never a second one.
                    write_json(self._file(_RESTARTED), {"sha256": ident})
                    self._restarted = ident
                    write_json(self._file(_PENDING), {"payload": payload_text, "tries": tries})
                except (OSError, ValueError, MemoryError) as e2:
                    print("config: could not save it for a restart: %r" % e2)
                else:
                    payload_text = None
                    print("config: restarting to check it with a fresh heap")
                    self._queue = []
                    self.restart()
                    return
        self._memory_tries = 0
        self._forget_pending()
        print("config: gave up on this desired configuration: too little free memory")
        try:
            await self._report(self._running_version, 0, REJECTED, _NO_MEMORY)
        except (OSError, MemoryError) as e2:
            print("config: report not sent: %r" % e2)

    def _checked(self, payload):
        """A document was checked (with whatever outcome): if it is not the one that had
        its restart for lack of memory, that one is history (the fleet sent a new one)."""
        try:
            same = identity(payload) == self._restarted
        except MemoryError:
            return  # keep the mark: without it that document could cost another restart
        if not same:
            self._restarted = None
            try:
                os.remove(self._file(_RESTARTED))
            except OSError:
                pass

    def _forget_pending(self):
        try:
            os.remove(self._file(_PENDING))
        except OSError:
            pass

    def summary(self):
        return {
            "version": self._running_version,
            "last_good_version": self._good_version,
            "trial": self.trial,
            "rollbacks": self.rollbacks,
            "rejections": self.rejections,
        }

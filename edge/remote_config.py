"""Remote configuration (contract 4): verify the signed desired configuration, validate it with
the shared schema, apply it without a restart, report the version that runs, and return to
the last good configuration when a new one breaks the gateway.

Files in <data_dir>/config/, each written atomically (temporary file, fsync, rename):
  pending.json    the document being applied (for a post-mortem if the agent dies meanwhile)
  running.json    {"doc", "trial", "applied_ms", "trial_boots"}: the configuration in force
  last_good.json  {"doc"}: the last one that ran healthy for the rollback window
  verdicts.json   {version: {"status", "reason"}}: versions rejected or rolled back, so a
                  retained desired message delivered again on reconnect is not retried
A new configuration is on trial until it has run healthy for the longer of
rollback.contact_timeout_s and rollback.all_polls_failing_s; on trial, no contact with the
fleet for contact_timeout_s, every poll failing for all_polls_failing_s, or three restarts of
the agent, bring back the last good one. Building pollers is the agent's job, not this one's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols import messages
from protocols.config import ConfigError, check_config
from protocols.sign import SignatureError, open_envelope

log = logging.getLogger("edge.remote_config")

MAX_TRIAL_BOOTS = 3  # an agent that keeps dying under a new configuration rolls it back

Doc = dict[str, Any]
Apply = Callable[[Doc | None], Awaitable[None]]
Report = Callable[[int, int, str, str | None], Awaitable[Any]]


class ApplyError(Exception):
    """The agent could not put a valid configuration into effect; the message says why."""


def atomic_write_json(path: Path, data: Any) -> None:
    """Replace path with data as JSON so a crash or power cut leaves the old or the new file,
    never a torn one: temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """The JSON in path, or None if the file is missing or unreadable (logged)."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s is unreadable (%s): ignoring it", path, exc)
        return None


def version_of(doc: Doc | None) -> int:
    """The version of a document; 0 stands for "no configuration yet"."""
    return int(doc["version"]) if doc else 0


@dataclass
class Health:
    """What the watchdog looks at, supplied by the agent. Times are UTC ms; None: never."""

    fleet_contact_ms: Callable[[], int | None]
    last_poll_ok_ms: Callable[[], int | None]
    has_meters: Callable[[], bool]


class RemoteConfig:
    """The configuration state machine of one gateway (see the module docstring).

    time_scale shortens the rollback windows (tests only; 1.0 in production)."""

    def __init__(
        self,
        config_dir: Path,
        gateway_id: str,
        keys: tuple[bytes, ...],
        apply: Apply,
        report: Report,
        health: Health,
        known_profiles: dict[str, list[str]] | None = None,
        known_formats: tuple[str, ...] | None = None,
        clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
    ) -> None:
        self.dir = Path(config_dir)
        self.gateway_id = gateway_id
        self.keys = keys
        self._apply = apply
        self._report = report
        self.health = health
        self.known_profiles = known_profiles
        self.known_formats = known_formats
        self.clock = clock
        self.time_scale = time_scale
        self.running: Doc | None = None
        self.last_good: Doc | None = None
        self.trial = False
        self.trial_since_ms = 0
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.rollbacks = 0
        self.rejections = 0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    # -- files ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _save_running(self, trial_boots: int = 0) -> None:
        atomic_write_json(
            self.dir / "running.json",
            {
                "doc": self.running,
                "trial": self.trial,
                "applied_ms": self.trial_since_ms,
                "trial_boots": trial_boots,
            },
        )

    def _save_last_good(self) -> None:
        atomic_write_json(self.dir / "last_good.json", {"doc": self.last_good})

    def _verdict(self, version: int, status: str, reason: str) -> None:
        self.verdicts[str(version)] = {"status": status, "reason": reason}
        atomic_write_json(self.dir / "verdicts.json", self.verdicts)

    def validate(self, doc: Any) -> Doc:
        """The normalised document, or ConfigError listing every problem."""
        if isinstance(doc, dict) and doc.get("gateway") not in (None, self.gateway_id):
            raise ConfigError(
                [
                    f"gateway: the document is for {doc.get('gateway')!r}, this is {self.gateway_id!r}"
                ]
            )
        result: Doc = check_config(doc, self.known_profiles, self.known_formats)
        return result

    def boot(self, initial: Doc | None) -> Doc | None:
        """The configuration to start with: the running one of the last run (continuing its
        trial), else the local initial configuration (trusted, validated), else none."""
        self.verdicts = read_json(self.dir / "verdicts.json") or {}
        good = read_json(self.dir / "last_good.json")
        self.last_good = good.get("doc") if isinstance(good, dict) else None
        run = read_json(self.dir / "running.json")
        if isinstance(run, dict) and run.get("doc"):
            self.running = run["doc"]
            self.trial = bool(run.get("trial"))
            boots = int(run.get("trial_boots", 0)) + 1 if self.trial else 0
            self.trial_since_ms = self._now_ms()  # the window starts again with this run
            if self.trial and boots > MAX_TRIAL_BOOTS:
                reason = f"the agent restarted {boots - 1} times under version {version_of(self.running)}"
                log.error(
                    "configuration %d: %s; returning to the last good one",
                    version_of(self.running),
                    reason,
                )
                self._pending_boot_rollback = reason
            self._save_running(boots)
            return self.running
        if initial is not None:
            self.running = self.validate(initial)
            self.last_good = self.running  # nothing older to return to
            self.trial = False
            self.trial_since_ms = self._now_ms()
            self._save_running()
            self._save_last_good()
        return self.running

    _pending_boot_rollback: str | None = None

    # -- messages from the fleet ---------------------------------------------------------

    def on_desired(self, payload: bytes) -> None:
        """Uplink callback for config/desired; the work happens in run()."""
        if not payload:
            return  # a cleared retained message
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("config/desired messages arrive faster than they are applied; one dropped")

    async def handle(self, payload: bytes) -> str:
        """Verify, validate and apply one desired document; returns the report status."""
        running_version = version_of(self.running)
        try:
            text = open_envelope(payload, self.keys)
        except SignatureError as exc:
            return await self._reject(None, f"signature: {exc}")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            return await self._reject(None, f"the signed document is not JSON: {exc}")
        desired = doc.get("version") if isinstance(doc, dict) else None
        desired_version = (
            desired if isinstance(desired, int) and not isinstance(desired, bool) else 0
        )
        if desired_version and desired_version == running_version:
            await self._report(running_version, desired_version, messages.REPORT_APPLIED, None)
            return messages.REPORT_APPLIED
        if desired_version and desired_version < running_version:
            return await self._reject(
                None,
                f"version {desired_version} is older than the running version {running_version}: "
                "a new configuration needs a higher version",
                desired_version,
            )
        verdict = self.verdicts.get(str(desired_version))
        if verdict is not None:
            # Delivered again (retained, after a reconnect): repeat the answer, do not retry.
            await self._report(
                running_version, desired_version, verdict["status"], verdict["reason"]
            )
            return str(verdict["status"])
        try:
            new = self.validate(doc)
        except ConfigError as exc:
            return await self._reject(desired_version or None, str(exc))
        atomic_write_json(self.dir / "pending.json", new)
        try:
            await self._apply(new)
        except ApplyError as exc:  # the agent changed nothing
            return await self._reject(desired_version, f"could not be applied: {exc}")
        if self.last_good is None:
            self.last_good = self.running
            self._save_last_good()
        self.running = new
        self.trial = True
        self.trial_since_ms = self._now_ms()
        self._save_running()
        log.info("configuration %d applied (was %d); on trial", desired_version, running_version)
        await self._report(desired_version, desired_version, messages.REPORT_APPLIED, None)
        return messages.REPORT_APPLIED

    async def _reject(self, version: int | None, reason: str, desired: int = 0) -> str:
        """Report a rejection; with version, remember it so a redelivery is not retried."""
        self.rejections += 1
        running = version_of(self.running)
        desired = version or desired
        log.error("desired configuration %s rejected: %s", desired or "?", reason)
        if version:
            self._verdict(version, messages.REPORT_REJECTED, reason[:2000])
        await self._report(running, desired, messages.REPORT_REJECTED, reason[:2000])
        return messages.REPORT_REJECTED

    # -- watchdog ------------------------------------------------------------------------

    def _windows_ms(self) -> tuple[float, float]:
        rb = (self.running or {}).get("rollback", {})
        contact = rb.get("contact_timeout_s", 600) * 1000 * self.time_scale
        polls = rb.get("all_polls_failing_s", 600) * 1000 * self.time_scale
        return contact, polls

    def check(self) -> str | None:
        """One watchdog look at a configuration on trial: the reason to roll back, or None.
        Promotes it to last good once it has been healthy for the whole window."""
        if not self.trial:
            return None
        if self._pending_boot_rollback:
            return self._pending_boot_rollback
        now = self._now_ms()
        since = self.trial_since_ms
        contact_ms, polls_ms = self._windows_ms()
        contact = max(self.health.fleet_contact_ms() or 0, since)
        if now - contact >= contact_ms:
            return f"no contact with the fleet for {contact_ms / 1000:.0f} s"
        meters = self.health.has_meters()
        ok = max(self.health.last_poll_ok_ms() or 0, since)
        if meters and now - ok >= polls_ms:
            return f"every poll failed for {polls_ms / 1000:.0f} s"
        contact_seen = (self.health.fleet_contact_ms() or 0) >= since
        polled = not meters or (self.health.last_poll_ok_ms() or 0) >= since
        if now - since >= max(contact_ms, polls_ms) and contact_seen and polled:
            self.trial = False
            self.last_good = self.running
            self._save_last_good()
            self._save_running()
            log.info(
                "configuration %d ran healthy: it is now the last good one",
                version_of(self.running),
            )
        return None

    async def rollback(self, reason: str) -> None:
        bad = version_of(self.running)
        good = self.last_good
        log.error("configuration %d: %s; returning to version %d", bad, reason, version_of(good))
        self._pending_boot_rollback = None
        self._verdict(bad, messages.REPORT_ROLLED_BACK, reason)
        await self._apply(good)
        self.running = good
        self.trial = False
        self.rollbacks += 1
        self._save_running()
        await self._report(version_of(good), bad, messages.REPORT_ROLLED_BACK, reason)

    async def run(self, period_s: float = 1.0) -> None:
        """Handle desired documents as they come and watch a configuration on trial."""
        while True:
            try:
                payload = await asyncio.wait_for(self._queue.get(), period_s)
            except TimeoutError:
                payload = None
            if payload is not None:
                try:
                    await self.handle(payload)
                except Exception:
                    log.exception("handling a desired configuration failed")
            reason = self.check()
            if reason is not None:
                await self.rollback(reason)

    def summary(self) -> dict[str, Any]:
        return {
            "version": version_of(self.running),
            "last_good_version": version_of(self.last_good),
            "trial": self.trial,
            "rollbacks": self.rollbacks,
            "rejections": self.rejections,
        }

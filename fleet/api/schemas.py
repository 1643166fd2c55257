"""Pydantic models of the API's requests and answers (the OpenAPI schema is made from them).
Field names carry units (ts_ms, floor_area_m2, ttl_s). No database access here."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["viewer", "technician", "operator", "admin"]
GatewayStatus = Literal["pending", "accepted", "rejected", "revoked"]
GATEWAY_ID = r"^[a-z0-9-]{3,64}$"
MAX_ID = 2147483647  # ids are 32-bit integers on PostgreSQL
MAX_TS_MS = 253402300799999  # 9999-12-31, as protocols/codec.py
TagStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

T = TypeVar("T")


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class Strict(BaseModel):
    """A request body: unknown fields are errors (a typo must not be ignored silently), and
    text may not contain NUL characters (PostgreSQL cannot store them)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Strict:
        for name in type(self).model_fields:
            if _has_nul(getattr(self, name)):
                raise ValueError(f"{name}: must not contain NUL characters")
        return self


class Page(Model, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# --- identity ---------------------------------------------------------------------------


class LoginIn(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    organisation: str = Field(min_length=1, max_length=64, description="the organisation's slug")


class LoginOut(Model):
    token: str
    expires_ts_ms: int


class Me(Model):
    user_id: int | None
    email: str | None
    org_id: int
    role: Role


class OrganisationOut(Model):
    id: int
    slug: str
    name: str
    shares_benchmarks: bool
    created_ts_ms: int


class OrganisationPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    shares_benchmarks: bool | None = None


class UserOut(Model):
    id: int
    email: str
    name: str
    locale: str
    role: Role
    disabled: bool


class UserIn(Strict):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field("", max_length=200)
    locale: str = Field("de", min_length=2, max_length=16)
    role: Role
    password: str | None = Field(
        None,
        min_length=8,
        max_length=1024,
        description="for a new user; ignored if the email exists",
    )


class UserPatch(Strict):
    role: Role | None = None
    name: str | None = Field(None, max_length=200)
    locale: str | None = Field(None, min_length=2, max_length=16)


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Role | None = Field(None, description="default: your own role; never more")
    ttl_s: int | None = Field(None, ge=60, le=10 * 365 * 86400, description="default: no expiry")


class TokenOut(Model):
    id: int
    name: str
    role: Role
    user_id: int | None
    created_ts_ms: int
    expires_ts_ms: int | None
    last_used_ts_ms: int | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(description="shown this one time; store it safely")


class AuditOut(Model):
    id: int
    ts_ms: int
    actor_user_id: int | None
    actor_token_id: int | None
    actor_gateway_id: str | None
    email: str | None = None
    action: str
    target: str
    details: dict[str, Any]


# --- sites and gateways ---------------------------------------------------------------


class SiteIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    address: str = Field("", max_length=1000)
    floor_area_m2: float | None = Field(None, gt=0, le=1e7)
    building_type: str = Field("", max_length=64)
    tags: list[TagStr] = Field(default_factory=list, max_length=64)


class SitePatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    address: str | None = Field(None, max_length=1000)
    floor_area_m2: float | None = Field(None, gt=0, le=1e7)
    building_type: str | None = Field(None, max_length=64)
    tags: list[TagStr] | None = Field(None, max_length=64)


class SiteOut(Model):
    id: int
    name: str
    address: str
    floor_area_m2: float | None
    building_type: str
    tags: list[str]
    created_ts_ms: int


class GatewayOut(Model):
    id: str
    site_id: int | None
    name: str
    tags: list[str]
    status: GatewayStatus
    fw_version: str | None
    reported_config_version: int | None
    desired_config_version: int | None
    boot: int | None
    session: int | None
    online: bool
    last_seen_ts_ms: int | None
    last_status: dict[str, Any] | None
    last_status_ts_ms: int | None
    next_expected_seq: int
    rejected_batches: int
    created_ts_ms: int


class GatewayPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    site_id: int | None = Field(None, ge=1, le=MAX_ID, description="the site the gateway is in")
    tags: list[TagStr] | None = Field(None, max_length=64)


class Credentials(Model):
    gateway_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="shown this one time")


class DeviceOut(Model):
    device_id: int
    kind: str
    name: str
    profile: str | None
    unit: int | None
    bus: str | None
    active: bool


class ChannelOut(Model):
    channel: int
    device_id: int
    quantity: str
    unit: str
    resolution: float
    active: bool


class LatestOut(Model):
    channel: int
    ts_ms: int
    value: float


class RejectedBatchOut(Model):
    id: int
    seq: int | None
    reason: str
    kind: str
    ts_ms: int
    size_bytes: int


class Reading(Model):
    ts_ms: int
    value: float


class Bucket(Model):
    bucket_ts_ms: int
    count: int
    min: float
    max: float
    avg: float
    first: float
    last: float
    delta: float


class TelemetryOut(Model):
    gateway_id: str
    interval: Literal["raw", "15min"]
    start_ts_ms: int
    end_ts_ms: int
    raw: dict[str, list[Reading]] | None = None
    aggregates: dict[str, list[Bucket]] | None = None


# --- provisioning ----------------------------------------------------------------------


class ClaimTokenIn(Strict):
    count: int = Field(1, ge=1, le=1000, description="how many tokens to make")
    ttl_s: int = Field(7 * 86400, ge=60, le=365 * 86400)
    site_id: int | None = Field(None, ge=1, le=MAX_ID)
    require_approval: bool = False
    label: str = Field("", max_length=200)


class ClaimTokenOut(Model):
    id: int
    site_id: int | None
    require_approval: bool
    created_ts_ms: int
    expires_ts_ms: int
    used_ts_ms: int | None
    used_by_gateway: str | None
    label: str


class ClaimTokenCreated(ClaimTokenOut):
    token: str = Field(description="shown this one time")


class ClaimIn(Strict):
    token: str = Field(min_length=10, max_length=200)
    gateway_id: str | None = Field(None, pattern=GATEWAY_ID, description="wanted id (optional)")
    name: str | None = Field(None, min_length=1, max_length=200)
    fw_version: str | None = Field(None, min_length=1, max_length=32)


class ClaimOut(Model):
    gateway_id: str
    mqtt_username: str
    mqtt_password: str
    signing_key: str = Field(description="64 hex digits: the key config envelopes are signed with")
    broker_url: str
    status: Literal["accepted", "pending"]
    next_seq: int


# --- configuration and rollouts ----------------------------------------------------------


class ConfigOut(Model):
    gateway_id: str
    version: int
    document: dict[str, Any]
    created_ts_ms: int
    created_by: int | None
    comment: str
    rollout_id: int | None


class ConfigVersionOut(Model):
    version: int
    created_ts_ms: int
    created_by: int | None
    comment: str
    rollout_id: int | None


class ReportedOut(Model):
    gateway_id: str
    reported_version: int | None
    desired_version: int | None
    in_sync: bool


class DiffEntry(Model):
    path: str
    op: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


class DiffOut(Model):
    from_version: int
    to_version: int
    changes: list[DiffEntry]


class RollbackIn(Strict):
    version: int = Field(ge=1, le=2147483647)


class RolloutIn(Strict):
    name: str = Field("", max_length=200)
    patch: dict[str, Any] = Field(description="RFC 7386 JSON merge patch of the configuration")
    gateway_ids: list[Annotated[str, Field(pattern=GATEWAY_ID)]] | None = Field(
        None, max_length=100000
    )
    site_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(None, max_length=10000)
    tags: list[TagStr] | None = Field(None, max_length=64)
    batch_size: int | None = Field(None, ge=1, le=100000)
    batch_share: float | None = Field(None, gt=0, le=1)
    rate_per_min: float | None = Field(None, gt=0, le=1e6, description="gateways per minute")
    failure_threshold: float = Field(0.1, ge=0, le=1)
    report_timeout_s: int = Field(900, ge=10, le=7 * 86400)


class RolloutOut(Model):
    id: int
    name: str
    state: str
    target: dict[str, Any]
    change: dict[str, Any]
    batch_size: int | None
    batch_share: float | None
    rate_per_min: float | None
    failure_threshold: float
    halt_reason: str | None
    created_by: int | None
    created_ts_ms: int
    updated_ts_ms: int
    counts: dict[str, int]


class RolloutTargetOut(Model):
    gateway_id: str
    state: str
    config_version: int | None
    reason: str | None
    updated_ts_ms: int


class AlertOut(Model):
    id: int
    gateway_id: str | None
    device_id: int | None
    kind: str
    severity: str
    opened_ts_ms: int
    closed_ts_ms: int | None
    acknowledged_by: int | None
    acknowledged_ts_ms: int | None
    details: dict[str, Any]

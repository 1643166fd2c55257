"""The fleet's HTTP API as gatewayctl uses it (docs/api.md), with the technician's own API
token: claim tokens, sites, gateways, configuration, latest readings. Every failure becomes a
GatewayctlError that says what to do (fleet unreachable, token refused, not found)."""

from __future__ import annotations

from typing import Any

import httpx

from gatewayctl.errors import GatewayctlError


class FleetApi:
    def __init__(self, base_url: str, api_token: str | None, timeout_s: float = 10) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise GatewayctlError(f"fleet address {base_url!r}: write https://fleet.example.org")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.base = base
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self.client = httpx.Client(base_url=base, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> FleetApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        """The JSON of the answer; None for 404 when 404 is in ok."""
        try:
            r = self.client.request(method, path, **kw)
        except httpx.TransportError as e:
            raise GatewayctlError(
                f"fleet unreachable at {self.base} ({type(e).__name__}: {e or 'no answer'}): "
                "check --fleet, the network, and that the fleet server runs"
            ) from None
        if r.status_code in ok:
            if r.status_code in (204, 404):
                return None
            return r.json()
        detail = _detail(r)
        if r.status_code == 401:
            raise GatewayctlError(
                f"the fleet refused the API token ({detail}): give your own with --api-token "
                "(or GATEWAYCTL_API_TOKEN); an operator makes one with `fleet create-token`"
            )
        if r.status_code == 403:
            raise GatewayctlError(
                f"the fleet says your token may not do this ({detail}): claim tokens need the "
                "technician role, a gateway's configuration (commission --config) an operator"
            )
        raise GatewayctlError(f"fleet: {method} {path} answered {r.status_code}: {detail}")

    # -- what gatewayctl needs ---------------------------------------------------------

    def site_id(self, site: str) -> int:
        """A site's id from its id or its exact name."""
        if site.isdigit():
            if self.request("GET", f"/sites/{site}", ok=(200, 404)) is None:
                raise GatewayctlError(f"site {site} not found in your organisation")
            return int(site)
        page = self.request("GET", "/sites", params={"limit": 500})
        matches = [s for s in page["items"] if s["name"] == site]
        if len(matches) != 1:
            known = ", ".join(f"{s['id']} {s['name']!r}" for s in page["items"][:10])
            raise GatewayctlError(
                f"site {site!r}: {'no' if not matches else 'several'} site(s) of that name "
                f"(sites: {known or 'none'}); give the site's number"
            )
        return int(matches[0]["id"])

    def create_claim_token(
        self, site_id: int | None, ttl_s: int, label: str, require_approval: bool = False
    ) -> dict[str, Any]:
        body = {"count": 1, "ttl_s": ttl_s, "label": label[:200],
                "require_approval": require_approval, "site_id": site_id}  # fmt: skip
        return dict(self.request("POST", "/claim-tokens", ok=(201,), json=body)[0])

    def claim_tokens(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/claim-tokens", params={"limit": 500})["items"])

    def gateway(self, gateway_id: str) -> dict[str, Any] | None:
        got = self.request("GET", f"/gateways/{gateway_id}", ok=(200, 404))
        return None if got is None else dict(got)

    def put_config(self, gateway_id: str, doc: dict[str, Any]) -> int:
        got = self.request("PUT", f"/gateways/{gateway_id}/config", ok=(200, 201), json=doc)
        return int(got["version"])

    def config(self, gateway_id: str) -> dict[str, Any] | None:
        got = self.request("GET", f"/gateways/{gateway_id}/config", ok=(200, 404))
        return None if got is None else dict(got)

    def latest(self, gateway_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/gateways/{gateway_id}/latest"))


def _detail(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text[:200] or r.reason_phrase
    if isinstance(doc, dict):
        return str(doc.get("detail") or doc.get("title") or doc)[:300]
    return str(doc)[:300]

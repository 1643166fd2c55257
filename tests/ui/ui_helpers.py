"""Helpers of the web UI tests: the API tests' world of two organisations (reused from
tests/fleet/api_helpers.py), reading a page's CSRF token and signing in through the form."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent.parent / "fleet"))

from api_helpers import NOW_MS, Org, client, make_org  # noqa: E402

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m is not None, "no CSRF field on the page"
    return m.group(1)


def sign_in(c: TestClient, org: str, role: str, password: str | None = None) -> TestClient:
    """Sign c in as the api_helpers user of role in org (asserts it worked)."""
    page = c.get("/ui/login")
    r = c.post(
        "/ui/login",
        data={"csrf": csrf_of(page.text), "organisation": org,
              "email": f"{role}@{org}.example", "password": password or f"password-{role}"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303, r.text
    return c


__all__ = ["NOW_MS", "Org", "client", "csrf_of", "make_org", "sign_in"]

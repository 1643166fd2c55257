"""What every UI page shares: the Jinja2 environment, translations (German default, English;
the choice lives in a cookie), formatting of times and numbers, and render(). No database
access and no business rules here."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

HERE = Path(__file__).parent
LANGS = ("de", "en")
DEFAULT_LANG = "de"
LANG_COOKIE = "fleet_lang"
# Municipalities of Lower Saxony: times are shown in their zone, stored as UTC ms.
ZONE = ZoneInfo("Europe/Berlin")


class MissingTranslation(KeyError):
    """A key used by a page or template that a locale file lacks."""


@cache
def messages(lang: str) -> dict[str, str]:
    with open(HERE / "locales" / f"{lang}.json", encoding="utf-8") as f:
        return json.load(f)


def lang_of(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def translate(lang: str, key: str, **values: Any) -> str:
    try:
        text = messages(lang)[key]
    except KeyError:
        raise MissingTranslation(f"translation {key!r} missing in locales/{lang}.json") from None
    return text.format(**values) if values else text


def fmt_ts(lang: str, ts_ms: int | None) -> str:
    if ts_ms is None:
        return "–"
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(ZONE)
    return when.strftime("%d.%m.%Y %H:%M:%S" if lang == "de" else "%Y-%m-%d %H:%M:%S")


def fmt_num(lang: str, value: float | int | None, digits: int | None = None) -> str:
    """A number as people of lang write it (German: decimal comma); digits None: up to 3
    decimals, trailing zeros dropped."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    strip = digits is None
    if digits is None:
        digits = 0 if float(value).is_integer() else 3
    text = f"{value:,.{digits}f}"
    if strip and digits:
        text = text.rstrip("0").rstrip(".")
    text = text.replace(",", "\u202f")
    return text.replace(".", ",") if lang == "de" else text


def fmt_age(lang: str, ts_ms: int | None, now_ms: int) -> str:
    if ts_ms is None:
        return translate(lang, "age.never")
    s = max(0, (now_ms - ts_ms) // 1000)
    if s < 120:
        return translate(lang, "age.seconds", n=s)
    if s < 7200:
        return translate(lang, "age.minutes", n=s // 60)
    if s < 172800:
        return translate(lang, "age.hours", n=s // 3600)
    return translate(lang, "age.days", n=s // 86400)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"))
    return env


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """The page `template` in the request's language; context gets _, ts, num, age, lang,
    path and (when signed in) me, csrf and may from request.state.session."""
    lang = lang_of(request)
    session = getattr(request.state, "session", None)
    now_ms = request.app.state.settings.clock()

    def may(role: str) -> bool:
        return session is not None and session.principal.may(role)

    ctx = {
        "_": lambda key, **kw: translate(lang, key, **kw),
        # a translation when there is one (alert kinds, quantities), else the name as it is
        "_opt": lambda key, fallback: messages(lang).get(key, fallback),
        "ts": lambda v: fmt_ts(lang, v),
        "num": lambda v, digits=None: fmt_num(lang, v, digits),
        "age": lambda v: fmt_age(lang, v, now_ms),
        "lang": lang,
        "langs": LANGS,
        "path": request.url.path,
        "full_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "session": session,
        "me": session.principal if session else None,
        "csrf": session.csrf if session else getattr(request.state, "login_csrf", ""),
        "may": may,
        "now_ms": now_ms,
        **context,
    }
    html = environment().get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code)

"""Configuration editor (form and raw view, inline validation errors, diff, history, roll
back) and rollouts (list, create, progress per state, halt/resume/cancel). Everything goes
through fleet/config_service.py and fleet/rollouts.py, as the API's config router does."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleet import audit, auth, config_service, rollouts
from fleet.api import queries as q
from fleet.db import tables as t
from fleet.ui import common as c
from fleet.ui import configform
from fleet.ui.web import lang_of, render, translate

router = APIRouter()


def _history(conn: Any, gateway_id: str) -> list[config_service.StoredDocument]:
    docs, _ = config_service.history(conn, gateway_id, 50, 0)
    return docs


def _editor(
    request: Request,
    gateway_id: str,
    *,
    view: str,
    draft: dict[str, Any] | None = None,
    raw_text: str | None = None,
    errors: list[str] | None = None,
    status: int = 200,
    comment: str = "",
) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    with cx.ro() as conn:
        gw = c.found(q.get_gateway(conn, s.principal.org_id, gateway_id[:64]))
        try:
            current = config_service.get_document(conn, gateway_id)
        except config_service.UnknownVersion:
            current = None
        history = _history(conn, gateway_id)
        diff_from = c.form_int(request.query_params, "from")  # type: ignore[arg-type]
        diff = None
        if diff_from is not None and current is not None:
            try:
                old = config_service.get_document(conn, gateway_id, diff_from)
                diff = {"from": old.version, "to": current.version,
                        "changes": [d for d in config_service.diff(old.doc, current.doc)
                                    if d["path"] != "version"]}  # fmt: skip
            except config_service.UnknownVersion:
                diff = None
    base = current.doc if current else {}
    shown = draft if draft is not None else base
    by_path, general = configform.errors_by_path(errors or [])
    field_list = configform.fields(shown)
    known = {f.path for f in field_list}
    # a problem at a path without its own field (a whole meter, a missing key) is listed above
    for path, messages in by_path.items():
        if path not in known:
            general += [f"{path}: {m}" for m in messages]
    pending_diff = None
    if draft is not None and current is not None:
        pending_diff = [d for d in config_service.diff(current.doc, {**draft, "version": current.version,
                        "gateway": gateway_id}) if d["path"] not in ("version",)]  # fmt: skip
    return render(
        request,
        "config.html",
        {"gw": gw, "current": current, "history": history, "view": view,
         "fields": field_list, "field_errors": by_path, "general_errors": general,
         "raw": raw_text if raw_text is not None else json.dumps(
             {k: v for k, v in shown.items() if k != "version"}, indent=2, ensure_ascii=False),
         "diff": diff, "pending_diff": pending_diff, "comment": comment,
         "done": request.query_params.get("done")},
        status,
    )  # fmt: skip


@router.get("/gateways/{gateway_id}/config")
def config_page(request: Request, gateway_id: str) -> Response:
    view = "raw" if request.query_params.get("view") == "raw" else "form"
    return _editor(request, gateway_id, view=view)


@router.post("/gateways/{gateway_id}/config")
async def save_config(request: Request, gateway_id: str) -> Response:
    s, form = await c.post_form(request, auth.OPERATOR)
    me = s.principal
    lang = lang_of(request)
    view = "raw" if form.get("view") == "raw" else "form"
    comment = c.form_str(form, "comment", max_len=500)
    preview = form.get("action") == "preview"
    cx = c.ctx(request)
    raw_text = None
    errors: list[str] = []

    def load() -> tuple[dict[str, Any], dict[str, Any]]:
        with cx.ro() as conn:
            gw = c.found(q.get_gateway(conn, me.org_id, gateway_id[:64]))
            try:
                return gw, config_service.get_document(conn, gateway_id).doc
            except config_service.UnknownVersion:
                return gw, {}

    gw, current = await run_in_threadpool(load)
    if view == "raw":
        raw_text = c.form_str(form, "raw", max_len=1_000_000)
        try:
            doc = json.loads(raw_text)
        except ValueError as e:
            doc = None
            errors.append(translate(lang, "config.bad_json", detail=str(e)))
        if doc is not None and not isinstance(doc, dict):
            errors.append(translate(lang, "config.not_object"))
            doc = None
    else:
        posted = {k: v for k, v in form.items() if isinstance(v, str) and k.startswith("f:")}
        doc = configform.from_form(current, posted)
    if doc is not None:
        doc.pop("version", None)
        doc["gateway"] = gateway_id
    if doc is not None and gw["status"] in ("revoked", "rejected"):
        errors.append(translate(lang, "config.gateway_locked", status=gw["status"]))
    if doc is not None and not errors:
        problems = config_service.validate({**doc, "version": 1})
        if problems:
            errors += problems
        elif not preview:

            def store() -> int:
                with cx.tx() as conn:
                    stored, _ = config_service.set_desired(
                        conn, gateway_id, doc, cx.now_ms, me.user_id, comment
                    )
                    audit.record(conn, me, "config.set", f"gateway:{gateway_id}", cx.now_ms,
                                 {"version": stored.version, "via": "ui"})  # fmt: skip
                    return stored.version

            try:
                version = await run_in_threadpool(store)
            except config_service.ConfigInvalid as e:
                errors += e.errors
            else:
                return c.redirect(f"{c.PREFIX}/gateways/{gateway_id}/config", done=str(version),
                                  view=view)  # fmt: skip
    return await run_in_threadpool(
        lambda: _editor(
            request, gateway_id, view=view, draft=doc if doc is not None else None,
            raw_text=raw_text, errors=errors, status=422 if errors else 200, comment=comment,
        )
    )  # fmt: skip


@router.post("/gateways/{gateway_id}/config/rollback")
async def rollback(request: Request, gateway_id: str) -> Response:
    s, form = await c.post_form(request, auth.OPERATOR)
    me = s.principal
    version = c.form_int(form, "version")
    cx = c.ctx(request)

    def go() -> int:
        with cx.tx() as conn:
            gw = c.found(q.get_gateway(conn, me.org_id, gateway_id[:64]))
            if version is None or gw["status"] in ("revoked", "rejected"):
                raise c.UiNotFound()
            try:
                stored, _ = config_service.rollback_to(
                    conn, gateway_id, version, cx.now_ms, me.user_id
                )
            except config_service.UnknownVersion:
                raise c.UiNotFound() from None
            audit.record(conn, me, "config.rollback", f"gateway:{gateway_id}", cx.now_ms,
                         {"to": version, "version": stored.version, "via": "ui"})  # fmt: skip
            return stored.version

    new = await run_in_threadpool(go)
    return c.redirect(f"{c.PREFIX}/gateways/{gateway_id}/config", done=str(new))


# --- rollouts ---------------------------------------------------------------------------------


def _progress(r: dict[str, Any]) -> dict[str, Any]:
    total = sum(r["counts"].values()) or 1
    done = r["counts"]["applied"] + r["counts"]["failed"] + r["counts"]["rolled_back"]
    return {**r, "total": sum(r["counts"].values()), "done_share": round(100 * done / total)}


@router.get("/rollouts")
def rollouts_page(request: Request) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    state = request.query_params.get("state")
    state = state if state in t.ROLLOUT_STATES else None
    with cx.ro() as conn:
        ids, total = rollouts.list_ids(conn, s.principal.org_id, state, 100, 0)
        items = [_progress(rollouts.get(conn, i)) for i in ids]
        sites, _ = q.list_sites(conn, s.principal.org_id, None, 1000, 0)
    return render(
        request,
        "rollouts.html",
        {"rollouts": items, "total": total, "state": state, "states": t.ROLLOUT_STATES,
         "sites": sites, "errors": [], "values": {}},
    )  # fmt: skip


@router.post("/rollouts")
async def create_rollout(request: Request) -> Response:
    s, form = await c.post_form(request, auth.OPERATOR)
    me = s.principal
    lang = lang_of(request)
    errors: list[str] = []
    values = {k: c.form_str(form, k, max_len=100_000) for k in
              ("name", "patch", "tags", "site", "gateways", "batch_percent", "failure_percent")}  # fmt: skip
    try:
        patch = json.loads(values["patch"] or "{}")
    except ValueError as e:
        patch = None
        errors.append(translate(lang, "rollout.bad_json", detail=str(e)))
    site = c.form_int(form, "site")
    share = c.form_int(form, "batch_percent")
    threshold = c.form_int(form, "failure_percent", 10)
    cx = c.ctx(request)
    if patch is not None:

        def create() -> int | None:
            with cx.tx() as conn:
                if site is not None and q.get_site(conn, me.org_id, site) is None:
                    errors.append(translate(lang, "claims.bad_site"))
                    return None
                try:
                    rid = rollouts.create(
                        conn, me.org_id, patch, cx.now_ms, name=values["name"][:200],
                        gateway_ids=c.split_tags(values["gateways"]) or None,
                        site_ids=[site] if site is not None else None,
                        tags=c.split_tags(values["tags"]) or None,
                        batch_share=(min(100, share) / 100 if share else None),
                        failure_threshold=min(100, threshold or 0) / 100, created_by=me.user_id,
                    )  # fmt: skip
                except rollouts.RolloutError as e:
                    errors.append(str(e))
                    return None
                except config_service.ConfigInvalid as e:
                    errors.extend(e.errors)
                    return None
                audit.record(conn, me, "rollout.create", f"rollout:{rid}", cx.now_ms,
                             {"name": values["name"], "patch": patch, "via": "ui"})  # fmt: skip
                return int(rid)

        rid = await run_in_threadpool(create)
        if rid is not None:
            return c.redirect(f"{c.PREFIX}/rollouts/{rid}", done="created")
    with cx.ro() as conn:
        ids, total = rollouts.list_ids(conn, me.org_id, None, 100, 0)
        items = [_progress(rollouts.get(conn, i)) for i in ids]
        sites, _ = q.list_sites(conn, me.org_id, None, 1000, 0)
    return render(
        request,
        "rollouts.html",
        {"rollouts": items, "total": total, "state": None, "states": t.ROLLOUT_STATES,
         "sites": sites, "errors": errors, "values": values},
        422,
    )  # fmt: skip


def _rollout(conn: Any, org_id: int, rollout_id: int) -> dict[str, Any]:
    try:
        return _progress(rollouts.get(conn, rollout_id, org_id))
    except rollouts.UnknownRollout:
        raise c.UiNotFound() from None


@router.get("/rollouts/{rollout_id}")
def rollout_page(request: Request, rollout_id: int) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    with cx.ro() as conn:
        r = _rollout(conn, s.principal.org_id, rollout_id)
        targets = rollouts.targets(conn, rollout_id)
    return render(
        request,
        "rollout.html",
        {"r": r, "targets": targets, "states": t.TARGET_STATES,
         "done": request.query_params.get("done"), "error": None},
    )  # fmt: skip


@router.post("/rollouts/{rollout_id}/{verb}")
async def control(request: Request, rollout_id: int, verb: str) -> Response:
    if verb not in ("halt", "resume", "cancel"):
        raise c.UiNotFound()
    s, _ = await c.post_form(request, auth.OPERATOR)
    cx = c.ctx(request)

    def go() -> str | None:
        with cx.tx() as conn:
            _rollout(conn, s.principal.org_id, rollout_id)
            try:
                getattr(rollouts, verb)(conn, rollout_id, cx.now_ms)
            except rollouts.RolloutError as e:
                return str(e)
            audit.record(conn, s.principal, f"rollout.{verb}", f"rollout:{rollout_id}", cx.now_ms)
        return None

    error = await run_in_threadpool(go)
    if error is None:
        return c.redirect(f"{c.PREFIX}/rollouts/{rollout_id}", done=verb)
    with cx.ro() as conn:
        r = _rollout(conn, s.principal.org_id, rollout_id)
        targets = rollouts.targets(conn, rollout_id)
    return render(
        request, "rollout.html",
        {"r": r, "targets": targets, "states": t.TARGET_STATES, "done": None, "error": error},
        409,
    )  # fmt: skip

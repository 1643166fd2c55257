"""The claim token label a technician sticks on the gateway (or takes to site): a QR code of
the token text (made with qrcode), the gateway id, site and expiry, as PNG, HTML and PDF."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import qrcode
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"


def qr_png(text: str, box_px: int = 8) -> bytes:
    """A PNG of a QR code holding text (error correction M, a 4-module quiet zone)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_px, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image().save(buf, format="PNG")
    return buf.getvalue()


def environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def utc_text(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts_ms / 1000))


def write_label(out: Path, token: str, info: dict[str, Any], pdf: bool = True) -> dict[str, Path]:
    """label.png, label.html (and label.pdf) in out; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    png = qr_png(token)
    fields = {
        "token": token,
        "gateway_id": info.get("gateway_id"),
        "site": info.get("site"),
        "label": info.get("label"),
        "expires": utc_text(info.get("expires_ts_ms")),
    }
    paths = {"png": out / "label.png", "html": out / "label.html"}
    paths["png"].write_bytes(png)
    html = (
        environment()
        .get_template("label.html")
        .render(qr_png_b64=base64.b64encode(png).decode(), **fields)
    )
    paths["html"].write_text(html)
    if pdf:
        paths["pdf"] = out / "label.pdf"
        _label_pdf(paths["pdf"], png, fields)
    return paths


def _label_pdf(path: Path, png: bytes, f: dict[str, Any]) -> None:
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=(90 * mm, 50 * mm))
    c.drawImage(ImageReader(io.BytesIO(png)), 3 * mm, 6 * mm, 38 * mm, 38 * mm)
    y = 42 * mm
    c.setFont("Helvetica-Bold", 10)
    c.drawString(44 * mm, y, f["gateway_id"] or "new gateway")
    c.setFont("Helvetica", 7.5)
    for line in (
        f"Site: {f['site']}" if f["site"] else "",
        f["label"] or "",
        f"Valid until {f['expires']}",
        "Single use; scan to read it.",
    ):
        if line:
            y -= 4.2 * mm
            c.drawString(44 * mm, y, line[:40])
    c.setFont("Courier", 5)
    token = f["token"]
    for i in range(0, len(token), 28):
        y -= 3 * mm
        c.drawString(44 * mm, y, token[i : i + 28])
    c.showPage()
    c.save()

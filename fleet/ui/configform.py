"""The configuration editor's form view: a document as a list of fields named by their path in
the schema's notation (meters[0].unit), and the document back from a posted form. Values
keep the type they had (a field that does not parse stays text, so the schema names it);
structure (adding a meter) is the raw view's job. Validation is protocols' schema's."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    path: str
    kind: str  # int, float, bool, str, null, list (of scalars, comma separated)
    value: Any
    depth: int

    @property
    def text(self) -> str:
        if self.kind == "list":
            return ", ".join(str(v) for v in self.value)
        if self.kind == "null" or self.value is None:
            return ""
        if self.kind == "bool":
            return "true" if self.value else "false"
        return str(self.value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if value is None:
        return "null"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return "list"
    return "str"


def fields(doc: Any, path: str = "", depth: int = 0) -> list[Field]:
    """Every editable leaf of doc, in document order ("version" and "gateway" are the
    fleet's to set and are left out)."""
    out: list[Field] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if not path and key in ("version", "gateway"):
                continue
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict) or (isinstance(value, list) and _kind(value) != "list"):
                out += fields(value, sub, depth + 1)
            else:
                out.append(Field(sub, _kind(value), value, depth))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += fields(value, f"{path}[{i}]", depth + 1)
    return out


def _parse(kind: str, text: str, old: Any) -> Any:
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text.replace(",", "."))
        if kind == "bool":
            return {"true": True, "false": False}.get(text.lower(), text)
        if kind == "null":
            return None if text == "" else json.loads(text)
        if kind == "list":
            items = [t.strip() for t in text.split(",") if t.strip()]
            if old and all(isinstance(v, int) and not isinstance(v, bool) for v in old):
                return [int(t) if t.lstrip("-").isdigit() else t for t in items]
            return items
    except ValueError:
        return text  # the schema says what is wrong with it, at this path
    return text


def _set(doc: Any, path: str, value: Any) -> None:
    """Set the leaf at a path made by fields()."""
    parts: list[str | int] = []
    for dotted in path.split("."):
        name, _, rest = dotted.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    node = doc
    for key in parts[:-1]:
        node = node[key]  # type: ignore[index]
    node[parts[-1]] = value  # type: ignore[index]


def from_form(current: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The document current with each of its fields replaced by the posted text (missing
    fields keep their value)."""
    doc = copy.deepcopy(current)
    for f in fields(current):
        key = "f:" + f.path
        if key in form:
            _set(doc, f.path, _parse(f.kind, form[key], f.value))
    doc.pop("version", None)
    return doc


def errors_by_path(errors: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """("path: problem" strings of the schema) -> ({path: [problems]}, problems without a
    path); a problem of a whole object (meters[0]) is kept under that object's path."""
    by_path: dict[str, list[str]] = {}
    general: list[str] = []
    for text in errors:
        path, sep, message = text.partition(": ")
        if sep and path and " " not in path:
            by_path.setdefault(path, []).append(message)
        else:
            general.append(text)
    return by_path, general

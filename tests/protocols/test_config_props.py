"""Property tests of the configuration validator, and the check that docs/config.md describes
every field of the schema (CPython only)."""

import copy
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from protocols import config, schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


def _example():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
    from test_config import example

    return example()


def _paths(node, prefix=""):
    """Every field path of a schema: buses[].baud, meters[].id, uplink.batch_interval_s, ..."""
    kind = node[0]
    if kind == "null":
        yield from _paths(node[1], prefix)
    elif kind == "list":
        yield from _paths(node[1], prefix + "[]")
    elif kind == "union":
        yield prefix + "." + node[1]
        for _, variant in node[2]:
            yield from _paths(variant, prefix)
    elif kind == "obj":
        for field in node[1]:
            path = (prefix + "." if prefix else "") + field[0]
            yield path
            yield from _paths(field[1], path)


@given(json_values)
def test_validator_never_raises_on_arbitrary_documents(doc):
    errors = config.validate_config(doc, {"sdm630"}, {"cayenne_lpp"})
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
    if not isinstance(doc, dict):
        assert errors


@given(st.data())
def test_validator_never_raises_when_parts_of_a_valid_document_are_replaced(data):
    doc = _example()
    for _ in range(data.draw(st.integers(1, 3))):
        target = doc
        path = []
        while isinstance(target, (dict, list)) and target and data.draw(st.booleans()):
            key = data.draw(
                st.sampled_from(sorted(target) if isinstance(target, dict) else range(len(target)))
            )
            path.append(key)
            if not isinstance(target[key], (dict, list)):
                break
            target = target[key]
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target)))
            target[key] = data.draw(json_values)
        elif isinstance(target, list) and target:
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(json_values)
    errors = config.validate_config(doc)
    assert all(isinstance(e, str) and ": " in e for e in errors)
    if not errors:
        normalised = config.check_config(doc)
        assert config.validate_config(normalised) == []


def test_defaults_are_valid_and_normalising_is_idempotent():
    doc = config.check_config(_example())
    assert config.validate_config(doc) == []
    assert config.check_config(copy.deepcopy(doc)) == doc


def test_docs_describe_every_field():
    text = DOCS.read_text()
    documented = set(re.findall(r"`([a-z_\[\]\.]+)`", text))
    missing = [p for p in _paths(config.config_schema()) if p not in documented]
    assert not missing, "docs/config.md does not describe: " + ", ".join(missing)


def test_schema_language_reports_unknown_kinds():
    errors = []
    schema.validate(1, ("nope",), "x", errors)
    assert errors == ["x: schema error, unknown kind 'nope'"]

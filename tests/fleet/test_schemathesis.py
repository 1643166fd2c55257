"""schemathesis against the OpenAPI schema of the API, in process (ASGI), as an admin: no
generated request of any operation gets a 5xx answer. A bounded number of examples per
operation keeps it under a minute; runs on SQLite and PostgreSQL (NUL characters and 64-bit
integers are where the two differ)."""

from __future__ import annotations

import schemathesis
from api_helpers import make_org
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from fleet.api import ApiSettings, create_app

EXAMPLES_PER_OPERATION = 8


def _order(op: object) -> tuple[int, str]:
    # Reads first; deletions and logout (which revokes the token in use) last.
    method, path = op.method.upper(), op.path  # type: ignore[attr-defined]
    rank = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}[method]
    return (3 if path.endswith("/auth/logout") else rank, path)


def test_no_operation_answers_with_a_server_error(db: Engine) -> None:
    org = make_org(db, "town-a", roles=("admin",))
    app = create_app(ApiSettings(db, "mqtt://127.0.0.1:1883"))
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=_order)
    assert len(operations) >= 40
    headers = {"Authorization": f"Bearer {org.tokens['admin']}"}
    failures: list[str] = []
    answered: set[int] = set()

    for op in operations:

        @given(op.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            answered.add(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )

        run()
    assert not failures, "\n".join(failures[:20])
    assert {200, 201, 404, 422} <= answered  # the generated requests did reach the handlers

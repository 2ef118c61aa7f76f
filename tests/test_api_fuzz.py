"""schemathesis against /openapi.json: generated requests to every operation,
through the app on a real PostgreSQL; no 5xx, and every answer conforms to
the document (status, content type, body)."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# 10 operations x up to 200 examples (small operations run out sooner): over 1000 requests.
EXAMPLES_PER_OPERATION = 200
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)


def test_generated_requests_get_no_5xx_and_documented_answers(app, headers):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            nonlocal calls
            response = case.call(headers=headers)
            calls += 1
            case.validate_response(response, checks=CHECKS)

        check()
    print(f"schemathesis: {calls} generated requests")  # docs/guarantees.md quotes it (pytest -rP)
    assert calls >= 1000

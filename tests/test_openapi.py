"""/openapi.json and /docs (app/web/openapi.py): a valid document that names every
route, real answers that conform to it, and a docs page whose assets load."""

import re

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.support import auth_headers, post_bulk

IGNORED_METHODS = {"HEAD", "OPTIONS"}
DOCS_ASSETS = "/docs/<path:path>"  # Swagger UI's own files, not part of the API


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_the_document_names_every_route_and_method_the_app_serves(app, document):
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in app.url_map.iter_rules() if rule.rule != DOCS_ASSETS
              for method in rule.methods - IGNORED_METHODS}
    served.discard(("/docs/", "GET"))  # the same page as /docs
    documented = {(path, method.upper()) for path, operations in document["paths"].items()
                  for method in operations}
    assert served == documented


def test_writes_and_reads_say_which_scope_they_need(document):
    scopes = {(path, method): operation.get("x-required-scope")
              for path, operations in document["paths"].items()
              for method, operation in operations.items()}
    assert scopes[("/contacts/bulk-update", "post")] == "contacts:write"
    assert scopes[("/contacts", "get")] == "contacts:read"
    assert all(document["paths"][p]["get"]["security"] == [] for p in ("/health", "/ready"))


def conforms(document: dict, path: str, method: str, response) -> None:
    """The answer's status is documented for the operation and its body fits the schema."""
    responses = document["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (path, method, response.status_code)
    schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
    if "$ref" not in schema and "oneOf" not in schema:
        schema = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    OAS31Validator({**schema, "components": document["components"]}).validate(response.get_json())


def test_real_answers_conform_to_the_document(client, headers, document, tenant, make_token):
    post_bulk(client, headers, [{"externalId": "b", "email": "b@example.com"}])
    bulk = [{"externalId": "a", "email": "A@Example.com", "attributes": {"n": 1.5, "t": True}},
            {"externalId": "x", "email": "bad@"},
            {"externalId": "b", "email": "a@example.com"},
            {"userId": 17}]
    samples = [
        ("/contacts/bulk-update", "post",
         post_bulk(client, headers, bulk, returnResults=True)),
        ("/contacts/bulk-update", "post", post_bulk(client, headers, [])),
        ("/contacts/bulk-update", "post", post_bulk(client, headers, bulk, atomic=True)),
        ("/contacts/bulk-update", "post", post_bulk(client, {}, bulk)),
        ("/contacts/bulk-update", "post",
         client.post("/contacts/bulk-update", data="x", headers=headers)),
        ("/v1/contacts/bulk-update", "post",
         post_bulk(client, headers, [{"userId": "u1", "customFields": {"c": "x"}}],
                   url="/v1/contacts/bulk-update")),
        ("/contacts/bulk", "post", post_bulk(client, headers, bulk, url="/contacts/bulk")),
        ("/contacts/bulk", "post",
         post_bulk(client, auth_headers(make_token(tenant, scopes=("contacts:read",))), bulk,
                   url="/contacts/bulk")),
        ("/contacts", "post", client.post("/contacts", json={"externalId": "n"}, headers=headers)),
        ("/contacts", "post", client.post("/contacts", json={"externalId": "n"}, headers=headers)),
        ("/contacts", "post", client.post("/contacts", json={"email": "bad@"}, headers=headers)),
        ("/contacts", "post",
         client.post("/contacts", json={"externalId": "b", "email": "a@example.com"}, headers=headers)),
        ("/contacts", "get", client.get("/contacts?email=a@example.com", headers=headers)),
        ("/contacts", "get", client.get("/contacts?limit=2", headers=headers)),
        ("/contacts", "get", client.get("/contacts?cursor=nope", headers=headers)),
        ("/contacts/{contact_id}", "get", client.get("/contacts/1", headers=headers)),
        ("/contacts/{contact_id}", "get", client.get("/contacts/424242", headers=headers)),
        ("/contacts/bulk-update", "post",
         post_bulk(client, {**headers, "Idempotency-Key": "k"}, [{"externalId": "k1"}])),
        ("/contacts/bulk-update", "post",
         post_bulk(client, {**headers, "Idempotency-Key": "k"}, [{"externalId": "k2"}])),
        ("/health", "get", client.get("/health")),
        ("/ready", "get", client.get("/ready")),
    ]
    statuses = set()
    for path, method, response in samples:
        conforms(document, path, method, response)
        statuses.add(response.status_code)
    assert statuses == {200, 201, 400, 401, 403, 404, 409, 415, 422}  # the samples cover what they claim


def test_the_docs_page_renders_from_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html
    assets = re.findall(r'(?:href|src)="(/docs/[^"]+)"', html)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(assets)
    assert not re.search(r'(?:href|src)="https?://', html)  # nothing from a CDN
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.get_data()) > 0, asset
    bundle = client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)
    assert re.search(r'PACKAGE_VERSION:"5\.', bundle)  # Swagger UI 5 renders OpenAPI 3.1


def door_limit(document: dict, path: str) -> int:
    """The maxItems a bulk door's request body documents for `contacts`."""
    body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return body["allOf"][1]["properties"]["contacts"]["maxItems"]


@pytest.mark.parametrize("bulk_max, expected", [(None, (1000, 1000, 100)), (50, (50, 50, 50))])
def test_each_bulk_door_documents_its_own_row_limit(make_app, bulk_max, expected):
    app = make_app(**({"BULK_MAX": bulk_max} if bulk_max else {}))
    document = app.test_client().get("/openapi.json").get_json()
    doors = ("/contacts/bulk-update", "/contacts/bulk", "/v1/contacts/bulk-update")
    assert tuple(door_limit(document, door) for door in doors) == expected

"""The service against its own OpenAPI description: schemathesis generates requests (valid and invalid) for
every operation, in process, and every check it has must pass: no 5xx, only declared statuses and content
types, bodies matching their schemas, invalid input refused and valid input accepted."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS

from rsitr.api.app import create_app
from rsitr.index import ArchiveIndex, BuildOptions
from support.index import CHIP_SETTINGS, make_archive, tiny_encoder


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract")
    root = make_archive(base / "archive", geotiff=False)
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    return create_app(index=index, max_upload_bytes=20_000, allowed_hosts=["testserver"])


@pytest.fixture(scope="module")
def api_schema(contract_app):
    # Two operations may refuse schema-valid input, with statuses declared in the description: the image
    # upload (whether bytes are an image, and how many pixels it has, is beyond what JSON Schema can say:
    # 413, 415) and the search (a query parameter schema cannot say "q or like, not both" (400), nor which
    # chip ids the index holds (404)); both read an area (GeoJSON, a box) and dates no string schema checks (400).
    config = schemathesis.Config.from_dict({"operations": [
        {"include-path": "/api/search/image",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "413", "415"]}}},
        {"include-path": "/api/search", "include-method": "GET",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404"]}}}]})
    return schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_contract(case):
    case.call_and_validate(checks=CHECKS.get_all())


JSON_ANSWERS = {("/api/info", "get"): {"Info"}, ("/api/search", "get"): {"SearchAnswer", "FoundAnswer"},
                ("/api/search/image", "post"): {"ImageSearchAnswer"}, ("/api/heatmap", "get"): {"Heatmap"},
                ("/api/chips/{chip_id}", "get"): {"ChipDetails"}}


def test_every_json_answer_is_described_by_its_model(contract_app):
    """The description names a model with typed fields for every JSON answer (so schemathesis checks the bodies
    against them), and Problem for every 4xx but FastAPI's own 422."""
    description = contract_app.openapi()
    models = description["components"]["schemas"]
    described = {}
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema.get("anyOf", [schema])} if schema else set()
                if status == "200" and refs:
                    described[path, method] = refs
                elif status.startswith("4"):
                    assert refs == ({"HTTPValidationError"} if status == "422" else {"Problem"}), (path, status)
    assert described == JSON_ANSWERS
    hit = models["Hit"]["properties"]
    assert hit["score"]["type"] == "number" and hit["window"]["$ref"].endswith("/Window")
    assert {"type": "null"} in hit["bounds"]["anyOf"] and models["FoundAnswer"]["properties"]["all"]["const"] is True

"""The ingress in process, with no Redis behind it: what is answered before Redis is needed, and when it is down.

Requests go through the whole ASGI stack (FastAPI's TestClient); Redis is a closed port, so every
answer here is one a client gets from a running ingress whose Redis is unreachable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from producers.ingress import IngressSettings, create_app
from sift.settings import SiftSettings

KEY = "unit-test-key-0123456789"
AUTH = {"X-API-Key": KEY}
LIMIT_BYTES = 16384
MAX_ITEMS = 5


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    settings = SiftSettings(redis_url="redis://127.0.0.1:1/0", queue_prefix="unit-ingress")
    ingress = IngressSettings(api_keys=KEY, max_request_bytes=LIMIT_BYTES, max_items_per_request=MAX_ITEMS)
    with TestClient(create_app(settings, ingress), raise_server_exceptions=False) as client:
        yield client


def job(**changes: Any) -> dict[str, Any]:
    return {"task": "classify", "items": [{"id": "a", "text": "fine"}], **changes}


def metric(http: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in http.get("/metrics").text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_health_is_open_and_alive(http: TestClient) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_not_ready_without_redis(http: TestClient) -> None:
    response = http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"status": "unavailable", "message": "Redis (queue and results store) does not answer"}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key: send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"),
        ({"X-API-Key": "wrong-key-0123456789"}, "the API key is not valid"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "the API key is not valid"),
        ({"Authorization": f"Basic {KEY}"}, "missing API key"),  # only Bearer carries a key
        ({"Authorization": "Bearer "}, "missing API key"),
    ],
)
def test_v1_needs_a_valid_key(http: TestClient, headers: dict[str, str], message: str) -> None:
    for response in (http.post("/v1/jobs", json=job(), headers=headers), http.get("/v1/jobs/j1", headers=headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
        assert response.json()["message"].startswith(message)


@pytest.mark.parametrize("headers", [AUTH, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}])
def test_a_valid_key_gets_past_auth_then_redis_down_is_a_clear_503(http: TestClient, headers: dict[str, str]) -> None:
    response = http.post("/v1/jobs", json=job(), headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {
        "error": "unavailable",
        "message": "the queue and results store (Redis) is unavailable: retry later",
    }
    assert http.get("/v1/jobs/j1/items/a", headers=headers).status_code == 503


def test_a_body_over_the_limit_by_content_length_is_413_before_auth(http: TestClient) -> None:
    body = json.dumps(job(items=[{"id": "a", "text": "x" * LIMIT_BYTES}]))
    response = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_a_streamed_body_over_the_limit_is_413(http: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced on the bytes read
        yield b'{"task": "classify", "items": [{"id": "a", "text": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}]}'

    response = http.post("/v1/jobs", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "message": "the request body is over the size limit (SIFT_MAX_REQUEST_BYTES)",
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (job(task="translate"), "body.task: Input should be 'classify', 'zero_shot', 'nli', 'rerank' or 'moderate'"),
        (job(items=[]), "body.items: List should have at least 1 item"),
        (job(items="not a list"), "body.items: Input should be a valid list"),
        (job(items=["just text"]), "body.items.0: Input should be a valid dictionary"),
        (job(lane="fast"), "body.lane: Input should be 'realtime' or 'bulk'"),
        (job(job_id="has spaces"), "body.job_id: String should match pattern"),
        (job(model=""), "body.model: String should have at least 1 character"),
        (job(model="\ud800"), "body.model: Input should be a valid string, unable to parse raw data"),
        (job(priority=1), "body.priority: Extra inputs are not permitted"),
        (job(callback_url="ftp://example.com/x"), "only http and https are allowed"),
        (job(callback_url="/relative"), "body.callback_url"),
        (job(callback_url="https://example.com/\udc00"), "body.callback_url: Input should be a valid string"),
        ([job()], "body: Input should be a valid dictionary"),
    ],
)
def test_a_malformed_envelope_is_422_with_a_clear_message(http: TestClient, body: Any, expected: str) -> None:
    # json.dumps escapes lone surrogates as JSON allows ("\ud800"); httpx would refuse to encode them.
    response = http.post("/v1/jobs", content=json.dumps(body), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert expected in answer["message"]
    assert answer["problems"] and all(set(problem) == {"loc", "msg", "type"} for problem in answer["problems"])


def test_too_many_items_is_422_and_says_how_to_split(http: TestClient) -> None:
    items = [{"id": str(i), "text": "x"} for i in range(MAX_ITEMS + 1)]
    response = http.post("/v1/jobs", json=job(items=items), headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {
        "error": "too_many_items",
        "message": f"{MAX_ITEMS + 1} items, over the limit of {MAX_ITEMS} per request: "
        "split the job over several requests with the same job_id, giving every item an id "
        "(positional ids restart at 0 in each request)",
    }


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"[NaN, Infinity]", b"", b"{", b"\xff\xfe", b"[" * 3000 + b"]" * 3000, b'{"n": 1' + b"0" * 5000 + b"}"],
)
def test_bodies_that_are_not_json_objects_never_500(http: TestClient, body: bytes) -> None:
    response = http.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] in ("invalid_json", "invalid_request")


def test_a_body_that_is_not_json_at_all_is_refused(http: TestClient) -> None:
    response = http.post("/v1/jobs", content=b"task=classify", headers={**AUTH, "Content-Type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/jobs/bad%20id", "path.job_id: String should match pattern"),
        ("/v1/jobs/j1?cursor=-1", "query.cursor: Input should be greater than or equal to 0"),
        ("/v1/jobs/j1?limit=100000", "query.limit: Input should be less than or equal to 1000"),
        (f"/v1/jobs/j1/items/{'x' * 300}", "path.item_id: String should have at most 256 characters"),
    ],
)
def test_bad_read_parameters_are_422(http: TestClient, path: str, expected: str) -> None:
    response = http.get(path, headers=AUTH)
    assert response.status_code == 422
    assert expected in response.json()["message"]


def test_unknown_routes_and_methods_answer_in_the_same_shape(http: TestClient) -> None:
    assert http.get("/v2/jobs", headers=AUTH).json() == {"error": "not_found", "message": "Not Found"}
    response = http.delete("/v1/jobs", headers=AUTH)
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_metrics_count_requests_by_route_template_and_status(http: TestClient) -> None:
    before = metric(http, "sift_ingress_requests_total", method="GET", route="/v1/jobs/{job_id}", status="401")
    for job_id in ("one", "two", "three"):
        http.get(f"/v1/jobs/{job_id}")
    after = metric(http, "sift_ingress_requests_total", method="GET", route="/v1/jobs/{job_id}", status="401")
    assert after == before + 3
    http.get("/nowhere/at/all")
    assert metric(http, "sift_ingress_requests_total", method="GET", route="<unmatched>", status="404") >= 1
    assert metric(http, "sift_ingress_request_duration_seconds_count", method="GET", route="/healthz") >= 0
    text = http.get("/metrics").text
    assert "/v1/jobs/one" not in text  # raw paths would make one series per job
    assert "sift_ingress_queue_full_total" in text and "sift_ingress_items_submitted_total" in text


def test_openapi_is_generated_from_the_contract(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/items/{item_id}", "/healthz"}
    components = schema["components"]
    assert {"ItemResult", "ErrorInfo", "SubmitRequest", "SubmitAccepted", "JobResults", "ApiError"} <= set(
        components["schemas"]
    )
    assert components["schemas"]["ErrorInfo"]["properties"]["code"]["$ref"].endswith("/ErrorCode")
    items = components["schemas"]["SubmitRequest"]["properties"]["items"]["items"]
    titles = {variant["title"] for variant in items["anyOf"]}
    assert "ClassifyItem (task classify)" in titles and "RerankItem (task rerank)" in titles
    assert all("id" not in variant["required"] for variant in items["anyOf"])
    submit = schema["paths"]["/v1/jobs"]["post"]
    assert {"202", "401", "413", "422", "429", "503"} <= set(submit["responses"])
    assert submit["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")
    assert {"HTTPBearer", "APIKeyHeader"} <= set(components["securitySchemes"])
    assert "security" not in schema["paths"]["/healthz"]["get"]

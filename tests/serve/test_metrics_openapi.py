"""/metrics parses as Prometheus text and counts what happened; OpenAPI lists every route."""

from __future__ import annotations

import re

from tests.serve.conftest import Api

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\+Inf|-Inf|NaN))$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by metric name; fails on any line that is not a comment or a valid sample."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(match["labels"] or ""))
        name = match["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no # TYPE line"
        samples.setdefault(name, []).append((labels, float(match["value"])))
    return samples


def test_metrics_count_requests_latency_feedback_and_decisions(api: Api) -> None:
    api.seed()
    arms = []
    for _ in range(3):
        chosen = api.select()
        api.complete(chosen["generation_id"])
        assert api.rate(chosen["generation_id"], 1).status_code == 201
        arms.append(chosen["arm"]["name"])
    api.call("GET", "/v1/generations/gen_nope")
    samples = parse(api.client.get("/metrics").text)

    requests = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in samples["prefloop_http_requests_total"]
    }
    assert requests[("POST", "/v1/select", "200")] == 3
    assert requests[("POST", "/v1/feedback", "201")] == 3
    assert requests[("GET", "/v1/generations/{generation_id}", "404")] == 1
    buckets = [
        (labels["le"], value)
        for labels, value in samples["prefloop_http_request_duration_seconds_bucket"]
        if labels["route"] == "/v1/select"
    ]
    assert buckets[-1] == ("+Inf", 3) and [v for _, v in buckets] == sorted(v for _, v in buckets)
    feedback = {
        labels["kind"]: value for labels, value in samples["prefloop_feedback_events_total"]
    }
    assert feedback == {"rating": 3}
    decisions = {
        labels["arm"]: value for labels, value in samples["prefloop_bandit_decisions_total"]
    }
    assert decisions == {arm: arms.count(arm) for arm in set(arms)}


def test_openapi_lists_every_route_with_its_security(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/tasks": {"get", "post"},
        "/v1/tasks/{task}": {"get"},
        "/v1/tasks/{task}/arms": {"get", "post"},
        "/v1/tasks/{task}/arms/{arm}/labels": {"put"},
        "/v1/tasks/{task}/arms/{arm}/retire": {"post"},
        "/v1/select": {"post"},
        "/v1/generate": {"post"},
        "/v1/generations/{generation_id}": {"get"},
        "/v1/generations/{generation_id}/output": {"post"},
        "/v1/feedback": {"post"},
        "/v1/stats": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }
    assert set(paths) == set(expected)
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    assert paths["/v1/select"]["post"]["security"], "key-protected routes declare their security"
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    feedback = spec["components"]["schemas"]["FeedbackRequest"]["properties"]["event"]
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in feedback["oneOf"]}
    assert kinds == {"RatingEvent", "ThumbsEvent", "RegenerateEvent", "PairwiseEvent",
                     "RankingEvent", "EditEvent"}  # fmt: skip

"""packaging/grafana/s3orch.json: every query names metrics (and labels) this build exports.

The names are collected from the registry after the gateway's modules are imported (so every
metric module has registered its collectors); a Prometheus sample name is a family's name plus
its type's suffix (``_total`` of a counter, ``_bucket``/``_sum``/``_count`` of a histogram).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import s3orch.tap  # noqa: F401  # imports every module that defines a metric
from s3orch.observe.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "s3orch.json"
#: Labels Prometheus adds to every scraped series (not the gateway's).
TARGET_LABELS = {"instance", "job"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_METRIC = re.compile(r"\b(s3o_[a-zA-Z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exported() -> dict[str, set[str]]:
    """Sample name -> the label names the build gives it."""
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        labels: set[str] = set()
        for collector_name, collector in REGISTRY._names_to_collectors.items():
            if collector_name == family.name or collector_name.startswith(family.name + "_"):
                labels |= set(getattr(collector, "_labelnames", ()))
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (panel["title"], target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    found += [(f"variable {v['name']}", v["definition"]) for v in dashboard["templating"]["list"]]
    return found


def test_the_exported_names_include_the_ones_this_test_relies_on() -> None:
    names = exported()
    assert "s3o_requests_total" in names and "s3o_request_duration_seconds_bucket" in names
    assert names["s3o_backend_requests_total"] == {"operation", "backend", "status"}
    assert "s3o_quota_bytes_used" in names and "s3o_quota_bytes_used_total" not in names


def test_every_panel_query_names_metrics_and_labels_the_build_exports(dashboard: dict[str, Any]) -> None:
    names = exported()
    problems = []
    seen: set[str] = set()
    for title, expr in queries(dashboard):
        metrics = _METRIC.findall(expr)
        if not metrics:
            problems.append(f"{title}: no s3o_ metric in {expr!r}")
        for name, selector in metrics:
            seen.add(name)
            if name not in names:
                problems.append(f"{title}: {name} is not exported")
                continue
            unknown = set(_MATCHER.findall(selector)) - names[name] - TARGET_LABELS
            if unknown:
                problems.append(f"{title}: {name} has no label {sorted(unknown)}")
        for label in re.findall(r"\bby \(([^)]*)\)", expr):
            wanted = {part.strip() for part in label.split(",")} - TARGET_LABELS
            if not any(wanted <= names.get(name, set()) for name, _ in metrics):
                problems.append(f"{title}: no metric of {expr!r} has the labels {sorted(wanted)}")
    assert problems == []
    # The dashboard covers what the issue asks for.
    for covered in ("s3o_requests_total", "s3o_request_duration_seconds_bucket", "s3o_backend_requests_total",
                   "s3o_backend_duration_seconds_bucket", "s3o_quota_bytes_used", "s3o_quota_bytes_limit",
                   "s3o_cleanup_queue_depth", "s3o_admission_rejections_total"):
        assert covered in seen, covered


def test_every_panel_uses_the_templated_prometheus_datasource(dashboard: dict[str, Any]) -> None:
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    templated = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == templated, panel["title"]
        assert panel["targets"] and all(t["datasource"] == templated for t in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))

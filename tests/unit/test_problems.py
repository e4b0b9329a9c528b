"""Problems as data: one rendering, a round trip through plain data, relocation onto a source object."""

from __future__ import annotations

import json

from ansible_collections.portico.gateway.plugins.module_utils.model.problems import (
    FieldSources,
    Problem,
    Report,
    field_path,
    from_data,
    render,
    to_data,
)


def test_rendering_is_object_field_message_and_skips_what_is_empty():
    assert Problem("web", "ports[0].port", "0 is out of range 1-65535").render() == "web: ports[0].port: 0 is out of range 1-65535"
    assert str(Problem("pool a", "", "expected a mapping")) == "pool a: expected a mapping"
    assert render([Problem("", "", "BGP router-id clash: gw1, gw2 all use 198.18.0.11")]) == [
        "BGP router-id clash: gw1, gw2 all use 198.18.0.11"]


def test_problems_survive_plain_data():
    problems = [Problem("lab/default/echo", "metadata.annotations['portico.io/pool']", "unknown pool 'x'"),
                Problem("lab/default/echo", "", "no ready endpoints")]
    assert from_data(json.loads(json.dumps(to_data(problems)))) == problems
    # Anything else becomes the message of a problem about the given object.
    assert from_data(["free text"], "lab/default/echo") == [Problem("lab/default/echo", "", "free text")]


def test_field_paths_have_one_spelling():
    assert field_path("ports", 0, "port") == "ports[0].port"
    assert field_path("spec", "ports", 2, "nodePort") == "spec.ports[2].nodePort"
    assert field_path("", "vip") == "vip"
    assert field_path("clusters[1]", "name") == "clusters[1].name"


def test_field_sources_move_a_mapped_problem_to_the_source_object():
    sources = FieldSources("lab/default/echo", {"ports[0].port": "spec.ports[3].port"})
    moved = sources.locate(Problem("lab/default/echo/ipv6", "ports[0].port", "70000 is out of range 1-65535"))
    assert moved == Problem("lab/default/echo", "spec.ports[3].port", "70000 is out of range 1-65535")
    unmapped = Problem("lab/default/echo/ipv6", "backends[0].address", "x")
    assert sources.locate(unmapped) is unmapped


def test_a_report_keeps_problems_and_warnings_apart():
    report = Report("lab/default/echo")
    report.problem("spec.ports", "the Service has no ports")
    report.warning("backends", "no ready backends", subject="lab/default/echo/ipv6")
    assert render(report.problems) == ["lab/default/echo: spec.ports: the Service has no ports"]
    assert render(report.warnings) == ["lab/default/echo/ipv6: backends: no ready backends"]

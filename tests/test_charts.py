"""Inline SVG charts: valid SVG, accessible labels, escaping, determinism, limit lines."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from fastflow.site import charts
from fastflow.site.charts import Bar, LimitLine

NS = {"svg": charts.SVG_NS}
MIB = 1024 * 1024


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on malformed XML
    assert root.tag == f"{{{charts.SVG_NS}}}svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.find("svg:title", NS).text == root.get("aria-label")
    return root


def test_sparkline_has_one_bar_per_run_coloured_by_status():
    bars = [Bar(10.0, "succeeded", "r1: 10 s"), Bar(None, "failed", "r2"), Bar(20.0, "oom_killed")]
    root = parse(charts.sparkline(bars, label="Durations of the last 3 runs"))
    rects = root.findall("svg:rect", NS)
    assert [r.get("class") for r in rects] == ["ff-ok", "ff-bad", "ff-warn"]
    assert rects[1].get("height") == "2"  # no duration: a stub that still shows its status
    assert rects[2].get("height") == "26" and rects[0].get("height") == "13"
    assert rects[0].find("svg:title", NS).text == "r1: 10 s"


def test_empty_sparkline_is_a_dashed_baseline():
    root = parse(charts.sparkline([], label="No runs"))
    assert root.find("svg:line", NS).get("stroke-dasharray") == "3 3"


def test_bar_chart_axis_ticks_and_limit_lines():
    bars = [Bar(100 * MIB, "succeeded"), Bar(300 * MIB, "failed")]
    svg = charts.bar_chart(bars, label="Peak memory", fmt=charts.format_bytes,
                           limits=[LimitLine(384 * MIB, "soft memory limit", hard=False),
                                   LimitLine(512 * MIB, "hard memory limit")])
    root = parse(svg)
    ticks = [t.text for t in root.iter(f"{{{charts.SVG_NS}}}text") if t.get("class") == "ff-tick"]
    assert ticks == ["0 B", "200 MiB", "400 MiB", "600 MiB"]
    limits = [g.find("svg:title", NS).text for g in root.iter(f"{{{charts.SVG_NS}}}g")]
    assert limits == ["soft memory limit: 384 MiB", "hard memory limit: 512 MiB"]
    assert 'stroke-dasharray="6 4"' in svg  # soft is dashed, hard is solid


def test_labels_are_escaped():
    svg = charts.sparkline([Bar(1.0, "failed", "<script>&")], label='a "quoted" <label>')
    parse(svg)
    assert "<script>" not in svg and "&lt;script&gt;&amp;" in svg


def test_memory_and_cpu_charts_from_samples():
    samples = [{"t": 0, "mem": 50 * MIB, "cpu": 0.2}, {"t": 5.5, "mem": 200 * MIB, "cpu": 1.7},
               {"t": 11, "mem": 120 * MIB, "cpu": None}, {"t": 12, "mem": None, "cpu": 0.5}]
    mem = charts.memory_chart(samples, soft=128 * MIB, hard=256 * MIB)
    root = parse(mem)
    assert root.get("aria-label") == ("Memory over time: peak 200 MiB; soft memory limit 128 MiB, "
                                      "hard memory limit 256 MiB")
    assert len(root.find("svg:polyline", NS).get("points").split()) == 3
    assert root.find("svg:circle/svg:title", NS).text == "peak 200 MiB at 5.5 s"
    cpu = charts.cpu_chart(samples, hard=2)
    assert parse(cpu).get("aria-label") == "CPU over time: peak 1.7 cores; hard CPU limit 2 cores"
    assert charts.cpu_chart([{"t": 0, "mem": 1}]) is None
    assert charts.memory_chart([]) is None


def test_charts_are_deterministic():
    samples = [{"t": i / 3, "mem": i * 12345.678, "cpu": i / 7} for i in range(50)]
    assert charts.memory_chart(samples) == charts.memory_chart(list(samples))
    assert not re.search(r"\de-?\d", charts.cpu_chart(samples))  # no float noise in coordinates


@pytest.mark.parametrize("high, ticks", [
    (0, [0.0, 1.0]), (7, [0.0, 2.0, 4.0, 6.0, 8.0]), (100, [0.0, 25.0, 50.0, 75.0, 100.0]),
    (0.3, [0.0, 0.1, 0.2, 0.3]),
])
def test_nice_ticks(high, ticks):
    assert charts.nice_ticks(high) == ticks


def test_formatters():
    assert [charts.format_seconds(v) for v in (0.25, 12.34, 3, 245, 3725)] == [
        "250 ms", "12.3 s", "3 s", "4m05s", "1h02m"]
    assert [charts.format_bytes(v) for v in (512, 1536, 512 * MIB, 1.5 * 1024 * MIB)] == [
        "512 B", "1.5 KiB", "512 MiB", "1.5 GiB"]
    assert [charts.format_cores(v) for v in (1, 0.25, 2.5)] == ["1 core", "0.25 cores", "2.5 cores"]

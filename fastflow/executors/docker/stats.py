"""Resource sampling from the engine's stats stream: peak memory, CPU in cores, soft-limit events.

`ResourceSampler` is pure bookkeeping (fed with (t, memory, cpu) points, so it is tested
without an engine); `StatsReader` is the thread that feeds it from `docker stats`.

- Memory is the container's usage minus its inactive page cache, as `docker stats` shows it.
- CPU in cores = (container CPU time delta / host CPU time delta) * online CPUs, never clamped:
  a pipeline using 3.5 cores reads 3.5.
- The series is downsampled as it grows (adjacent points merged, keeping the maxima), so it
  holds at most `max_points` points however long the run is.
- A soft limit produces one event per excursion: {t, kind, value, limit}, `value` the highest
  seen during that excursion; a new event only after the value went back under the limit.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

from fastflow.model import Limits
from fastflow.record import Resources

logger = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 120
MAX_SOFT_LIMIT_EVENTS = 100


class ResourceSampler:
    """Accumulates samples into a `Resources` summary (peak, mean, max, series, events)."""

    def __init__(self, limits: Limits = Limits(), max_points: int = DEFAULT_MAX_POINTS,
                 on_excess: Callable[[dict], None] | None = None) -> None:
        self.limits = limits
        self.max_points = max_points
        self.on_excess = on_excess  # called with each new excursion's event, as it starts
        self._series: list[dict] = []
        self._peak_memory: int | None = None
        self._cpu_total = 0.0
        self._cpu_count = 0
        self._cpu_max: float | None = None
        self._events: list[dict] = []
        self._open: dict[str, dict] = {}  # kind -> the event of the excursion in progress
        self._lock = threading.Lock()

    def add(self, t: float, memory: int | None, cpu: float | None) -> None:
        """One sample: seconds since start, memory in bytes, CPU in cores (None = unknown)."""
        before = len(self._events)
        self._add(t, memory, cpu)
        if self.on_excess is not None:
            for event in self._events[before:]:  # new excursions, told outside the lock
                self.on_excess(dict(event))

    def _add(self, t: float, memory: int | None, cpu: float | None) -> None:
        with self._lock:
            if memory is not None:
                self._peak_memory = max(self._peak_memory or 0, memory)
                self._soft("memory", t, memory, self.limits.mem_soft_limit)
            if cpu is not None:
                self._cpu_total += cpu
                self._cpu_count += 1
                self._cpu_max = cpu if self._cpu_max is None else max(self._cpu_max, cpu)
                self._soft("cpu", t, round(cpu, 3), self.limits.cpu_soft_limit)
            self._series.append({"t": round(t, 3), "mem": memory,
                                 "cpu": None if cpu is None else round(cpu, 3)})
            if len(self._series) > 2 * self.max_points:
                self._series = _halve(self._series)

    def _soft(self, kind: str, t: float, value: float, limit: float | None) -> None:
        if limit is None:
            return
        event = self._open.get(kind)
        if value <= limit:
            self._open.pop(kind, None)
        elif event is not None:
            event["value"] = max(event["value"], value)
        elif len(self._events) < MAX_SOFT_LIMIT_EVENTS:
            event = {"t": round(t, 3), "kind": kind, "value": value, "limit": limit}
            self._events.append(event)
            self._open[kind] = event

    def resources(self) -> Resources:
        """The summary so far, with the series reduced to at most `max_points` points."""
        with self._lock:
            series = list(self._series)
            while len(series) > self.max_points:
                series = _halve(series)
            return Resources(
                peak_memory_bytes=self._peak_memory,
                cpu_mean_cores=(round(self._cpu_total / self._cpu_count, 3)
                                if self._cpu_count else None),
                cpu_max_cores=None if self._cpu_max is None else round(self._cpu_max, 3),
                samples=tuple(series),
                soft_limit_events=tuple(dict(e) for e in self._events),
            )


def _halve(series: list[dict]) -> list[dict]:
    """Merge adjacent points: the first one's time, the maxima of memory and CPU."""
    out = []
    for i in range(0, len(series), 2):
        pair = series[i:i + 2]
        mems = [p["mem"] for p in pair if p["mem"] is not None]
        cpus = [p["cpu"] for p in pair if p["cpu"] is not None]
        out.append({"t": pair[0]["t"], "mem": max(mems) if mems else None,
                    "cpu": max(cpus) if cpus else None})
    return out


def memory_usage(stats: dict[str, Any]) -> int | None:
    """Memory in use from one stats sample, page cache excluded (cgroup v1 and v2)."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(int(usage) - int(cache), 0)


def cpu_cores(stats: dict[str, Any]) -> float | None:
    """CPU use in cores between this sample and the previous one (None on the first sample)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or ()) or 1
    if system_delta <= 0 or cpu_delta < 0:
        return None
    return cpu_delta / system_delta * online


class StatsReader(threading.Thread):
    """Feeds a `ResourceSampler` from an engine stats stream until the stream ends or `stop()`."""

    def __init__(self, stream: Iterable[dict], sampler: ResourceSampler, monotonic,
                 t0: float) -> None:
        super().__init__(name="fastflow-docker-stats", daemon=True)
        self.stream, self.sampler, self.monotonic, self.t0 = stream, sampler, monotonic, t0
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            for stats in self.stream:
                if self._stopped.is_set():
                    break
                if not stats.get("read") or stats["read"].startswith("0001-"):
                    continue  # the engine's empty sample after the container stopped
                self.sampler.add(self.monotonic() - self.t0, memory_usage(stats), cpu_cores(stats))
        except Exception as exc:  # noqa: BLE001 - sampling must never break a run
            if not self._stopped.is_set():
                logger.debug("stats stream ended: %s", exc)

    def stop(self) -> None:
        self._stopped.set()

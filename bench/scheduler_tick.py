"""Benchmark: one scheduler tick over 10,000 schedules (target: under 20 ms per tick).

Measured in the same run, so the ratios hold on any machine:
- plan: building the plan (done at start and after a sync that changes schedules);
- idle tick: nothing due (what the daemon pays at a wake-up it did not need, e.g. after a sync);
- busy ticks: following every wake-up across a simulated day, as the daemon does;
- baseline 1: the same busy ticks with 100 schedules (how cost grows with the count);
- baseline 2: a naive scheduler's tick, a bare croniter next-fire for every schedule;
- worst case: all 10,000 schedules due in the same tick (cost per due schedule).

Each tick is timed three times on the same plan (`decide` is pure) and the fastest counts, so
other processes on a shared machine inflate the figures less.

Run: python bench/scheduler_tick.py [--schedules 10000]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import datetime, timedelta, timezone

from croniter import croniter

from fastflow.schedule.cron import parse_cron
from fastflow.schedule.planner import decide, plan_schedules
from fastflow.schedule.spec import Catchup, Overlap, Schedule, ScheduleKind
from fastflow.schedule.timetable import Timetable

UTC = timezone.utc
START = datetime(2026, 3, 28, 12, tzinfo=UTC)  # the next day includes Europe's spring-forward
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo"]


def make_schedules(count: int, seed: int = 5) -> list[Schedule]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        policy = dict(catchup=rng.choice(list(Catchup)), overlap=rng.choice(list(Overlap)))
        # A plausible repository: mostly daily jobs, some hourly, few every few minutes.
        expr = rng.choices([
            f"{rng.randrange(60)} {rng.randrange(24)} * * *",
            f"{rng.randrange(60)} {rng.randrange(24)} * * 1-5",
            f"{rng.randrange(60)} {rng.randrange(24)} {rng.randrange(1, 29)} * *",
            f"{rng.randrange(60)} * * * *",
            f"*/{rng.choice([5, 10, 15, 30])} * * * *",
            None,
        ], weights=[40, 15, 5, 25, 10, 5])[0]
        if expr is not None:
            out.append(Schedule(id=f"s{i}", pipeline=f"p{i % 500}", kind=ScheduleKind.CRON,
                                cron=parse_cron(expr), timezone=rng.choice(ZONES), **policy))
        else:
            out.append(Schedule(id=f"s{i}", pipeline=f"p{i % 500}", kind=ScheduleKind.INTERVAL,
                                interval=rng.choice([300, 900, 3600, 86400]), **policy))
    return out


def busy_day(schedules: list[Schedule], hours: int = 24, repeat: int = 3
             ) -> tuple[list[float], int, int]:
    """Follow every wake-up for `hours`; per-tick times in ms, the slots handled, the most in a tick.

    `decide` is pure, so each tick is timed `repeat` times on the same plan and the fastest
    counts: on a shared machine the slow repeats measure the neighbours, not the tick."""
    plan = plan_schedules(schedules, {}, START)
    times, due, most = [], 0, 0
    end = START + timedelta(hours=hours)
    while plan.next_wakeup is not None and plan.next_wakeup <= end:
        now, best = plan.next_wakeup, float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            result = decide(plan, {}, now)
            best = min(best, (time.perf_counter() - began) * 1000)
        times.append(best)
        due += len(result.runs) + len(result.skipped)
        most = max(most, len(result.runs) + len(result.skipped))
        plan = result.plan
    return times, due, most


def daemon_fire_all(schedules: list[Schedule]) -> float:
    """ms of the daemon's side (`Timetable.fire_due`: decide, act, format the watermarks) when
    every schedule is due, with callbacks that only count (no journal, no results branch)."""
    started = []
    table = Timetable(start=lambda due: started.append(due) is None, skip=lambda record: None,
                      cancel=lambda run_id: None, save=lambda data: None)
    table.activate(schedules, START)
    began = time.perf_counter()
    table.fire_due(table.plan.next_wakeup)
    assert len(started) == len(schedules)
    return (time.perf_counter() - began) * 1000


def timed(func, repeat: int = 1, best_of: int = 3) -> float:
    """Mean ms of `repeat` calls, the fastest of `best_of` such rounds (see `busy_day`)."""
    best = float("inf")
    for _ in range(best_of):
        began = time.perf_counter()
        for _ in range(repeat):
            func()
        best = min(best, (time.perf_counter() - began) * 1000 / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    args = parser.parse_args()
    schedules = make_schedules(args.schedules)

    plan_ms = timed(lambda: plan_schedules(schedules, {}, START))
    plan = plan_schedules(schedules, {}, START)
    idle_at = plan.next_wakeup - timedelta(microseconds=1)
    idle_ms = timed(lambda: decide(plan, {}, idle_at), repeat=200)

    times, due, most = busy_day(schedules)
    small_times, _, _ = busy_day(make_schedules(100))
    p99 = statistics.quantiles(times, n=100)[98]

    def naive_tick() -> None:  # what a scheduler without a heap does at every tick
        for item in schedules:
            expr = item.cron.text if item.cron else "* * * * *"
            croniter(expr, START).get_next(datetime)

    naive_ms = timed(naive_tick, best_of=1)

    hourly = [Schedule(id=f"h{i}", pipeline="p", kind=ScheduleKind.CRON, cron=parse_cron("0 * * * *"),
                       timezone=ZONES[i % len(ZONES)]) for i in range(args.schedules)]
    worst_plan = plan_schedules(hourly, {}, START)
    worst_ms = timed(lambda: decide(worst_plan, {}, worst_plan.next_wakeup), best_of=5)
    daemon_ms = min(daemon_fire_all(hourly) for _ in range(3))

    n = args.schedules
    print(f"schedules                         {n}")
    print(f"plan build                        {plan_ms:9.1f} ms  ({plan_ms * 1000 / n:.1f} us/schedule)")
    print(f"idle tick                         {idle_ms:9.3f} ms")
    print(f"busy ticks over a day             {len(times)} ticks, {due} slots handled "
          f"({due / len(times):.0f} per tick, max {most})")
    print(f"  mean / p99 / max per tick       {statistics.mean(times):9.3f} / {p99:.3f} / {max(times):.3f} ms")
    print(f"baseline: 100 schedules, mean     {statistics.mean(small_times):9.3f} ms")
    print(f"baseline: naive croniter tick     {naive_ms:9.1f} ms")
    print(f"worst case: all {n} due at once   {worst_ms:9.1f} ms  ({worst_ms * 1000 / n:.1f} us/due schedule)")
    print(f"  daemon side (Timetable.fire_due) {daemon_ms:9.1f} ms  (decide + act + watermarks JSON)")
    print(f"ratio mean tick {n} vs 100        {statistics.mean(times) / statistics.mean(small_times):9.2f}x")
    print(f"ratio naive croniter vs mean tick {naive_ms / statistics.mean(times):9.0f}x")
    mean = statistics.mean(times)
    print(f"load average (2 cores shared)     {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"target mean tick < 20 ms          {'met' if mean < 20 else 'NOT met'}")
    print(f"target p99 tick < 20 ms           {'met' if p99 < 20 else 'NOT met'}")
    print(f"target all due at once < 100 ms   {'met' if worst_ms < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()

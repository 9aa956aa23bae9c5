"""Pure time: what a schedule is (`spec`), cron expressions across DST (`cron`, the owner of
croniter), zones, durations and instants (`timevalues`), which slots are due (`planner`), the
daemon's plan between ticks (`timetable`) and schedules in words (`describe`).

No file I/O, no yaml, no git: every function takes `now`.
"""

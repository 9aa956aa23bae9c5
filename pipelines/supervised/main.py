"""A long-running worker that crashes at its first start and is brought back by supervision.

`restart_on_crash` (pipeline.json) makes `fastflow serve` start it again after the crash,
`restart_cooldown` seconds later, with `FASTFLOW_TRIGGER=restart`; that run comes up and, for
the gallery, ends after a short while instead of serving for ever (docs/supervision.md).
"""
import os
import sys
import time

trigger = os.environ.get("FASTFLOW_TRIGGER")
if trigger != "restart":
    print(f"worker started by {trigger}; crashing on purpose (lost my queue connection)",
          file=sys.stderr)
    sys.exit(1)
print(f"worker {os.environ['FASTFLOW_RUN_ID']} restarted by supervision; serving")
for tick in range(3):
    print(f"serving, tick {tick}", flush=True)
    time.sleep(1)
print("worker done for the gallery")

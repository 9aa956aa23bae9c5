"""Runs on a schedule (every 15 minutes, see pipeline.json)."""
import os

print("scheduled run", os.environ["FASTFLOW_RUN_ID"], "trigger:", os.environ["FASTFLOW_TRIGGER"])

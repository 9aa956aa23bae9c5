"""Runs longer than its timeout: SIGTERM, a grace period, then SIGKILL."""
import time

print("sleeping for 60 s with a 3 s timeout", flush=True)
time.sleep(60)

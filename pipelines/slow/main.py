"""Takes a while and reports progress: watch it while it is running."""
import os
import time

steps = int(os.environ.get("STEPS", "10"))
for i in range(1, steps + 1):
    print(f"step {i}/{steps}", flush=True)
    time.sleep(float(os.environ.get("STEP_SECONDS", "1")))
print("done")

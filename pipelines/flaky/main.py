"""Fails at random on early attempts; the retry policy carries it to success."""
import os
import random
import sys

attempt = int(os.environ["FASTFLOW_ATTEMPT"])
if attempt < 3 and random.random() < 0.7:
    print(f"attempt {attempt}: the upstream API timed out (simulated)", file=sys.stderr)
    sys.exit(1)
print(f"attempt {attempt}: success")

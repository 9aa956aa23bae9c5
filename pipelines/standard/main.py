"""Standard example: environment variables, a requirement from PyPI, and resource limits."""
import os

import idna  # from requirements.txt, installed by uv into a cached environment

greeting = os.environ["GREETING"]
target = os.environ.get("TARGET", "world")
print(f"{greeting}, {target}!")
print("idna encodes 'bücher.example' as", idna.encode("bücher.example").decode())
print("run", os.environ["FASTFLOW_RUN_ID"], "attempt", os.environ["FASTFLOW_ATTEMPT"])

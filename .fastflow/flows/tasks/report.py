"""Gallery flow `fan_in`: the final task, a report of what `combine` produced."""
import json
import os

combined = json.loads(os.environ["FASTFLOW_INPUTS"]).get("combine") or {}
print(os.environ["TITLE"])
print(f"{combined.get('rows', 0)} rows from {', '.join(combined.get('regions', []))}, "
      f"max {combined.get('max')}")

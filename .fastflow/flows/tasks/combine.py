"""Gallery flow `fan_in`: the join. Reads the three regions' outputs ($FASTFLOW_INPUTS) and
their files in the workspace, writes the combined file and its own output."""
import glob
import json
import os

inputs = json.loads(os.environ["FASTFLOW_INPUTS"])
workspace = os.environ["FASTFLOW_WORKSPACE"]
rows = []
for path in sorted(glob.glob(os.path.join(workspace, "*.csv"))):
    with open(path) as source:
        rows += source.read().splitlines()
expected = sum(summary["count"] for summary in inputs.values())
assert len(rows) == expected, f"{len(rows)} rows in the workspace, the inputs say {expected}"
with open(os.path.join(workspace, "combined.txt"), "w") as out:
    out.write("\n".join(rows) + "\n")
with open(os.environ["FASTFLOW_OUTPUT"], "w") as out:
    json.dump({"rows": len(rows), "max": max(s["max"] for s in inputs.values()),
               "regions": sorted(inputs)}, out)
print(f"combined {len(rows)} rows of {', '.join(sorted(inputs))}")

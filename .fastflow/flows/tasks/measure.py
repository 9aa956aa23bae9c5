"""Gallery flow `fan_in`: measure one region, in parallel with the others.

Writes its readings to the flow run's workspace ($FASTFLOW_WORKSPACE/<region>.csv) and a small
summary to $FASTFLOW_OUTPUT, which the tasks depending on this one get in $FASTFLOW_INPUTS.
"""
import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--region", required=True)
parser.add_argument("--day", required=True)
args = parser.parse_args()
readings = [len(args.region) * 10 + hour for hour in range(4)]
time.sleep(2)  # long enough to see the three regions run side by side
with open(os.path.join(os.environ["FASTFLOW_WORKSPACE"], f"{args.region}.csv"), "w") as out:
    out.writelines(f"{args.day},{args.region},{value}\n" for value in readings)
with open(os.environ["FASTFLOW_OUTPUT"], "w") as out:
    json.dump({"region": args.region, "count": len(readings), "max": max(readings)}, out)
print(f"{args.region}: {len(readings)} readings on {args.day}, max {max(readings)}")

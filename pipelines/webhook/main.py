import json
import os
import sys

payload = os.environ.get("FASTFLOW_WEBHOOK_PAYLOAD")
if not payload:
    print("not started by a webhook (FASTFLOW_TRIGGER is", os.environ["FASTFLOW_TRIGGER"] + ")")
    sys.exit(0)
with open(payload, "rb") as handle:
    body = handle.read()
headers = json.loads(os.environ.get("FASTFLOW_WEBHOOK_HEADERS") or "{}")
print(f"started by {os.environ['FASTFLOW_TRIGGER']} from {os.environ.get('SOURCE', '?')}: "
      f"{len(body)} bytes of {headers.get('Content-Type', 'unknown type')}")
print("body:", json.loads(body))

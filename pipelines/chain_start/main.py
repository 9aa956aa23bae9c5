"""Decides a route: its downstream pipelines run depending on the label it writes."""
import os

rows = int(os.environ.get("ROWS", "42"))
route = "publish" if rows > 0 else "alert"
print(f"{rows} rows: route {route!r}")
with open(os.environ["FASTFLOW_ROUTE_FILE"], "w") as f:
    f.write(route)

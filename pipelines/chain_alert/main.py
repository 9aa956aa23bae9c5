import os

print("alerting: no rows; started by", os.environ["FASTFLOW_TRIGGER"])

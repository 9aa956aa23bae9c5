import os

print("publishing; started by", os.environ["FASTFLOW_TRIGGER"])

import os

run_config = os.environ["FASTFLOW_RUN_CONFIG"] or "(none)"
print("publishing to", os.environ["TARGET"], "; started by", os.environ["FASTFLOW_TRIGGER"],
      "with run configuration", run_config)
if os.environ["FASTFLOW_TRIGGER"] == "downstream":
    assert run_config == "prod" and os.environ["TARGET"] == "production", "prod not applied"

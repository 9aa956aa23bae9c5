"""Metadata in <name>.json instead of pipeline.json."""
import os

print("metadata came from custom_metadata.json; COLOR =", os.environ["COLOR"])

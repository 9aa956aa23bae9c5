"""Executors run one attempt of a pipeline: on the host (`local`) or in Docker (`docker`)."""

"""Push -> diff -> pre-heat: what a commit of the followed branch changed (`changes`), the
pipelines it holds (`discovery`, `workspace`), what it makes active with last-valid semantics
(`deployment`), and filling the uv cache for changed requirements (`preheat`).
"""

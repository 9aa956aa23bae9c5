"""Multi-task flows: the plan of a flow run and its execution (docs/flows.md).

`record` is the flow run record (`flows/<flow>/<YYYY>/<MM>/<flow_run_id>.json` on the results
branch); `run` is the engine that decides, task by task, what starts, what is skipped and when
the flow run ends. Each task is an ordinary run made by the layer above (the daemon, or the CLI
through the same code), which tells the engine how it ended.
"""

"""One run's life: resolve its environment (`env`), run its attempts with retries (`runner`),
capture its log (`capture`), and finish a run a dead process left behind (`recovery`).

Below `daemon` and `cli`, beside `deploy` and `flow` (which it never imports); above the
executors it drives.
"""

"""`fastflow serve`: the loop (`loop`, one `tick(now)` at a time), its runs (`runs`: journal,
dispatch, reconcile), the `dispatcher`, the `inbox` and `watch` (the owner of watchdog), the
`statedir`, and the post-receive hook (`hooks`, `post-receive`).
"""

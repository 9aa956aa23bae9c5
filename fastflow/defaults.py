"""Every built-in default, in one place (rq's habit).

`config` fills these in when a file is silent, and records that the value came from here.
"""
from __future__ import annotations

DEFAULT_PIPELINES_DIR = "pipelines"
DEFAULT_BRANCH = "main"
DEFAULT_RESULTS_BRANCH = "fastflow/results"
DEFAULT_PYTHON = "3.11"
# Environment variables starting so are Fast-Flow's (the run context): no user layer, secret or
# webhook may set one.
RESERVED_ENV_PREFIX = "FASTFLOW_"
# Featherflow's name of a flow run's shared folder, set to the workspace for every flow task (so its
# scripts run unchanged); a task's env may not set it (docs/flows.md).
FLOW_TMP_DIR_ENV = "TMP_DIR"
IMAGE_PYTHON_PLACEHOLDER = "{python}"  # in `image`: the major.minor of a run's Python
DEFAULT_IMAGE = "fastflow-runner:py{python}"  # one runner image per Python: {python} is e.g. 3.13
DEFAULT_MAX_CONCURRENT_RUNS = 2
DEFAULT_TIMEOUT = 0.0  # seconds; 0 = no timeout
DEFAULT_RETRY_ATTEMPTS = 0
# The wait before each retry when retry_attempts (or config.yaml's default_retry_attempts) is
# given without a retry_strategy: Fast-Flow's fixed 60 s.
DEFAULT_RETRY_DELAY = 60.0
# A notebook cell's wait between tries in pipeline.json's list form of `cells` (Fast-Flow's 1 s;
# the standalone executors/notebook.py keeps its own copy for metadata overrides).
DEFAULT_CELL_RETRY_DELAY = 1.0
DEFAULT_GRACE_PERIOD = 10.0  # seconds between SIGTERM and SIGKILL
DEFAULT_LOG_CAP_BYTES = 5 * 1024 * 1024
DEFAULT_TMP_SIZE_BYTES = 256 * 1024 * 1024  # a container's /tmp (a tmpfs: host memory)
DEFAULT_SECRETS_FILE = ".fastflow/secrets.enc.yaml"
DEFAULT_AUTHOR_NAME = "Fast-Flow"
DEFAULT_AUTHOR_EMAIL = "fastflow@localhost"
DEFAULT_NETWORK = "bridge"
DEFAULT_PIDS_LIMIT = 512
DEFAULT_RESTART_COOLDOWN = 60.0  # seconds before a supervised restart (Fast-Flow's default)
# Supervision (docs/supervision.md), our fields: the cooldown doubles per consecutive crash up to
# the cap; a run up this long resets the doubling; this many crashes within the window give up.
DEFAULT_RESTART_COOLDOWN_MAX = 3600.0
DEFAULT_RESTART_HEALTHY_AFTER = 600.0
DEFAULT_RESTART_LIMIT = 5
DEFAULT_RESTART_LIMIT_WINDOW = 600.0

# Exponential backoff when a pipeline names the strategy but leaves a field out (Fast-Flow's
# values: 60 s, 120 s, 240 s ... up to an hour).
DEFAULT_BACKOFF_INITIAL_DELAY = 60.0
DEFAULT_BACKOFF_MAX_DELAY = 3600.0
DEFAULT_BACKOFF_MULTIPLIER = 2.0

# The daemon's heartbeat: `status.json` in the state dir every HEARTBEAT_INTERVAL; on the results
# branch (`state/daemon.json` and a fresh overview) with every run, and on its own every
# BRANCH_HEARTBEAT_INTERVAL when none finishes. Readers call a heartbeat stale when it is older
# than HEARTBEAT_STALE_FACTOR of the interval it declares.
HEARTBEAT_INTERVAL = 60.0
BRANCH_HEARTBEAT_INTERVAL = 300.0
HEARTBEAT_STALE_FACTOR = 3

# The lease of daemons following one repository (docs/serve.md, "Two daemons"): a holder that
# stops renewing it (it died) is replaced by a standby at most this long after its last renewal.
DEFAULT_LEASE_TIMEOUT = 3 * HEARTBEAT_INTERVAL

# A results push refused by the remote's policy or unable to reach it is retried on the
# daemon's timer, after this many seconds, doubling at each further failure up to the maximum.
PUSH_RETRY_INITIAL = 30.0
PUSH_RETRY_MAX = 600.0

# The webhook intake of `fastflow serve` (config.yaml `webhooks:`, docs/webhooks.md).
DEFAULT_WEBHOOK_MAX_BODY = 1024 * 1024  # bytes; a larger body is answered 413
DEFAULT_WEBHOOK_CLIENT_RATE = 60  # requests per minute from one client address
DEFAULT_WEBHOOK_CLIENT_BURST = 20  # requests one client may send at once before the rate applies
DEFAULT_WEBHOOK_PIPELINE_RATE = 120  # requests per minute to one pipeline, from every client
DEFAULT_WEBHOOK_MAX_QUEUED = 100  # webhook runs of one pipeline queued but not started
DEFAULT_WEBHOOK_READ_TIMEOUT = 10.0  # seconds a connection may stay silent
DEFAULT_WEBHOOK_THREADS = 4

# Notifications (config.yaml `notifications:`, pipeline.json "notifications",
# docs/notifications.md): what a target hears about when it lists no events, and the options.
DEFAULT_NOTIFY_EVENTS = ("failure", "recovery", "given_up", "scheduler_stale")
DEFAULT_NOTIFY_AFTER = 3  # consecutive failures for the `after` event
DEFAULT_NOTIFY_STUCK_FACTOR = 3.0  # stuck: running longer than this times the median duration
DEFAULT_NOTIFY_MISSED_GRACE = 300.0  # seconds a schedule slot may wait for its run
DEFAULT_NOTIFY_GROUP_WINDOW = 30.0  # events within this many seconds: one message per target
NOTIFY_TIMEOUT = 20.0  # seconds one delivery attempt may take before it counts as failed
NOTIFY_ATTEMPTS = 4  # attempts per message (the first and three retries)
NOTIFY_RETRY_DELAY = 5.0  # seconds before the first retry, doubling after each
NOTIFY_LOG_LINES = 20  # last lines of the run's (masked) log in a message
NOTIFY_RECENT = 50  # deliveries listed in state/notifications.json (the site shows them)

# Flow runs (docs/flows.md): a task's output (`$FASTFLOW_OUTPUT`) is at most this many bytes;
# a failed flow run's workspace is kept this long for `fastflow flow rerun` (seconds).
DEFAULT_FLOW_OUTPUT_MAX_BYTES = 64 * 1024
DEFAULT_FLOW_WORKSPACE_KEEP = 7 * 24 * 3600.0

CONFIG_DIR = ".fastflow"
CONFIG_FILE = ".fastflow/config.yaml"
SCHEDULES_FILE = ".fastflow/schedules.yaml"

# The state dir of `fastflow serve` (docs/serve.md): every name in it, defined once.
STATE_LOCK = "daemon.lock"          # one daemon per state dir (flock; holds the pid)
STATE_INBOX = "inbox"               # messages from the hook and `fastflow run --remote`
STATE_INBOX_BAD = "bad"             # inbox/bad/: messages that could not be parsed
STATE_ACTIVE = "active"             # the run journal: one file per accepted run until recorded
STATE_JOURNAL = "journal"           # the results store's journal of uncommitted writes
STATE_LIVE = "live"                 # live/<run_id>.log: output of running runs
STATE_SNAPSHOTS = "snapshots"       # immutable snapshots of pipeline trees, by tree id
STATE_WEBHOOK_PAYLOADS = "webhooks/payload"  # bodies of webhook requests until their run is recorded
STATE_PREHEAT = "preheat"           # preheat/<pipeline>.json: each pipeline's dependency state
STATE_MIRROR = "mirror.git"         # the mirror of a followed URL
STATE_DEPLOYMENT = "deployment.json"  # the active commit and tree of each pipeline
STATE_STATUS = "status.json"        # the daemon's state, written every heartbeat
STATE_WEBHOOK_LOG = "webhooks/log"  # accepted webhook requests: segments of a log (daemon.payloads)
STATE_WEBHOOK_CLAIMS = "webhooks/claims"  # delivery id hash -> run id, of segments dropped
STATE_WEBHOOK_DELIVERIES = "webhooks/deliveries"  # accepted requests of versions before the log
STATE_STALE_NOTIFIED = "stale-notified.json"  # the stale heartbeat `status --check` reported
STATE_FLOWS = "flows"               # flows/<flow_run_id>.json: the journal of running flow runs
STATE_WORKSPACES = "workspaces"     # workspaces/<flow_run_id>/: a flow run's shared folder

#!/bin/sh
# Make a Docker engine answer and the runner images exist, on a fresh Debian machine (as root).
#
# - no engine answers: install docker.io (and debootstrap) from Debian when dockerd is missing,
#   start dockerd in the background (log: /tmp/dockerd.log) and wait until it answers;
# - one runner image per Python of RUNNER_PYTHONS (the tests and the example pipelines use
#   3.11 and 3.13): each is reused when `fastflow image check --python X` says it exists and
#   carries the host's uv; otherwise it is built with `fastflow image build --bootstrap --python X`
#   (no registry needed; debootstrap fetches the Debian suite shipping that Python, bookworm or
#   trixie, from the Debian mirror of this machine's own apt sources).
#
# Called by .ci/run; safe to run again (it does nothing that is already done).
# Environment: PYTHON (default: python3), DOCKERD_WAIT seconds (default: 60),
# RUNNER_PYTHONS (default: "3.11 3.13").
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DOCKERD_WAIT=${DOCKERD_WAIT:-60}
RUNNER_PYTHONS=${RUNNER_PYTHONS:-3.11 3.13}

engine_answers() {
    "$PYTHON" -c 'import sys; from fastflow.executors.docker import docker_available; sys.exit(0 if docker_available() else 1)'
}

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "docker-setup: installing $* needs root" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if ! engine_answers; then
    missing=""
    command -v dockerd >/dev/null 2>&1 || missing="docker.io"
    command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
    # shellcheck disable=SC2086 # word splitting wanted: a list of packages
    [ -z "$missing" ] || apt_install $missing
    echo "docker-setup: starting dockerd (log: /tmp/dockerd.log)"
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    waited=0
    until engine_answers; do
        if [ "$waited" -ge "$DOCKERD_WAIT" ]; then
            echo "docker-setup: dockerd did not answer within ${DOCKERD_WAIT}s; last log lines:" >&2
            tail -n 20 /tmp/dockerd.log >&2 || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "docker-setup: dockerd answers (after ${waited}s)"
fi

for python in $RUNNER_PYTHONS; do
    if "$PYTHON" -m fastflow image check --python "$python"; then
        echo "docker-setup: reusing the runner image of Python $python"
    else
        command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
        started=$(date +%s)
        "$PYTHON" -m fastflow image build --bootstrap --python "$python"
        "$PYTHON" -m fastflow image check --python "$python"
        echo "docker-setup: built the runner image of Python $python in $(( $(date +%s) - started ))s"
    fi
done

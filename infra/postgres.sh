#!/usr/bin/env bash
# A local PostgreSQL for the MLflow tracking server (`make server`) and the tests.
#   infra/postgres.sh start DATA_DIR [PORT]   initialise if needed, start, print the server's URI
#   infra/postgres.sh stop DATA_DIR           stop it (nothing if it is not running)
# Idempotent and quiet; runs the server as the `postgres` user when called as root.
# Needs Debian's `postgresql` package (.ci/run installs it).
set -euo pipefail
command=${1:?start or stop}
data=${2:?data folder}
port=${3:-5440}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ]; then bin=$(dirname "$(command -v initdb || echo /nonexistent/initdb)"); fi
if [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL is not installed (apt-get install -y postgresql)" >&2
    exit 2
fi
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $command in
start)
    if [ "$(id -u)" = 0 ]; then
        reach=$(dirname "$data")
        while [ ! -e "$reach" ]; do reach=$(dirname "$reach"); done
        if ! runuser -u postgres -- test -x "$reach"; then
            echo "PostgreSQL runs as the postgres user, which cannot reach $data (a folder above it is private):" \
                "give it a data folder it can reach, e.g. make server POSTGRES_DATA=/var/tmp/fedmm-postgres" >&2
            exit 2
        fi
        mkdir -p "$data"; chown postgres "$data"; chmod 700 "$data"
    else
        mkdir -p "$data"
    fi
    if [ ! -s "$data/PG_VERSION" ] && ! said=$(as_owner "$bin/initdb" -D "$data" -A trust -U fedmm --no-sync 2>&1); then
        echo "initdb could not create a database in $data: $(echo "$said" | grep -v '^$' | tail -n 1)" >&2
        exit 2
    fi
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 \
        && ! as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -s \
            -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1; then
        why=$(grep -m 1 -E 'could not bind|FATAL|PANIC' "$data/server.log" 2>/dev/null | sed 's/^[^]]*] [A-Z]*: *//')
        echo "PostgreSQL did not start on 127.0.0.1:$port (${why:-see $data/server.log}):" \
            "is the port taken? another one: make server POSTGRES_PORT=..." >&2
        exit 2
    fi
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U fedmm -d postgres -tAq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'fedmm'" | grep -q 1 \
        || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U fedmm fedmm
    echo "postgresql://fedmm@127.0.0.1:$port/fedmm"
    ;;
stop)
    if [ -s "$data/PG_VERSION" ]; then
        as_owner "$bin/pg_ctl" -D "$data" -m fast -s stop >/dev/null 2>&1 || true
    fi
    ;;
*)
    echo "usage: $0 start|stop DATA_DIR [PORT]" >&2
    exit 2
    ;;
esac

# Helpers shared by scripts/bench and scripts/dataset (sourced, not run): tools, a release
# service on a fresh database and key prefix, wrk runs that report JSON, and cleanup of
# everything a run created (service, databases, Redis keys, temp files) on exit.

PG="postgres://postgres@127.0.0.1:5432"
BENCH_PORT=${BENCH_PORT:-18081}
BENCH_URL="http://127.0.0.1:$BENCH_PORT"
BENCH_TMP=$(mktemp -d /tmp/post-rate-bench.XXXXXX)
BENCH_RUN="bench$$"
# One secret for the whole run, so tokens stay valid when the service is restarted.
BENCH_JWT_SECRET="bench-secret-$(date +%s%N)-0123456789abcdef"
# BENCH_BIN_DIR: a directory with prebuilt post-rate and loadgen binaries; nothing is built.
if [ -n "${BENCH_BIN_DIR:-}" ]; then
    BIN=$BENCH_BIN_DIR
else
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/post-rate-target}
    # shellcheck source=../scripts/shared-target
    source scripts/shared-target
    BIN="$CARGO_TARGET_DIR/release"
fi
SERVICE_PID=
CREATED_DBS=()
CREATED_PREFIXES=()
# Functions cleanup calls after stopping the service (e.g. kafka_cleanup of bench/consumer.sh).
CLEANUP_HOOKS=()

log() { echo "== $*" >&2; }

# wrk, jq and pgbench, installed from the distribution when missing (we run as root here).
need_tools() {
    if ! command -v jq >/dev/null; then
        log "installing jq"
        apt-get update -qq && apt-get install -y -qq jq >/dev/null
    fi
    if ! command -v wrk >/dev/null; then
        log "installing wrk"
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    fi
    if ! command -v pgbench >/dev/null; then
        local found
        found=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n1 || true)
        if [ -z "$found" ]; then
            log "installing pgbench (postgresql-contrib)"
            apt-get update -qq && apt-get install -y -qq postgresql-contrib >/dev/null
            found=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n1 || true)
        fi
        [ -n "$found" ] && PATH="$(dirname "$found"):$PATH"
    fi
}

build_release() {
    if [ -n "${BENCH_BIN_DIR:-}" ]; then log "using the binaries in $BIN"; return; fi
    log "building release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release --bins --quiet
}

psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

# fresh_db NAME: sets DB_URL to a database of that name that does not exist yet (the
# service or `post-rate migrate` creates it) and that the cleanup drops.
fresh_db() {
    CREATED_DBS+=("$1")
    dropdb --if-exists -h 127.0.0.1 -U postgres "$1" 2>/dev/null
    DB_URL="$PG/$1"
}

# start_service DATABASE_URL KEY_PREFIX [VAR=value ...]: runs the release service in the
# background until /healthz answers.
start_service() {
    local url=$1 prefix=$2
    shift 2
    CREATED_PREFIXES+=("$prefix")
    # Embedded mode unless the caller passes KAFKA_BROKERS=... itself: a KAFKA_BROKERS in the
    # environment is meant for the consumer section only.
    env -u KAFKA_BROKERS DATABASE_URL="$url" REDIS_KEY_PREFIX="$prefix" BIND_ADDR="127.0.0.1:$BENCH_PORT" \
        JWT_SECRET="$BENCH_JWT_SECRET" RUST_LOG="${RUST_LOG:-warn}" \
        RATE_LIMIT_WRITES_PER_MIN=0 RATE_LIMIT_AUTH_PER_MIN=0 \
        "$@" "${SERVICE_BIN:-$BIN/post-rate}" serve >>"$BENCH_TMP/service.log" 2>&1 &
    SERVICE_PID=$!
    for _ in $(seq 1 150); do
        if curl -fs "$BENCH_URL/healthz" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$SERVICE_PID" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "the service did not start; its log:" >&2
    tail -n 30 "$BENCH_TMP/service.log" >&2
    return 1
}

stop_service() {
    if [ -n "$SERVICE_PID" ]; then
        kill "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
        SERVICE_PID=
    fi
}

# wait_outbox_empty DATABASE_URL [SECONDS]: prints how long the outbox took to drain.
wait_outbox_empty() {
    local url=$1 limit=${2:-120} start n
    start=$(date +%s.%N)
    while :; do
        n=$(psql_q -d "$url" -c "SELECT count(*) FROM rating_events")
        [ "$n" = 0 ] && break
        if awk -v s="$start" -v now="$(date +%s.%N)" -v l="$limit" 'BEGIN{exit !(now-s>l)}'; then
            log "outbox still holds $n events after $limit s"
            break
        fi
        sleep 0.1
    done
    awk -v s="$start" -v now="$(date +%s.%N)" 'BEGIN{printf "%.2f", now-s}'
}

# run_wrk NAME URL [SCRIPT [-- ARGS...]]: wrk with the run's threads, connections and
# duration; prints the JSON line of bench/wrk/report.lua and keeps wrk's own text.
run_wrk() {
    local name=$1 url=$2 script=${3:-$BENCH_DIR/wrk/healthz.lua}
    shift 3 || shift $#
    log "wrk $name: $BENCH_THREADS threads, $BENCH_CONNECTIONS connections, ${BENCH_DURATION}s"
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_DURATION}s" --timeout 10s \
        -s "$script" "$url" "$@" >"$BENCH_TMP/wrk-$name.txt" 2>&1 || true
    sed -n '1,/^WRK_JSON/p' "$BENCH_TMP/wrk-$name.txt" | grep -v '^WRK_JSON' | sed 's/^/   /' >&2
    local line
    line=$(grep '^WRK_JSON ' "$BENCH_TMP/wrk-$name.txt" | tail -n1 | cut -d' ' -f2-)
    echo "${line:-null}"
}

# run_pgbench NAME DBNAME SCRIPT [-D VAR=value ...]: pgbench with the run's threads, clients
# and duration, prepared statements, over TCP like the service; prints
# `{"tps":..,"latency_avg_ms":..,"failed":..}` and keeps pgbench's own text.
run_pgbench() {
    local name=$1 db=$2 script=$3
    shift 3
    log "pgbench $name: $BENCH_THREADS threads, $BENCH_CONNECTIONS clients, ${BENCH_DURATION}s, prepared"
    pgbench -n -M prepared -j "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -T "$BENCH_DURATION" \
        "$@" -f "$script" -h 127.0.0.1 -U postgres "$db" >"$BENCH_TMP/pgbench-$name.txt" 2>&1 ||
        { cat "$BENCH_TMP/pgbench-$name.txt" >&2; return 1; }
    grep -E 'tps|latency|failed|processed' "$BENCH_TMP/pgbench-$name.txt" | sed 's/^/   /' >&2 || true
    awk '/^tps = / {tps = $3} /^latency average/ {lat = $4} /failed transactions/ {failed = $5}
         END {printf "{\"tps\":%s,\"latency_avg_ms\":%s,\"failed\":%s}", tps, lat, failed + 0}' \
        "$BENCH_TMP/pgbench-$name.txt"
}

# CPU time (clock ticks) used so far by every running PostgreSQL process: the difference over a
# run whose connections stay open (the service's pool) is PostgreSQL's share of that run.
pg_ticks() {
    local total=0 pid t
    for pid in $(pgrep -x postgres); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# Prints `a / b` with 3 decimals, or null.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.3f", a / b; else printf "null" }'; }

# json_get JSON KEY: a number field of a flat JSON object.
json_get() { echo "$1" | jq -r ".$2 // empty"; }

cleanup() {
    stop_service
    for hook in "${CLEANUP_HOOKS[@]}"; do "$hook" || true; done
    for db in "${CREATED_DBS[@]}"; do
        dropdb --if-exists -h 127.0.0.1 -U postgres "$db" 2>/dev/null || true
    done
    for prefix in "${CREATED_PREFIXES[@]}"; do
        redis-cli -h 127.0.0.1 --scan --pattern "${prefix}*" |
            xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
    done
    if [ -n "${KEEP_TMP:-}" ]; then log "kept $BENCH_TMP"; else rm -rf "$BENCH_TMP"; fi
}

machine_json() {
    local cpu
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/"/\\"/g')
    printf '{"cores":%s,"cpu":"%s","note":"load generator and service share these cores"}' \
        "$(nproc)" "$cpu"
}

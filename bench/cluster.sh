# The Redis Cluster section of scripts/bench (sourced after bench/lib.sh and
# bench/consumer.sh, not run): rating writes and consumer events/s with one Redis and with a
# 3-master Redis Cluster (scripts/redis-cluster, ports 30001-30003), in the same run.
#
#   writes:   the service in embedded mode on a fresh database, seeded by loadgen
#             (BENCH_USERS users, BENCH_POSTS posts); wrk's rating writes for BENCH_DURATION
#             with the service on one Redis, then restarted on the cluster (same database,
#             another key prefix; the self-healing rebuilds that prefix from PostgreSQL).
#   consumer: BENCH_EVENTS outbox events (bench/consumer.sh's staging) published once to a
#             new topic, then read by two new groups: the service on one Redis, then on the
#             cluster; each must leave Redis exactly equal to the staged events.
#
# It starts the cluster when none runs (and stops it again), and uses the broker as the
# consumer section does. BENCH_SKIP_CLUSTER=1 skips it; BENCH_ONLY=cluster runs only it.
# Sets CLUSTER_JSON (the "cluster" object of the results) and CLUSTER_NOTE.

STARTED_CLUSTER=
CLUSTER_SEEDS=
CLUSTER_PREFIXES=()

cluster_cleanup() {
    if [ -n "$CLUSTER_SEEDS" ]; then
        local prefix port
        for prefix in "${CLUSTER_PREFIXES[@]}"; do
            for port in 30001 30002 30003 30004 30005 30006; do
                redis-cli -p "$port" --scan --pattern "${prefix}*" 2>/dev/null |
                    sed 's/^/UNLINK /' | redis-cli -p "$port" >/dev/null 2>&1 || true
            done
        done
    fi
    if [ -n "$STARTED_CLUSTER" ]; then
        scripts/redis-cluster stop >&2 || true
    fi
}
CLEANUP_HOOKS+=(cluster_cleanup)

use_cluster() {
    if ! scripts/redis-cluster status >/dev/null 2>&1; then
        scripts/redis-cluster start >&2
        STARTED_CLUSTER=1
    fi
    CLUSTER_SEEDS=$(scripts/redis-cluster nodes)
}

# The ports of the masters serving slots now (a failover may have moved them).
cluster_masters() {
    redis-cli -p 30001 cluster nodes |
        awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 { split($2, a, "[:@]"); print a[2] }'
}

# cluster_service DATABASE_URL PREFIX [VAR=value ...]: the service on the cluster.
cluster_service() {
    local url=$1 prefix=$2
    shift 2
    CLUSTER_PREFIXES+=("$prefix")
    start_service "$url" "$prefix" REDIS_CLUSTER=true REDIS_URL="$CLUSTER_SEEDS" "$@"
}

# cluster_writes: sets WRITES_SINGLE and WRITES_CLUSTER (wrk JSON lines).
cluster_writes() {
    fresh_db "post_rate_${BENCH_RUN}_cluster"
    local db=$DB_URL
    # Called as `cluster_writes || ...`, so errexit is off here: every step checks itself.
    start_service "$db" "$BENCH_RUN:cw1:" || return 1
    log "cluster section: seeding $BENCH_USERS users, $BENCH_POSTS posts (loadgen, 3 s)"
    "$BIN/loadgen" --url "$BENCH_URL" --users "$BENCH_USERS" --posts "$BENCH_POSTS" \
        --duration 3 --mix rate=100 -c 16 --no-check \
        --tokens-out "$BENCH_TMP/cluster-tokens" --posts-out "$BENCH_TMP/cluster-posts" \
        >"$BENCH_TMP/cluster-seed.txt" 2>&1 || { cat "$BENCH_TMP/cluster-seed.txt" >&2; return 1; }
    wait_outbox_empty "$db" >/dev/null
    local args=("$BENCH_DIR/wrk/rate.lua" -- "$BENCH_TMP/cluster-tokens" "$BENCH_TMP/cluster-posts" "$BENCH_THREADS")
    WRITES_SINGLE=$(run_wrk writes-1-redis "$BENCH_URL/api/v1/posts/1/rating" "${args[@]}")
    wait_outbox_empty "$db" 300 >/dev/null
    stop_service
    cluster_service "$db" "$BENCH_RUN:cw3:" || return 1
    WRITES_CLUSTER=$(run_wrk writes-cluster "$BENCH_URL/api/v1/posts/1/rating" "${args[@]}")
    wait_outbox_empty "$db" 300 >/dev/null
    stop_service
}

# cluster_consumer: sets CONSUMER_SINGLE and CONSUMER_CLUSTER (JSON objects).
cluster_consumer() {
    use_brokers
    local name="post_rate_${BENCH_RUN}_cluster_events" topic="$BENCH_RUN-cluster-events"
    local kafka=(KAFKA_BROKERS="$BENCH_BROKERS" KAFKA_TOPIC="$topic"
        STATS_AUDIT_INTERVAL_SECS=0 STATS_REPAIR_GRACE_SECS=604800)
    KAFKA_TOPICS+=("$topic")
    fresh_db "$name"
    DATABASE_URL="$DB_URL" RUST_LOG=warn "$BIN/post-rate" migrate || return 1
    log "cluster section: staging $BENCH_EVENTS outbox events, publishing them to $topic"
    stage_outbox "$DB_URL"
    start_service "$DB_URL" "$BENCH_RUN:ce-pub:" "${kafka[@]}" RUN_CONSUMER=false || return 1
    watch_metric post_rate_relay_published_total cluster-publish
    wait_outbox_empty "$DB_URL" 60 >/dev/null
    stop_service

    local kind prefix group mism
    for kind in single cluster; do
        prefix="$BENCH_RUN:ce-$kind:"
        group="$BENCH_RUN-$kind"
        KAFKA_GROUPS+=("$group")
        log "cluster section: consumer on $kind Redis, group $group"
        if [ "$kind" = single ]; then
            start_service "$DB_URL" "$prefix" "${kafka[@]}" KAFKA_GROUP_ID="$group" \
                RUN_RELAY=false || return 1
        else
            cluster_service "$DB_URL" "$prefix" "${kafka[@]}" KAFKA_GROUP_ID="$group" \
                RUN_RELAY=false || return 1
        fi
        watch_metric post_rate_events_applied_total "consumer-$kind" || true
        stop_service
        if [ "$kind" = single ]; then
            mism=$(redis_mismatches "$prefix")
        else
            # shellcheck disable=SC2046
            mism=$(redis_mismatches "$prefix" $(cluster_masters))
        fi
        local json
        json=$(jq -c --argjson mism "$mism" '{events_per_sec: (.per_sec * 10 | round / 10),
            secs: .secs, redis_mismatches: $mism}' "$BENCH_TMP/consumer-$kind.json" 2>/dev/null ||
            echo "{\"events_per_sec\": null, \"redis_mismatches\": $mism}")
        if [ "$kind" = single ]; then CONSUMER_SINGLE=$json; else CONSUMER_CLUSTER=$json; fi
        echo "   consumer on $kind Redis: $(json_get "$json" events_per_sec) events/s, $mism posts differ" >&2
    done
}

bench_cluster() {
    log "Redis Cluster: rating writes and consumer events/s, 1 Redis vs 3 masters"
    CLUSTER_NOTE= CLUSTER_JSON='{"status": "skipped"}'
    if [ "${BENCH_SKIP_CLUSTER:-}" = 1 ] || [ "$BENCH_ONLY" = consumer ]; then
        CLUSTER_NOTE="skipped (BENCH_SKIP_CLUSTER=1 or BENCH_ONLY=consumer)"
        return
    fi
    use_cluster
    WRITES_SINGLE=null WRITES_CLUSTER=null CONSUMER_SINGLE=null CONSUMER_CLUSTER=null
    cluster_writes || BENCH_FAILED=1
    if [ "${BENCH_SKIP_KAFKA:-}" != 1 ]; then
        cluster_consumer || BENCH_FAILED=1
    fi
    local status=ok
    for j in "$WRITES_SINGLE" "$WRITES_CLUSTER"; do
        if [ "$j" = null ] || [ "$(json_get "$j" non_2xx)" != 0 ]; then
            status=write_errors
            BENCH_FAILED=1
        fi
    done
    for j in "$CONSUMER_SINGLE" "$CONSUMER_CLUSTER"; do
        if [ "$j" != null ] && [ "$(json_get "$j" redis_mismatches)" != 0 ]; then
            status=redis_mismatch
            BENCH_FAILED=1
        fi
    done
    CLUSTER_JSON=$(jq -n --arg status "$status" --argjson ws "$WRITES_SINGLE" \
        --argjson wc "$WRITES_CLUSTER" --argjson cs "$CONSUMER_SINGLE" \
        --argjson cc "$CONSUMER_CLUSTER" --arg seeds "$CLUSTER_SEEDS" '{
            status: $status, masters: 3, seeds: $seeds,
            rating_writes: {single: $ws, cluster: $wc},
            consumer: {single: $cs, cluster: $cc}}')
    CLUSTER_NOTE="$status; writes/s $(json_get "$WRITES_SINGLE" rps) on 1 Redis,"
    CLUSTER_NOTE+=" $(json_get "$WRITES_CLUSTER" rps) on the cluster; consumer events/s"
    CLUSTER_NOTE+=" $(json_get "$CONSUMER_SINGLE" events_per_sec) / $(json_get "$CONSUMER_CLUSTER" events_per_sec)"
    echo "   $CLUSTER_NOTE" >&2
}

# BENCH_ONLY=cluster: only this section, its JSON to OUT.
bench_cluster_only() {
    bench_cluster
    echo "cluster: $CLUSTER_NOTE"
    echo "(wrk and the service share this machine's $(nproc) cores with every Redis node)"
    mkdir -p "$(dirname "$1")"
    jq -n --argjson machine "$(machine_json)" --argjson cluster "$CLUSTER_JSON" \
        '{machine: $machine, cluster: $cluster}' >"$1"
    log "wrote $1"
    [ -z "$BENCH_FAILED" ]
}

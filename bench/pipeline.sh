# The event pipeline section of scripts/bench (sourced after bench/lib.sh and
# bench/consumer.sh, not run): outbox → relay → [Kafka → consumer] → Redis, end to end.
#
#   drain: BENCH_PIPELINE_EVENTS outbox rows over BENCH_EVENT_POSTS posts, staged by SQL as
#          bench/consumer.sh stages them (a fresh database, key prefix, topic and group for
#          every run), applied to Redis by one service with relay and consumer on, in
#          embedded mode and in Kafka mode, each
#            cold: the rows wait in the outbox when the service starts; first_applied_secs
#                  counts from /healthz answering (in Kafka mode mostly the group join);
#            warm: the service runs (its consumer has joined), then the rows are committed
#                  in one transaction; first_applied_secs counts from that commit.
#          events/s is post_rate_events_applied_total read by `loadgen watch-metric` from its
#          first nonzero value to all of them (Kafka cold: the consumer on a backlog the relay
#          published during the join), all_applied_secs from the same start as
#          first_applied_secs. Redis must then hold exactly the staged deltas (the
#          self-healing is off, as in bench/consumer.sh: the rows have no ratings).
#   lag:   Kafka mode with STATS_CACHE_TTL_SECS=0, `loadgen` paced at each of
#          BENCH_PIPELINE_RATES ratings/s (rate=80,rerate=20) for BENCH_PIPELINE_SECS; the
#          p50/p90/p99 and mean of post_rate_event_lag_seconds (commit → applied to Redis)
#          over the run, linear within its doubling buckets (1, 2, 4, ... ms). loadgen's
#          exactness check (the API's stats against `ratings`) must pass.
#
# Environment: BENCH_PIPELINE_EVENTS (200000), BENCH_PIPELINE_RATES ("1000"; "" skips the lag
# runs), BENCH_PIPELINE_SECS (20), BENCH_PIPELINE_USERS (100 raters, 1000 posts),
# BENCH_SKIP_PIPELINE=1 skips the section, BENCH_SKIP_KAFKA=1 leaves the embedded drain only.
# Kafka: the broker of bench/consumer.sh (KAFKA_BROKERS, or scripts/kafka-broker on KAFKA_PORT).
# Sets PIPELINE_JSON (the "pipeline" object of the results) and PIPELINE_NOTE (one line).

BENCH_PIPELINE_EVENTS=${BENCH_PIPELINE_EVENTS:-200000}
BENCH_PIPELINE_RATES=${BENCH_PIPELINE_RATES-1000}
BENCH_PIPELINE_SECS=${BENCH_PIPELINE_SECS:-20}
BENCH_PIPELINE_USERS=${BENCH_PIPELINE_USERS:-100}
PIPELINE_JSON=null
PIPELINE_NOTE="not run"
PIPELINE_RUN=0

# pipeline_setup MODE: a fresh database (migrated), and in PIPE_ENV the service's settings
# for MODE with a new topic and group; PIPE_PREFIX is the run's own key prefix.
pipeline_setup() {
    PIPELINE_RUN=$((PIPELINE_RUN + 1))
    PIPE_PREFIX="$BENCH_RUN:pipeline$PIPELINE_RUN:"
    PIPE_ENV=()
    if [ "$1" = kafka ]; then
        local topic="$BENCH_RUN-pipeline$PIPELINE_RUN"
        KAFKA_TOPICS+=("$topic")
        KAFKA_GROUPS+=("$topic")
        PIPE_ENV=(KAFKA_BROKERS="$BENCH_BROKERS" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic")
    fi
    fresh_db "post_rate_${BENCH_RUN}_pipeline"
    DATABASE_URL="$DB_URL" RUST_LOG=warn "$BIN/post-rate" migrate
}

# The value of an unlabelled sample in a /metrics text file (0 when missing).
pipeline_metric() { awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }' "$2"; }

# Waits until the service's consumer has joined its group (at most 30 s).
pipeline_joined() {
    local _
    for _ in $(seq 1 300); do
        curl -fs "$BENCH_URL/metrics" -o "$BENCH_TMP/pipeline-metrics.txt" &&
            [ "$(pipeline_metric post_rate_consumer_rebalances_total "$BENCH_TMP/pipeline-metrics.txt")" -ge 1 ] &&
            return 0
        sleep 0.1
    done
    log "pipeline: the consumer did not join its group in 30 s"
}

# pipeline_drain MODE cold|warm: one drain run; sets PIPE_RESULT (a JSON object).
# Called as `pipeline_drain ... || ...`, so errexit is off here: every step checks itself.
pipeline_drain() {
    local mode=$1 kind=$2 BENCH_EVENTS=$BENCH_PIPELINE_EVENTS ok=1
    local heal=(STATS_AUDIT_INTERVAL_SECS=0 STATS_REPAIR_GRACE_SECS=604800)
    pipeline_setup "$mode" || return 1
    local name="pipeline$PIPELINE_RUN" metrics="$BENCH_TMP/pipeline$PIPELINE_RUN-metrics.txt"
    log "pipeline: drain $mode $kind, $BENCH_EVENTS outbox events over $BENCH_EVENT_POSTS posts"
    stage_outbox "$DB_URL" || return 1
    if [ "$kind" = warm ]; then
        # Set aside, and committed again (same rows, one transaction) once the service runs.
        psql_q -d "$DB_URL" -c "CREATE UNLOGGED TABLE pipeline_staged AS TABLE rating_events;
            TRUNCATE rating_events" || return 1
    fi
    start_service "$DB_URL" "$PIPE_PREFIX" "${heal[@]}" "${PIPE_ENV[@]}" || return 1
    if [ "$kind" = warm ]; then
        if [ "$mode" = kafka ]; then pipeline_joined; fi
        psql_q -d "$DB_URL" -c "INSERT INTO rating_events SELECT * FROM pipeline_staged" || return 1
    fi
    watch_metric post_rate_events_applied_total "$name" || ok=
    curl -fs "$BENCH_URL/metrics" -o "$metrics" || : >"$metrics"
    stop_service
    local mism
    mism=$(redis_mismatches "$PIPE_PREFIX")
    PIPE_RESULT=$(jq -c --argjson mism "$mism" --argjson ok "${ok:-0}" \
        --argjson dup "$(pipeline_metric post_rate_events_duplicate_total "$metrics")" \
        --argjson gap "$(pipeline_metric post_rate_events_gap_total "$metrics")" '{
            events_per_sec: (if .secs > 0 then .per_sec | round else null end),
            secs: (.secs * 1000 | round / 1000),
            first_applied_secs: ((.first_nonzero_secs // 0) * 1000 | round / 1000),
            all_applied_secs: (((.first_nonzero_secs // 0) + .secs) * 1000 | round / 1000),
            complete: (.reached and $ok == 1), redis_mismatches: $mism,
            duplicates: $dup, gaps: $gap}' "$BENCH_TMP/$name.json") || return 1
    echo "   $mode $kind: $PIPE_RESULT" >&2
}

# pipeline_quantiles BEFORE AFTER: the lag histogram between two /metrics snapshots as
# {"events","p50_ms","p90_ms","p99_ms","mean_ms"} (a quantile beyond the last bucket: null).
pipeline_quantiles() {
    awk 'function q(r,   i, lo, prev) {
             for (i = 1; i < k && c[i] < r; i++) {}
             if (les[i] == "+Inf") return "null"
             lo = (i == 1 ? 0 : les[i - 1]); prev = (i == 1 ? 0 : c[i - 1])
             return sprintf("%.1f", 1000 * (lo + (les[i] - lo) * (r - prev) / (c[i] - prev)))
         }
         /^post_rate_event_lag_seconds_bucket/ {
             match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
             if (FNR == NR) b[le] = $2; else { les[++k] = le; c[k] = $2 - b[le] }
         }
         $1 == "post_rate_event_lag_seconds_sum" { if (FNR == NR) s0 = $2; else s = $2 - s0 }
         END {
             n = c[k]
             if (n == 0) { printf "{\"events\":0,\"p50_ms\":null,\"p90_ms\":null,\"p99_ms\":null,\"mean_ms\":null}"; exit }
             printf "{\"events\":%d,\"p50_ms\":%s,\"p90_ms\":%s,\"p99_ms\":%s,\"mean_ms\":%.1f}",
                 n, q(0.5 * n), q(0.9 * n), q(0.99 * n), 1000 * s / n
         }' "$1" "$2"
}

# pipeline_lag RATE: one paced loadgen run in Kafka mode; sets PIPE_RESULT.
pipeline_lag() {
    local rate=$1 ok=1
    pipeline_setup kafka || return 1
    local name="pipeline$PIPELINE_RUN" before after
    before="$BENCH_TMP/$name-before.txt" after="$BENCH_TMP/$name-after.txt"
    log "pipeline: lag, Kafka mode, $rate ratings/s for ${BENCH_PIPELINE_SECS}s (loadgen)"
    start_service "$DB_URL" "$PIPE_PREFIX" "${PIPE_ENV[@]}" STATS_CACHE_TTL_SECS=0 || return 1
    # Joined before the paced run, or the first events wait for the join and inflate the tail.
    pipeline_joined
    curl -fs "$BENCH_URL/metrics" -o "$before" || return 1
    "$BIN/loadgen" --url "$BENCH_URL" --users "$BENCH_PIPELINE_USERS" --posts 1000 \
        --duration "$BENCH_PIPELINE_SECS" -c 64 --mix rate=80,rerate=20 --rate "$rate" \
        --database-url "$DB_URL" --json "$BENCH_TMP/$name.json" >"$BENCH_TMP/$name.txt" 2>&1 || ok=
    # loadgen's check has waited until Redis agreed with `ratings`: every event is applied.
    curl -fs "$BENCH_URL/metrics" -o "$after" || return 1
    stop_service
    grep -E '^(exactness|error)' "$BENCH_TMP/$name.txt" | sed 's/^/   /' >&2
    [ -s "$BENCH_TMP/$name.json" ] || echo '{}' >"$BENCH_TMP/$name.json"
    PIPE_RESULT=$(jq -c --argjson q "$(pipeline_quantiles "$before" "$after")" --argjson rate "$rate" \
        --argjson secs "$BENCH_PIPELINE_SECS" --argjson ok "${ok:-0}" '
        (.ops // [] | map(select(.op == "all")) | first) as $all | {
            rate: $rate, secs: $secs, writes_per_sec: ($all.rps // 0 | round),
            write_p99_ms: $all.p99_ms, lag: $q, exact: ($ok == 1 and .check.mismatches == 0),
            exactness_mismatches: .check.mismatches}' "$BENCH_TMP/$name.json") || return 1
    echo "   $rate/s: $PIPE_RESULT" >&2
}

bench_pipeline() {
    [ "$BENCH_ONLY" = consumer ] && return 0
    log "event pipeline: drain events/s and commit → Redis lag"
    PIPELINE_JSON='{"status": "skipped"}' PIPELINE_NOTE="skipped (BENCH_SKIP_PIPELINE=1)"
    [ "${BENCH_SKIP_PIPELINE:-}" = 1 ] && return 0
    local modes=(embedded) rates=() status=ok drain='{}' lag='[]' mode kind rate
    if [ "${BENCH_SKIP_KAFKA:-}" != 1 ]; then
        use_brokers
        modes+=(kafka)
        read -r -a rates <<<"$BENCH_PIPELINE_RATES"
    fi
    for mode in "${modes[@]}"; do
        for kind in cold warm; do
            pipeline_drain "$mode" "$kind" || { PIPE_RESULT='{"complete": false}'; stop_service; }
            drain=$(jq -c --argjson r "$PIPE_RESULT" ".$mode.$kind = \$r" <<<"$drain")
            if [ "$(jq '.complete and .redis_mismatches == 0' <<<"$PIPE_RESULT")" != true ]; then
                status=failed
            fi
        done
    done
    for rate in "${rates[@]}"; do
        pipeline_lag "$rate" || { PIPE_RESULT="{\"rate\": $rate, \"exact\": false}"; stop_service; }
        lag=$(jq -c --argjson r "$PIPE_RESULT" '. + [$r]' <<<"$lag")
        [ "$(jq .exact <<<"$PIPE_RESULT")" = true ] || status=failed
    done
    [ "$status" = ok ] || BENCH_FAILED=1
    PIPELINE_JSON=$(jq -n --arg status "$status" --argjson events "$BENCH_PIPELINE_EVENTS" \
        --argjson posts "$BENCH_EVENT_POSTS" --argjson drain "$drain" --argjson lag "$lag" \
        --arg brokers "${BENCH_BROKERS:-}" '{status: $status, drain_events: $events,
            drain_posts: $posts, drain: $drain, lag: $lag, brokers: $brokers}')
    PIPELINE_NOTE=$(jq -r '"\(.status); drain of \(.drain_events) events: " + ([.drain | to_entries[] |
        "\(.key) \(.value.warm.events_per_sec)/s warm, cold all applied \(.value.cold.all_applied_secs)"
        + " s after start (first \(.value.cold.first_applied_secs) s)"] | join("; ")) + ([.lag[] |
        "; lag at \(.rate)/s: p50 \(.lag.p50_ms), p90 \(.lag.p90_ms), p99 \(.lag.p99_ms) ms"]
        | join(""))' <<<"$PIPELINE_JSON")
    echo "   $PIPELINE_NOTE" >&2
}

# BENCH_ONLY=pipeline: only this section, its JSON to OUT.
bench_pipeline_only() {
    bench_pipeline
    echo "event pipeline (bench/pipeline.sh): $PIPELINE_NOTE"
    echo "(loadgen, the service, PostgreSQL, Redis and the broker share this machine's $(nproc) cores)"
    mkdir -p "$(dirname "$1")"
    jq -n --argjson machine "$(machine_json)" --argjson pipeline "$PIPELINE_JSON" \
        '{machine: $machine, pipeline: $pipeline}' >"$1"
    log "wrote $1"
    [ -z "$BENCH_FAILED" ]
}

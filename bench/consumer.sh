# The Kafka consumer section of scripts/bench (sourced after bench/lib.sh, not run): the stats
# consumer's events/s against rdkafka consuming the same topic without applying.
#
# BENCH_EVENTS outbox rows over BENCH_EVENT_POSTS posts are inserted by SQL into a fresh
# database and published by the service (RUN_CONSUMER=false) to a new topic. Then
#   raw:      `loadgen consume-raw` reads the topic with a new group, counting messages only;
#   consumer: the service (RUN_RELAY=false) reads it with another new group and applies to Redis.
# Both are timed from the first event to the last, so the group join is left out; the
# consumer's times come from `loadgen watch-metric` reading `post_rate_events_applied_total` on
# /metrics every BENCH_POLL_MS. Redis must then hold exactly the staged deltas of every post.
#
# The staged events have no ratings behind them, so PostgreSQL's truth is "no stats": the
# self-healing would rightly rebuild Redis to that. It is turned off here (no audit, a grace of
# a week) so that the consumer's own apply is what is measured and checked.
#
# Sets CONSUMER_JSON (the "consumer" object of the results), CONSUMER_RATE, RAW_RATE,
# CONSUMER_RATIO and CONSUMER_NOTE (one line for the summary).

BENCH_EVENTS=${BENCH_EVENTS:-1000000}
BENCH_EVENT_POSTS=${BENCH_EVENT_POSTS:-5000}
BENCH_POLL_MS=${BENCH_POLL_MS:-5}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_TOPICS=()
KAFKA_GROUPS=()
BENCH_BROKERS=
STARTED_BROKER=

# Deletes the run's topics and groups (the service must have left its group), then stops the
# broker if this run started it. Called by cleanup.
kafka_cleanup() {
    if [ ${#KAFKA_TOPICS[@]} -gt 0 ] || [ ${#KAFKA_GROUPS[@]} -gt 0 ]; then
        local args=()
        for t in "${KAFKA_TOPICS[@]}"; do args+=(--topic "$t"); done
        for g in "${KAFKA_GROUPS[@]}"; do args+=(--group "$g"); done
        "$BIN/loadgen" kafka-delete --brokers "$BENCH_BROKERS" "${args[@]}" >&2 ||
            log "could not delete Kafka topics/groups: ${KAFKA_TOPICS[*]} ${KAFKA_GROUPS[*]}"
    fi
    if [ -n "$STARTED_BROKER" ]; then
        KAFKA_PORT=$KAFKA_PORT scripts/kafka-broker stop >&2 || true
    fi
}
CLEANUP_HOOKS+=(kafka_cleanup)

# KAFKA_BROKERS when set, else the local broker (scripts/kafka-broker), started if need be.
use_brokers() {
    if [ -n "${KAFKA_BROKERS:-}" ]; then
        BENCH_BROKERS=$KAFKA_BROKERS
        return
    fi
    BENCH_BROKERS="127.0.0.1:$KAFKA_PORT"
    if ! KAFKA_PORT=$KAFKA_PORT scripts/kafka-broker status >/dev/null 2>&1; then
        KAFKA_PORT=$KAFKA_PORT scripts/kafka-broker start >&2
        # Only a broker this script started (it has a pid file) is stopped again.
        if KAFKA_PORT=$KAFKA_PORT scripts/kafka-broker status >/dev/null 2>&1; then
            STARTED_BROKER=1
        fi
    fi
}

# stage_outbox URL: the rating-shaped deltas (4 in 5 new ratings, 1 in 5 re-rates, 1 in 10
# with weight 250) go straight into the outbox; the per-post sums Redis must end up with
# ("post c s h0..h5 w ws") go to $BENCH_TMP/expected.txt.
stage_outbox() {
    psql_q -d "$1" -o /dev/null <<SQL
SELECT setseed(0.17);
INSERT INTO rating_events
    (post_id, user_id, score, prev_score, weight, prev_weight,
     d_count, d_score_sum, bucket_out, bucket_in, d_weight_sum, d_weighted_sum)
SELECT post, g, score, old, w, CASE WHEN old IS NOT NULL THEN w END,
       CASE WHEN old IS NULL THEN 1 ELSE 0 END, score - coalesce(old, 0), old, score,
       CASE WHEN old IS NULL THEN w ELSE 0 END, (score - coalesce(old, 0)) * w
FROM (SELECT g, 1 + floor(random() * $BENCH_EVENT_POSTS)::bigint AS post,
             floor(random() * 6)::smallint AS score,
             CASE WHEN g % 5 = 0 THEN floor(random() * 6)::smallint END AS old,
             CASE WHEN g % 10 = 0 THEN 250 ELSE 1000 END AS w
      FROM generate_series(1, $BENCH_EVENTS) g) e;
SQL
    local h=() b
    for b in 0 1 2 3 4 5; do
        h+=("count(*) FILTER (WHERE bucket_in = $b) - count(*) FILTER (WHERE bucket_out = $b)")
    done
    local IFS=,
    psql_q -d "$1" -F ' ' -o "$BENCH_TMP/expected.txt" -c "
        SELECT post_id, sum(d_count), sum(d_score_sum), ${h[*]}, sum(d_weight_sum),
               sum(d_weighted_sum)
        FROM rating_events GROUP BY post_id ORDER BY post_id"
}

# redis_mismatches PREFIX [PORT...]: posts whose stats hash differs from
# $BENCH_TMP/expected.txt (a missing hash or field counts as 0). Reads every PREFIXstats:*
# hash (PREFIXstats:{TAG}:ID) of the one Redis on 6379, or of the cluster masters on PORTs.
redis_mismatches() {
    local prefix=$1 port
    shift
    [ $# -gt 0 ] || set -- 6379
    : >"$BENCH_TMP/redis-found.txt"
    for port in "$@"; do
        redis-cli -h 127.0.0.1 -p "$port" --scan --pattern "${prefix}stats:*" >"$BENCH_TMP/keys.txt"
        sed 's/.*/HMGET & c s h0 h1 h2 h3 h4 h5 w ws/' "$BENCH_TMP/keys.txt" |
            redis-cli -h 127.0.0.1 -p "$port" | sed 's/^$/0/' | paste -d' ' - - - - - - - - - - |
            paste -d' ' <(sed 's/.*://' "$BENCH_TMP/keys.txt") - >>"$BENCH_TMP/redis-found.txt"
    done
    awk 'NR == FNR { found[$1] = $0; next }
         { print ($1 in found) ? found[$1] : $1 " 0 0 0 0 0 0 0 0 0 0" }' \
        "$BENCH_TMP/redis-found.txt" "$BENCH_TMP/expected.txt" >"$BENCH_TMP/redis.txt"
    diff "$BENCH_TMP/expected.txt" "$BENCH_TMP/redis.txt" | grep -c '^>' || true
}

# watch_metric COUNTER NAME: `loadgen watch-metric` until COUNTER reaches BENCH_EVENTS; its
# JSON goes to $BENCH_TMP/NAME.json.
watch_metric() {
    "$BIN/loadgen" watch-metric --url "$BENCH_URL" --metric "$1" --target "$BENCH_EVENTS" \
        --interval-ms "$BENCH_POLL_MS" --json "$BENCH_TMP/$2.json" >&2
}

bench_consumer() {
    log "consumer events/s vs raw rdkafka consumption"
    CONSUMER_RATE= RAW_RATE= CONSUMER_RATIO=null
    if [ "${BENCH_SKIP_KAFKA:-}" = 1 ]; then
        CONSUMER_NOTE="skipped (BENCH_SKIP_KAFKA=1)"
        CONSUMER_JSON='{"status": "skipped", "note": "BENCH_SKIP_KAFKA=1"}'
        echo "   $CONSUMER_NOTE" >&2
        return
    fi
    use_brokers
    local name="post_rate_${BENCH_RUN}_consumer" prefix="$BENCH_RUN:consumer:"
    local topic="$BENCH_RUN-rating-events" raw_group="$BENCH_RUN-raw" group="$BENCH_RUN-consumer"
    local kafka=(KAFKA_BROKERS="$BENCH_BROKERS" KAFKA_TOPIC="$topic"
        STATS_AUDIT_INTERVAL_SECS=0 STATS_REPAIR_GRACE_SECS=604800)
    KAFKA_TOPICS+=("$topic")
    KAFKA_GROUPS+=("$raw_group" "$group")
    fresh_db "$name"
    DATABASE_URL="$DB_URL" RUST_LOG=warn "$BIN/post-rate" migrate
    log "staging $BENCH_EVENTS outbox events over $BENCH_EVENT_POSTS posts"
    stage_outbox "$DB_URL"

    log "publishing them to $topic on $BENCH_BROKERS (RUN_CONSUMER=false)"
    start_service "$DB_URL" "$prefix" "${kafka[@]}" RUN_CONSUMER=false
    watch_metric post_rate_relay_published_total publish
    local left
    left=$(wait_outbox_empty "$DB_URL" 60)
    stop_service
    log "published; the outbox was empty ${left}s later"

    log "raw: loadgen consume-raw, group $raw_group"
    local ok=1
    "$BIN/loadgen" consume-raw --brokers "$BENCH_BROKERS" --topic "$topic" --group "$raw_group" \
        --events "$BENCH_EVENTS" --json "$BENCH_TMP/raw.json" >&2 || ok=
    [ -s "$BENCH_TMP/raw.json" ] || echo '{}' >"$BENCH_TMP/raw.json"
    RAW_RATE=$(jq -r '(.events_per_sec // 0) * 10 | round / 10' "$BENCH_TMP/raw.json")

    log "consumer: the service with RUN_RELAY=false, group $group"
    start_service "$DB_URL" "$prefix" "${kafka[@]}" KAFKA_GROUP_ID="$group" RUN_RELAY=false \
        RUN_CONSUMER=true
    watch_metric post_rate_events_applied_total consumer || ok=
    local metrics=$BENCH_TMP/consumer-metrics.txt
    curl -fs "$BENCH_URL/metrics" >"$metrics" || true
    stop_service
    local secs mism dup gap posts
    CONSUMER_RATE=$(jq -r '.per_sec * 10 | round / 10' "$BENCH_TMP/consumer.json")
    secs=$(jq -r '.secs * 1000 | round / 1000' "$BENCH_TMP/consumer.json")
    mism=$(redis_mismatches "$prefix")
    posts=$(wc -l <"$BENCH_TMP/expected.txt")
    dup=$(awk '$1 == "post_rate_events_duplicate_total" {print $2}' "$metrics")
    gap=$(awk '$1 == "post_rate_events_gap_total" {print $2}' "$metrics")
    if [ -n "$ok" ]; then CONSUMER_RATIO=$(ratio "$CONSUMER_RATE" "$RAW_RATE"); fi
    local status=ok
    if [ -z "$ok" ]; then status="incomplete"; elif [ "$mism" != 0 ]; then status="redis_mismatch"; fi
    echo "   consumer $CONSUMER_RATE events/s (${secs}s), raw $RAW_RATE events/s," \
        "ratio $CONSUMER_RATIO; Redis: $mism of $posts posts differ" >&2
    CONSUMER_NOTE="$status; $BENCH_EVENTS events over $posts posts, Redis mismatches: $mism,"
    CONSUMER_NOTE+=" duplicates ${dup:-?}, gaps ${gap:-?}"
    CONSUMER_JSON=$(jq -n --arg status "$status" --argjson events "$BENCH_EVENTS" \
        --argjson posts "$posts" --argjson rate "$CONSUMER_RATE" --argjson secs "$secs" \
        --argjson raw "$(cat "$BENCH_TMP/raw.json")" --argjson raw_rate "$RAW_RATE" \
        --argjson ratio "$CONSUMER_RATIO" --argjson mism "$mism" \
        --argjson dup "${dup:-null}" --argjson gap "${gap:-null}" \
        --argjson pub "$(jq '.per_sec' "$BENCH_TMP/publish.json")" \
        --arg brokers "$BENCH_BROKERS" '{
            status: $status, events: $events, posts: $posts, events_per_sec: $rate,
            raw_events_per_sec: $raw_rate, ratio: $ratio, consumer_secs: $secs,
            raw_secs: $raw.secs, raw_bytes: $raw.bytes, redis_mismatches: $mism,
            duplicates: $dup, gaps: $gap, relay_events_per_sec: $pub, brokers: $brokers}')
    if [ "$status" != ok ]; then
        log "consumer section: $CONSUMER_NOTE"
        BENCH_FAILED=1
    fi
}

# The memory section of scripts/bench (sourced after bench/lib.sh, not run): the service's
# resident memory (VmRSS of the process) idle, after BENCH_SIGNUPS sign-ups (each one
# registration and one token request through loadgen, so two argon2 hashes), and under
# BENCH_RSS_SECS of loadgen traffic (the most seen, sampled every 0.5 s, and at the end),
# on a fresh database in embedded mode with the default settings.
#
# Sets RSS_JSON (the "rss" object of the results) and RSS_NOTE (one line for the summary).

BENCH_SIGNUPS=${BENCH_SIGNUPS:-1000}
BENCH_RSS_SECS=${BENCH_RSS_SECS:-20}
RSS_JSON=null
RSS_NOTE="not run"

# rss_mb PID: resident memory in MB.
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

bench_rss() {
    [ "$BENCH_ONLY" = consumer ] && return 0
    fresh_db "post_rate_${BENCH_RUN}_rss"
    start_service "$DB_URL" "${BENCH_RUN}_rss:"
    sleep 2
    local idle signed under=0 after secs hashes_per_sec sample
    idle=$(rss_mb "$SERVICE_PID")
    log "rss: idle ${idle} MB; signing up $BENCH_SIGNUPS users (loadgen, 16 connections)"
    "$BIN/loadgen" --url "$BENCH_URL" --users "$BENCH_SIGNUPS" --authors 1 --posts 100 \
        --duration 0 -c 16 --no-check --json "$BENCH_TMP/rss-signups.json" \
        >"$BENCH_TMP/rss-signups.txt" 2>&1 || { cat "$BENCH_TMP/rss-signups.txt" >&2; return 1; }
    signed=$(rss_mb "$SERVICE_PID")
    secs=$(jq -r '.setup.users_secs' "$BENCH_TMP/rss-signups.json")
    # Every user (the author too) costs two hashes: registration and token.
    hashes_per_sec=$(awk -v n="$BENCH_SIGNUPS" -v s="$secs" 'BEGIN{ printf "%.1f", 2 * (n + 1) / s }')
    log "rss: ${signed} MB after the sign-ups (${hashes_per_sec} hashes/s); ${BENCH_RSS_SECS}s of loadgen traffic"
    "$BIN/loadgen" --url "$BENCH_URL" --users 100 --authors 1 --posts 200 \
        --duration "$BENCH_RSS_SECS" -c 32 --no-check >"$BENCH_TMP/rss-load.txt" 2>&1 &
    local load=$!
    while kill -0 "$load" 2>/dev/null; do
        sample=$(rss_mb "$SERVICE_PID")
        under=$(awk -v a="$under" -v b="$sample" 'BEGIN{ print (b > a) ? b : a }')
        sleep 0.5
    done
    wait "$load" || { cat "$BENCH_TMP/rss-load.txt" >&2; return 1; }
    after=$(rss_mb "$SERVICE_PID")
    stop_service
    RSS_JSON=$(printf '{"idle_mb":%s,"signups":%s,"after_signups_mb":%s,"signup_hashes_per_sec":%s,"password_hash_threads":%s,"load_secs":%s,"under_load_max_mb":%s,"after_load_mb":%s}' \
        "$idle" "$BENCH_SIGNUPS" "$signed" "$hashes_per_sec" "$(nproc)" "$BENCH_RSS_SECS" "$under" "$after")
    RSS_NOTE="idle ${idle} MB, ${signed} MB after $BENCH_SIGNUPS sign-ups (${hashes_per_sec} argon2 hashes/s on $(nproc) hashing threads), at most ${under} MB under ${BENCH_RSS_SECS}s of loadgen, ${after} MB after"
}

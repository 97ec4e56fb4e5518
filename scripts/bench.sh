#!/usr/bin/env bash
# End-to-end benchmarks (issue #5; results go in docs/benchmarks.md). Not part of the test suite.
#
#   scripts/bench.sh                  the whole set (about 10 minutes on 2 cores)
#   scripts/bench.sh ceilings         only the machine's ceilings
#   scripts/bench.sh matrix           only the record size x partitions x acks matrix
#   scripts/bench.sh goals            only the issue #5 goal runs (rdkafka_performance vs the
#                                     mock cluster, latency at half of peak, CPU/GB, restart)
#   scripts/bench.sh transactions     transactional produce (transactions of 100 and 10,000
#                                     records) next to idempotent produce (issue #15)
#   scripts/bench.sh tls              produce and consume over TLS next to plaintext (#16)
#
# Builds the release broker, the load generator (benches/loadgen, librdkafka via the rdkafka
# crate) and librdkafka's own rdkafka_performance from the same librdkafka source, then starts
# a fresh broker for every section on BENCH_PORT with its data under BENCH_DIR.
#
# Environment:
#   BENCH_PORT   broker port (default 19092, so a broker on 9092 is left alone)
#   BENCH_DIR    scratch directory on the disk under test (default target/bench)
#   BENCH_MB     MB produced per matrix run (default 500)
#   STRATA_SET   extra `--set name=value` arguments for the broker, space separated
#   BENCH_WARM_GB  GB written to a scratch file and deleted before measuring (default 16; 0: skip)
#
# Why the warm-up: on a VM whose memory the host backs lazily (this project's Firecracker
# machines), the first write into never-touched guest memory costs several times more kernel
# time than a write into memory used before: dd into fresh page cache measured 2.9 CPU s/GB
# here, the same dd right after 0.35. Page cache growth during a produce run pays that too, so
# the runs start from warmed memory, and the page-cache write cost measured just before is
# printed next to the broker's figures.
#
# Every run prints its workload, so a result line can be reproduced on its own with
# benches/loadgen/target/release/strata-loadgen (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
section=${1:-all}
port=${BENCH_PORT:-19092}
bench_dir=${BENCH_DIR:-$root/target/bench}
bench_mb=${BENCH_MB:-500}
loadgen=$root/benches/loadgen/target/release/strata-loadgen
strata=$root/target/release/strata
warm_gb=${BENCH_WARM_GB:-16}
mkdir -p "$bench_dir"

log() { printf '\n### %s\n' "$*"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

build() {
    log "building (release)"
    cargo build --release --bin strata
    cargo build --release --manifest-path benches/loadgen/Cargo.toml
    # rdkafka-sys built librdkafka from its bundled source; its examples build against it.
    local out
    out=$(ls -d benches/loadgen/target/release/build/rdkafka-sys-*/out 2>/dev/null | while read -r d; do
        [[ -f $d/src/librdkafka.a ]] && echo "$d"; done | head -n 1)
    [[ -n $out ]] || { echo "bench: librdkafka build output not found" >&2; exit 1; }
    make -s -C "$out/examples" rdkafka_performance >/dev/null
    perf_tool=$root/$out/examples/rdkafka_performance
    echo "rdkafka_performance: $perf_tool"
    echo "librdkafka: $(grep -A1 'name = "rdkafka-sys"' benches/loadgen/Cargo.lock | grep -o '"[^"]*+[^"]*"')"
}

# restart LABEL: starts the broker on the existing data and times it until every partition of
# idle-1000 has taken a produce (listening alone is not ready: logs open before serving).
restart() {
    local t1 t2 t3 t4
    t1=$EPOCHREALTIME
    "$strata" server --data-dir "$bench_dir/data" --listen "127.0.0.1:$port" >>"$bench_dir/broker.log" 2>&1 &
    broker_pid=$!
    wait_for_port
    t2=$EPOCHREALTIME
    "$loadgen" --bootstrap-servers "127.0.0.1:$port" --topic idle-1000 --partitions 1000 --records 1 --consumers 0 >/dev/null
    t3=$EPOCHREALTIME
    "$loadgen" --bootstrap-servers "127.0.0.1:$port" --topic idle-1000 --partitions 1000 --records 1 --consumers 0 >/dev/null
    t4=$EPOCHREALTIME
    printf '%s: listening after %.3f s, every partition took a produce after %.3f s (the same produce against the running broker: %.3f s)\n' \
        "$1" "$(secs "$t1" "$t2")" "$(secs "$t1" "$t3")" "$(secs "$t3" "$t4")"
}

broker_pid=""
start_broker() { # start_broker [extra strata args...]
    stop_broker
    rm -rf "$bench_dir/data"
    "$strata" server --data-dir "$bench_dir/data" --listen "127.0.0.1:$port" ${STRATA_SET:+$(printf -- '--set %s ' $STRATA_SET)} "$@" \
        >"$bench_dir/broker.log" 2>&1 &
    broker_pid=$!
    wait_for_port
}

wait_for_port() {
    local i
    for i in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$broker_pid" 2>/dev/null || { echo "bench: broker exited" >&2; tail "$bench_dir/broker.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "bench: broker did not listen within 30 s" >&2
    exit 1
}

stop_broker() {
    if [[ -n $broker_pid ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid"
        wait "$broker_pid" || true
    fi
    broker_pid=""
}
trap stop_broker EXIT

machine() {
    log "machine"
    date -u +"%Y-%m-%d %H:%M UTC"
    grep -m1 "model name" /proc/cpuinfo || true
    echo "cores: $(nproc), memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    uname -r
    df -h "$bench_dir" | tail -n 1
    "$strata" --version 2>/dev/null || true
    git log -1 --format='strata commit %h %s' 2>/dev/null || true
}

warm_memory() {
    [[ $warm_gb == 0 ]] && return 0
    log "warming guest memory: writing and deleting ${warm_gb} GB"
    dd if=/dev/zero of="$bench_dir/warm.tmp" bs=1M count=$((warm_gb * 1000)) status=none
    rm -f "$bench_dir/warm.tmp"
}

# The kernel's cost of write(2) into the page cache right now: system CPU seconds per GB for
# 1 GB written by dd (no fsync), the floor under any broker's CPU per GB produced.
page_cache_cost() {
    local t
    t=$( { /usr/bin/time -f "%S" dd if=/dev/zero of="$bench_dir/pc.tmp" bs=1M count=1000 status=none; } 2>&1 | tail -n 1)
    rm -f "$bench_dir/pc.tmp"
    echo "page-cache write cost now: $t system CPU s per GB (dd, 1 GB, no fsync)"
}

perf_summary() { # the summary line of rdkafka_performance
    grep -E "messages produced|backpressures" | sed 's/^% //'
}

ceilings() {
    log "ceiling: sequential write, 1 GiB, fdatasync at the end (dd)"
    dd if=/dev/zero of="$bench_dir/dd.tmp" bs=1M count=1024 conv=fdatasync 2>&1 | tail -n 1
    log "ceiling: 4 KiB writes, each synced (dd oflag=dsync, 2000 writes)"
    dd if=/dev/zero of="$bench_dir/dd.tmp" bs=4k count=2000 oflag=dsync 2>&1 | tail -n 1
    rm -f "$bench_dir/dd.tmp"
    log "ceiling: loopback TCP copy, 1 MiB writes"
    "$loadgen" --tcp-ceiling 4000
    log "ceiling: load generator against librdkafka's mock cluster (in-process, 1 broker)"
    "$loadgen" --mock --topic mock-1k --partitions 8 --record-size 1024 --records 1000000 --acks 1
    log "ceiling: rdkafka_performance -X test.mock.num.brokers=1 (in-process mock; it auto-creates 4 partitions)"
    "$perf_tool" -P -t perf-mock -s 1024 -c 2000000 -a 1 -X test.mock.num.brokers=1 -X linger.ms=5 2>&1 | perf_summary
    page_cache_cost
}

# run_loadgen NAME ARGS...: one loadgen run against the broker, with its cost.
run_loadgen() {
    local name=$1; shift
    log "$name"
    "$loadgen" --bootstrap-servers "127.0.0.1:$port" --broker-pid "$broker_pid" "$@"
}

matrix() {
    start_broker
    local size parts acks n
    for size in 100 1024 16384; do
        n=$((bench_mb * 1000000 / size))
        for parts in 1 8 64; do
            for acks in 1 all; do
                run_loadgen "matrix: ${size} B, ${parts} partitions, acks=${acks}" \
                    --topic "m-$size-$parts-$acks" --partitions "$parts" --record-size "$size" \
                    --records "$n" --acks "$acks"
            done
        done
    done
    stop_broker
}

goals() {
    start_broker
    log "goal: rdkafka_performance, 1 KiB, 8 partitions, acks=1 (topic made by the load generator)"
    "$loadgen" --bootstrap-servers "127.0.0.1:$port" --topic perf-8 --partitions 8 --records 1 --consumers 0 >/dev/null
    local i
    for i in 1 2 3; do
        "$perf_tool" -P -t perf-8 -s 1024 -c 2000000 -a 1 -b "127.0.0.1:$port" -X linger.ms=5 2>&1 | perf_summary
        "$perf_tool" -P -t perf-mock -s 1024 -c 2000000 -a 1 -X test.mock.num.brokers=1 -X linger.ms=5 2>&1 \
            | perf_summary | sed 's/^/mock: /'
    done

    log "goal: broker CPU per GB produced and consumed, 1 KiB, 8 partitions, acks=1"
    page_cache_cost
    run_loadgen "cost" --topic cost-8 --partitions 8 --record-size 1024 --records 2000000 --acks 1

    log "goal: p99 produce latency at half of peak, acks=all, 1 KiB, 8 partitions"
    # The peak is the median of three runs: one run swings by half on this kind of VM.
    local peak peaks=() i
    for i in 1 2 3; do
        peaks+=("$("$loadgen" --bootstrap-servers "127.0.0.1:$port" --topic "peak-8-$i" --partitions 8 --record-size 1024 \
            --records 1000000 --acks all --consumers 0 --json | tail -n 1 \
            | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["produce_records_per_s"]))')")
    done
    peak=$(printf '%s\n' "${peaks[@]}" | sort -n | sed -n 2p)
    echo "peak: $peak records/s (median of ${peaks[*]})"
    local linger
    for linger in 1 5; do
        sync
        run_loadgen "half of peak: $((peak / 2)) records/s, linger.ms=$linger" --topic "half-8-$linger" \
            --partitions 8 --record-size 1024 --records $((peak / 2 * 10)) --acks all --consumers 0 \
            --rate $((peak / 2)) --linger-ms "$linger"
        # The floor for this client on this machine: the same paced workload against
        # librdkafka's in-process mock cluster (no sockets, no disk).
        log "the same against the mock cluster (the client's own latency floor here)"
        "$loadgen" --mock --topic "half-mock-$linger" --partitions 8 --record-size 1024 \
            --records $((peak / 2 * 10)) --acks all --consumers 0 --rate $((peak / 2)) --linger-ms "$linger"
    done
    stop_broker

    log "goal: 1,000 idle partitions: peak RSS, then restart time"
    start_broker
    "$loadgen" --bootstrap-servers "127.0.0.1:$port" --topic idle-1000 --partitions 1000 --records 1000 --consumers 0 >/dev/null
    echo "after creating 1,000 partitions: $(grep -E 'VmHWM|RssAnon|RssFile' /proc/$broker_pid/status | tr -s ' \n' ' ')"
    kill -TERM "$broker_pid"
    local t0=$EPOCHREALTIME
    wait "$broker_pid" || true
    local t1=$EPOCHREALTIME
    printf 'clean stop (SIGTERM until exit): %.3f s\n' "$(secs "$t0" "$t1")"
    restart "start after a clean stop"
    sleep 5
    echo "idle after restart: $(grep -E 'VmHWM|RssAnon|RssFile' /proc/$broker_pid/status | tr -s ' \n' ' ')"
    kill -KILL "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
    restart "start after SIGKILL (recovery of every partition)"
    stop_broker
}

# Transactional produce next to idempotent produce (benches/transactions.py, confluent-kafka:
# the Rust load generator's librdkafka 2.12.1 spends about 100 ms per transaction in the client).
transactions() {
    log "transactions: idempotent vs transactions of 10,000 and of 100 records (benches/transactions.py)"
    "$root/.venv-test/bin/python" "$root/benches/transactions.py" --strata "$strata"
}

# Produce and consume over TLS next to plaintext (benches/tls.py, confluent-kafka; the load
# generator's librdkafka is built without OpenSSL).
tls() {
    log "tls: produce and consume over SSL vs PLAINTEXT (benches/tls.py)"
    "$root/.venv-test/bin/python" "$root/benches/tls.py" --strata "$strata"
}

build
machine
warm_memory
case $section in
    all) ceilings; matrix; goals; transactions; tls ;;
    transactions) transactions ;;
    tls) tls ;;
    ceilings) ceilings ;;
    matrix) matrix ;;
    goals) goals ;;
    *) echo "usage: $0 [all|ceilings|matrix|goals|transactions|tls]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Apache Kafka beside Caudal: a runnable classpath from bench/kafka/pom.xml, and KRaft
# brokers on 127.0.0.1 with free ports and data in a temporary directory.
#
#   kafka.sh libs                      the classpath directory (built once, then cached)
#   kafka.sh start [KEY=VALUE ...]     one combined broker+controller; extra KEY=VALUE
#                                      lines go to server.properties. Prints the run
#                                      directory; its kafka.env has BOOTSTRAP and PIDS.
#   kafka.sh start-cluster [KEY=VALUE ...]
#                                      three nodes, static controller quorum
#   kafka.sh stop RUNDIR [--keep]      stops what RUNDIR started and deletes RUNDIR (with
#                                      --keep: keeps it, for `restart`)
#   kafka.sh restart RUNDIR            starts the stopped nodes of RUNDIR on their data
#   kafka.sh tool CLASS [ARGS ...]     a Kafka tool on the same classpath (logs to stderr)
#
# KAFKA_CPUS=list pins the brokers (taskset); KAFKA_HEAP sets -Xmx/-Xms (default 1G, as
# kafka-server-start ships). Logs go to RUNDIR/node-N/server.log, never to stdout.
# docs/kafka.md says what was checked and why.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="$repo/target/kafka/$version"
libs="$cache/libs"

die() { echo "kafka.sh: $*" >&2; exit 1; }

ensure_libs() {
    local stamp
    stamp="$(sha256sum "$here/pom.xml" | cut -c1-16)"
    if [ -f "$cache/.complete-$stamp" ]; then return 0; fi
    command -v mvn >/dev/null || die "mvn is missing (OpenJDK 17 and Maven are needed)"
    rm -rf "$libs"
    mkdir -p "$libs"
    (cd "$here" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$libs" \
        -DincludeScope=runtime) >&2 || die "resolving $here/pom.xml failed"
    touch "$cache/.complete-$stamp"
}

# Log4j2 configuration: the broker logs INFO to its file; tools log WARN to stderr so
# that stdout (the Verifiable tools' JSON lines) stays clean.
write_log_configs() {
    mkdir -p "$cache"
    cat >"$cache/log4j2-server.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
EOF
    cat >"$cache/log4j2-tools.properties" <<'EOF'
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
EOF
}

free_ports() { # N ports, each free on 127.0.0.1 now, one per line
    python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s)
for s in held:
    print(s.getsockname()[1])
for s in held:
    s.close()
EOF
}

jvm() { # main class and arguments, on the classpath, with the tools' logging
    java -Xmx512M -XX:+UseG1GC -Dlog4j2.configurationFile="$cache/log4j2-tools.properties" \
        -cp "$libs/*" "$@"
}

# Writes node N's server.properties. Args: dir node port cport voters extra...
write_props() {
    local dir="$1" node="$2" port="$3" cport="$4" voters="$5" rf="$6"
    shift 6
    mkdir -p "$dir/data"
    {
        echo "process.roles=broker,controller"
        echo "node.id=$node"
        if [ -n "$voters" ]; then
            echo "controller.quorum.voters=$voters"
        else
            echo "controller.quorum.bootstrap.servers=127.0.0.1:$cport"
        fi
        echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        echo "log.dirs=$dir/data"
        echo "offsets.topic.replication.factor=$rf"
        echo "transaction.state.log.replication.factor=$rf"
        echo "transaction.state.log.min.isr=$(( rf > 1 ? 2 : 1 ))"
        echo "share.coordinator.state.topic.replication.factor=$rf"
        echo "share.coordinator.state.topic.min.isr=$(( rf > 1 ? 2 : 1 ))"
        echo "group.initial.rebalance.delay.ms=0"
        [ "$rf" -gt 1 ] && echo "min.insync.replicas=2"
        local kv
        for kv in "$@"; do echo "$kv"; done
    } >"$dir/server.properties"
}

launch() { # dir: starts the node whose server.properties is in dir; prints its pid
    local dir="$1" pin=()
    [ -n "${KAFKA_CPUS:-}" ] && pin=(taskset -c "$KAFKA_CPUS")
    local heap="${KAFKA_HEAP:-1G}"
    # The JVM options kafka-server-start.sh uses by default.
    "${pin[@]}" java -Xmx"$heap" -Xms"$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true -Dkafka.logs.dir="$dir" \
        -Dlog4j2.configurationFile="$cache/log4j2-server.properties" \
        -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    echo $!
}

wait_started() { # dir pid
    local dir="$1" pid="$2"
    for _ in $(seq 1200); do
        grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "the broker in $dir exited; see $dir/server.log and $dir/stdout.log"
        sleep 0.1
    done
    die "the broker in $dir did not start in 120 s; see $dir/server.log"
}

start() { # nodes, extra KEY=VALUE...
    local n="$1"
    shift
    ensure_libs
    write_log_configs
    mkdir -p "$repo/target/tmp"
    local run
    run="$(mktemp -d -p "$repo/target/tmp" kafka.XXXXXX)"
    local ports
    mapfile -t ports < <(free_ports $((2 * n)))
    local voters="" i
    if [ "$n" -gt 1 ]; then
        for i in $(seq 1 "$n"); do
            voters+="${voters:+,}$i@127.0.0.1:${ports[$((n + i - 1))]}"
        done
    fi
    local cluster_id bootstrap="" pids=""
    cluster_id="$(jvm kafka.tools.StorageTool random-uuid)"
    for i in $(seq 1 "$n"); do
        local dir="$run/node-$i" port="${ports[$((i - 1))]}" cport="${ports[$((n + i - 1))]}"
        write_props "$dir" "$i" "$port" "$cport" "$voters" "$(( n > 1 ? 3 : 1 ))" "$@"
        if [ "$n" -gt 1 ]; then
            jvm kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
                >"$dir/format.log" 2>&1 || die "formatting $dir failed; see $dir/format.log"
        else
            jvm kafka.tools.StorageTool format --standalone -t "$cluster_id" \
                -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
                || die "formatting $dir failed; see $dir/format.log"
        fi
        bootstrap+="${bootstrap:+,}127.0.0.1:$port"
    done
    for i in $(seq 1 "$n"); do
        local pid
        pid="$(launch "$run/node-$i")"
        pids+="${pids:+ }$pid"
    done
    {
        echo "BOOTSTRAP=$bootstrap"
        echo "PIDS=\"$pids\""
        echo "KAFKA_VERSION=$version"
    } >"$run/kafka.env"
    i=0
    for pid in $pids; do
        i=$((i + 1))
        wait_started "$run/node-$i" "$pid"
    done
    echo "$run"
}

stop() { # run dir [--keep]
    local run="$1" keep="${2:-}"
    [ -f "$run/kafka.env" ] || die "$run has no kafka.env"
    local PIDS=""
    # shellcheck disable=SC1091
    . "$run/kafka.env"
    local pid
    for pid in $PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    [ "$keep" = --keep ] || rm -rf "$run"
}

restart() { # run dir
    local run="$1"
    [ -f "$run/kafka.env" ] || die "$run has no kafka.env"
    local BOOTSTRAP="" pids="" i=0 dir pid
    # shellcheck disable=SC1091
    . "$run/kafka.env"
    write_log_configs
    for dir in "$run"/node-*; do
        : >"$dir/server.log"
        pid="$(launch "$dir")"
        pids+="${pids:+ }$pid"
    done
    {
        echo "BOOTSTRAP=$BOOTSTRAP"
        echo "PIDS=\"$pids\""
        echo "KAFKA_VERSION=$version"
    } >"$run/kafka.env"
    for pid in $pids; do
        i=$((i + 1))
        wait_started "$run/node-$i" "$pid"
    done
    echo "$run"
}

cmd="${1:-}"
shift || true
case "$cmd" in
libs) ensure_libs; echo "$libs" ;;
start) start 1 "$@" ;;
start-cluster) start 3 "$@" ;;
stop) stop "${1:?usage: kafka.sh stop RUNDIR [--keep]}" "${2:-}" ;;
restart) restart "${1:?usage: kafka.sh restart RUNDIR}" ;;
tool)
    ensure_libs
    write_log_configs
    jvm "$@"
    ;;
*) die "usage: kafka.sh libs | start [K=V ...] | start-cluster [K=V ...] | stop RUNDIR | tool CLASS [ARGS]" ;;
esac

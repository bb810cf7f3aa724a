#!/usr/bin/env bash
# Installs what the real-client tests need: kcat (Debian package), Node.js with the
# npm packages locked in js/package-lock.json (kafkajs) under js/node_modules, and a
# venv at <repo>/.venv holding the Python packages pinned in requirements.txt.
#
# Idempotent and fast when everything is already there: stamp files in js/node_modules
# and in the venv record the hash of what they were installed from (the lock file and
# node's version; requirements.txt and the interpreter), so a second run only checks
# `command -v` and compares two files.
#
# Runs as root on Debian 12 (`make client-deps`). Network: apt, the npm registry and
# PyPI only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"
req="$here/requirements.txt"
stamp="$venv/.caudal-client-deps.stamp"
python="${PYTHON:-python3}"

apt_updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" = 0 ]; then
        apt-get update -q
        apt_updated=1
    fi
    apt-get install -y -q --no-install-recommends "$@"
}

# --- gdb: a test past its deadline prints every thread's backtrace with it ---------
if ! command -v gdb >/dev/null 2>&1; then
    echo "setup.sh: installing gdb"
    apt_install gdb
fi

# --- Java 17 and Maven: the Java-client suite (tests/java) and Kafka beside us ------
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    echo "setup.sh: installing OpenJDK 17 and Maven"
    apt_install openjdk-17-jdk-headless maven
fi

# --- Go: Sarama, pinned to old Kafka releases (tests/go) -----------------------
if ! command -v go >/dev/null 2>&1; then
    echo "setup.sh: installing Go"
    apt_install golang-go
fi

# --- kcat -------------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
    echo "setup.sh: installing kcat"
    apt_install kcat
fi

# --- iptables and libfaketime: the nemesis's network faults and clock jumps ---------
if ! command -v iptables >/dev/null 2>&1; then
    echo "setup.sh: installing iptables"
    apt_install iptables
fi
if [ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
    echo "setup.sh: installing faketime"
    apt_install faketime
fi

# --- Node.js and kafkajs ------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: installing nodejs and npm"
    apt_install nodejs npm
fi
js="$here/js"
js_stamp="$js/node_modules/.caudal-client-deps.stamp"
js_want="$( { cat "$js/package.json" "$js/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$js_stamp" ] || [ "$(cat "$js_stamp")" != "$js_want" ]; then
    echo "setup.sh: npm ci in $js"
    # npm ci installs exactly the lock file (and starts from an empty node_modules).
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    (cd "$js" && node -e 'console.log("setup.sh: kafkajs " + require("kafkajs/package.json").version + ", node " + process.version)')
    echo "$js_want" >"$js_stamp"
fi

# --- venv -------------------------------------------------------------------
want_stamp="$( { cat "$req"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ]; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$venv"
        apt_install python3-venv
        "$python" -m venv "$venv"
    fi
fi

# Install only the requirements that are not already present at the pinned version.
missing="$("$venv/bin/python" - "$req" <<'PY'
import sys
from importlib import metadata

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        if metadata.version(name) == version:
            continue
    except metadata.PackageNotFoundError:
        pass
    print(line)
PY
)"
if [ -n "$missing" ]; then
    echo "setup.sh: pip installing:" $missing
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q --disable-pip-version-check $missing
fi

# Check the imports the tests rely on before declaring success.
"$venv/bin/python" - <<'PY'
import confluent_kafka
import kafka
import prometheus_client  # noqa: F401
import pytest
import pytest_timeout  # noqa: F401

print(
    "setup.sh: confluent-kafka %s (librdkafka %s), kafka-python %s, pytest %s"
    % (confluent_kafka.__version__, confluent_kafka.libversion()[0], kafka.__version__, pytest.__version__)
)
PY
kcat -V 2>&1 | head -n 1

echo "$want_stamp" >"$stamp"

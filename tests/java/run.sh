#!/usr/bin/env bash
# The Java client and Kafka's tools against Caudal (`make test-java`): JUnit under Maven,
# once with kafka-clients 4.4.0 plus the tools, once with kafka-clients 3.9.2 (-Pkafka3).
# Maven's repository (~/.m2) caches the jars; the build goes to target/java-tests/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
command -v mvn >/dev/null || { echo "run.sh: mvn is missing (OpenJDK 17 and Maven)" >&2; exit 1; }
export CAUDAL_BIN="${CAUDAL_BIN:-$repo/target/debug/caudal}"
export CAUDAL_REPO="$repo"
cd "$here"
for profile in "" "-Pkafka3"; do
    echo "java tests: $([ -n "$profile" ] && echo "kafka-clients 3.9.2" || echo "kafka-clients 4.4.0 and the tools")" >&2
    # Not -q: Surefire's "Tests run: N, Failures: ..." lines are the suite's verdict.
    mvn -B -ntp -Dstyle.color=never test $profile | grep -E "Tests run:|FAIL|ERROR|BUILD" || true
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "java tests failed ($profile)" >&2; exit 1; }
done

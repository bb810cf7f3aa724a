# Caudal: `make run` starts a broker on 127.0.0.1:9092 with its data in ./data;
# `make test` runs every test, installing the client tools the tests need.

CARGO ?= cargo
DATA_DIR ?= ./data
VENV := .venv

.PHONY: run run-cluster build release test test-rust test-raft-sim test-clients test-java test-go client-deps lint audit fmt clean soak soak-cluster

run: release
	mkdir -p $(DATA_DIR)
	./target/release/caudal --data-dir $(DATA_DIR) --listen 127.0.0.1:9092

# Three nodes on 127.0.0.1 (Kafka on 9192, 9292, 9392; data in ./data/N), RF 3 by default.
run-cluster: release
	DATA_DIR=$(DATA_DIR) bash tools/run-cluster.sh

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --bins

# Tools first (gdb for the tests' deadline reports), then the Rust tests, then the clients.
test: client-deps test-rust test-raft-sim test-clients test-java test-go

# The debug pass runs the raft schedules briefly; test-raft-sim runs 2,000 of them in
# an optimised build (each makes ~1,000 real durable writes: ~4.5 min here).
test-rust:
	RAFT_SIM_SECONDS=$${RAFT_SIM_SECONDS:-15} $(CARGO) test --workspace --all-targets

# With random log cuts (RAFT_SIM_CUTS=0 turns them off).
test-raft-sim:
	RAFT_SIM_SEEDS=$${RAFT_SIM_SEEDS:-2000} RAFT_SIM_SECONDS=$${RAFT_SIM_SECONDS:-360} $(CARGO) test -p caudal --release --test log raft_sim -- --nocapture

# Real Kafka clients (kcat, kafka-python, confluent-kafka) against the broker binary.
test-clients: build client-deps
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal $(VENV)/bin/python -m pytest -q tests/clients

client-deps:
	bash tests/clients/setup.sh

# Go clients (Sarama pinned to Kafka 0.11 and 1.0) against the broker binary.
test-go: build
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal bash tests/go/run.sh

# The Java client (4.4.0 and 3.9.2) and Kafka's own tools against the broker binary.
test-java: build client-deps
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal bash tests/java/run.sh

# The long crash loop: 20 SIGKILLs under load, and 5,000 seeded raft schedules over a
# faulty simulated network (the short forms run in `make test`).
soak:
	CAUDAL_CRASH_KILLS=$${CAUDAL_CRASH_KILLS:-20} $(CARGO) test -p caudal --test crash -- --nocapture
	RAFT_SIM_SEEDS=$${RAFT_SIM_SEEDS:-5000} RAFT_SIM_SECONDS=$${RAFT_SIM_SECONDS:-36000} $(CARGO) test -p caudal --release --test log raft_sim -- --nocapture

# Mixed faults (every nemesis kind: kill, pause, isolation, partitions, one-way, packet
# loss, delay/dup/reorder through a proxy, clock jumps, a full disk, leader elections,
# partition moves) against five nodes in network namespaces for an hour, checked by the
# history checker; then each fault kind against three Kafka nodes and three Caudal nodes
# in turn, kills and isolations for two minutes each (tests/clients/test_nemesis.py;
# CAUDAL_NEMESIS_SEED replays a schedule, CAUDAL_NEMESIS_OUT=dir keeps the figures).
soak-cluster: build client-deps
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal CAUDAL_SOAK_CLUSTER_SECONDS=$${CAUDAL_SOAK_CLUSTER_SECONDS:-3600} $(VENV)/bin/python -m pytest -q -s tests/clients/test_nemesis.py -k soak
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal CAUDAL_NEMESIS_KAFKA=$${CAUDAL_NEMESIS_KAFKA:-kill:120,isolate:120,pause,partition,bridge,one-way,loss,clock,disk-full} $(VENV)/bin/python -m pytest -q -s tests/clients/test_nemesis.py -k kafka

# Coverage-guided fuzzing of the frame reader, request decoders, record-batch validator
# and on-disk parsers (fuzz/run.sh; cargo-fuzz on stable, installed if missing).
# FUZZ_SECONDS per target; `make test` replays the seeds (tests/fuzz).
FUZZ_SECONDS ?= 60
.PHONY: fuzz

fuzz:
	CARGO=$(CARGO) FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

lint: audit
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# RustSec advisories, with the one documented exception (docs/operations.md).
audit:
	bash tools/audit/audit.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# --- Benchmarks (bench/run.sh; results in bench/results, report in docs/benchmarks.md) ---
# BOOTSTRAP=host:port runs the suite against an external broker (Kafka, Redpanda, ...)
# instead of a fresh Caudal; LABEL names the run. See docs/benchmarks.md.
.PHONY: bench bench-quick bench-report bench-build

bench-build:
	$(CARGO) build --release -p caudal -p caudal-loadgen --bins

# PEER=kafka: the same suite against Apache Kafka beside Caudal, both durabilities each
# (bench/peer.sh), and the side-by-side report.
PEER ?=
# Then the `replicated` workloads: three Caudal nodes beside a three-node Kafka.
bench: bench-build
	$(if $(filter kafka,$(PEER)),bash bench/peer.sh full,bash bench/run.sh full)
	bash bench/replicated.sh full

bench-quick: bench-build
	$(if $(filter kafka,$(PEER)),bash bench/peer.sh quick,bash bench/run.sh quick)
	bash bench/replicated.sh quick

# Only the replicated workloads (three nodes each of Caudal and Kafka).
bench-replicated: bench-build
	bash bench/replicated.sh full

bench-report:
	@test -e bench/results/latest || { echo "no results: run make bench-quick first" >&2; exit 1; }
	$(CARGO) build --release -p caudal-loadgen --bins
	main=$$(test -e bench/results/latest-caudal && echo bench/results/latest-caudal || echo bench/results/latest); \
	./target/release/caudal-loadgen report $$main bench/results/latest $$(ls -d bench/results/latest-* 2>/dev/null) \
		--doc docs/benchmarks.md --plot bench/latency.svg

# Caudal: `make run` starts a broker on 127.0.0.1:9092 with its data in ./data;
# `make test` runs every test, installing the client tools the tests need.

CARGO ?= cargo
DATA_DIR ?= ./data
VENV := .venv

.PHONY: run build release test test-rust test-clients client-deps lint fmt clean soak

run: release
	mkdir -p $(DATA_DIR)
	./target/release/caudal --data-dir $(DATA_DIR) --listen 127.0.0.1:9092

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

test: test-rust test-clients

test-rust:
	$(CARGO) test --all-targets

# Real Kafka clients (kcat, kafka-python, confluent-kafka) against the broker binary.
test-clients: build client-deps
	CAUDAL_BIN=$(CURDIR)/target/debug/caudal $(VENV)/bin/python -m pytest -q tests/clients

client-deps:
	bash tests/clients/setup.sh

# The long crash loop: 20 SIGKILLs under load (the short form runs in `make test`).
soak:
	CAUDAL_CRASH_KILLS=$${CAUDAL_CRASH_KILLS:-20} $(CARGO) test -p caudal --test crash -- --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)

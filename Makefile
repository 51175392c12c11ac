# The two set-up commands of the README are `make simulate` and `make test`;
# each installs what it needs (system packages, the AWS CLI) first.

CARGO ?= cargo
VENV := .venv
AWS_CLI := $(VENV)/bin/aws
# Cargo's output folder; CARGO_TARGET_DIR moves it, as it does for cargo.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
export AWS_EC2_METADATA_DISABLED := true

.PHONY: all build release simulate test bench deps clippy fmt clean eif

all: build

# System packages the tests and tools use: OpenSSL (an independent CMS and
# ECDH peer), its headers and pkg-config (for the EIF reference crate), and
# Python's venv module for the AWS CLI.
deps: .deps-installed $(AWS_CLI)

.deps-installed:
	@missing=""; \
	for tool in openssl pkg-config; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	[ -f /usr/include/openssl/ssl.h ] || missing="$$missing libssl-dev"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq openssl libssl-dev pkg-config python3-venv; \
	fi
	@touch $@

# The AWS CLI version 1, from PyPI, in a project-local virtual environment.
$(AWS_CLI):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check awscli
	@$(AWS_CLI) --version

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --workspace --bins

simulate: .deps-installed release
	$(TARGET_DIR)/release/simulate --bin-dir $(TARGET_DIR)/release

test: deps
	$(MAKE) --no-print-directory supply-chain
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) --no-print-directory clippy

# Licences, sources and RustSec advisories of every crate in Cargo.lock,
# checked offline against the advisory-db copy at ../shared/advisory-db;
# the policy and each exception's reason are in supply-chain.toml.
# `cargo fetch` downloads only the locked crates that are not cached yet,
# which `cargo metadata --offline` needs.
.PHONY: supply-chain
supply-chain:
	$(CARGO) fetch --locked
	python3 -m unittest discover -s scripts -p 'test_supply_chain.py'
	python3 scripts/supply_chain.py

# Criterion benchmarks, then the end-to-end load driver on release builds.
# Each load run first measures the cryptographic floor of one request; then
# concurrency 1 and 16 for latency and throughput against the floor and the
# direct SDK calls, and 20,000 requests at concurrency 64 with 1000 idle
# connections to each service. A run fails on any error, wrong secret or
# connection left open.
bench: deps
	$(CARGO) bench --workspace
	$(CARGO) build --release --workspace --bins
	$(TARGET_DIR)/release/load --bin-dir $(TARGET_DIR)/release --concurrency 1 --requests 500
	$(TARGET_DIR)/release/load --bin-dir $(TARGET_DIR)/release --concurrency 16 --requests 4000
	$(TARGET_DIR)/release/load --bin-dir $(TARGET_DIR)/release --mode enclave --concurrency 64 --requests 20000 --idle-connections 1000

# Builds a stand-in enclave image and its key policy with eif-tool here, and
# says which steps (the real image, nitro-cli) need a Nitro host.
eif:
	bash eif/scripts/make-eif.sh

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV) .deps-installed

# spocgw: the two commands a fresh Debian machine with Rust needs are `make demo` and
# `make test`; both install the Debian packages they use when run as root (otherwise they
# print the exact apt-get command).
SHELL := /bin/bash
CARGO ?= cargo

# command:package pairs the tests and the demo need
TOOLS := curl:curl openssl:openssl xmllint:libxml2-utils pkg-config:pkg-config swtpm:swtpm tpm2_checkquote:tpm2-tools
# pkg-config module:package pairs the build links against (tss-esapi)
LIBS := tss2-esys:libtss2-dev tss2-tctildr:libtss2-dev

.PHONY: all deps deps-graph size-report soap-venv bench-deps demo test lint check fmt clean bench bench-xsd bench-sbs fuzz

all: check

deps:
	@missing=""; \
	for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	for pair in $(LIBS); do \
	  mod=$${pair%%:*}; pkg=$${pair##*:}; \
	  pkg-config --exists $$mod 2>/dev/null || case "$$missing" in *" $$pkg"*) ;; *) missing="$$missing $$pkg";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# The generated-SOAP-client tests drive python zeep from a pinned virtualenv (PyPI).
SOAP_VENV := target/soap-venv
soap-venv: $(SOAP_VENV)/.installed
$(SOAP_VENV)/.installed: tests/soap-client/requirements.txt
	python3 -m venv $(SOAP_VENV)
	$(SOAP_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/soap-client/requirements.txt
	touch $@

# The import graph among src/'s top-level modules; fails on a cycle (CI runs it).
deps-graph:
	python3 tools/deps-graph.py src

# Files over 600 lines and functions over 80 in src/ (STYLE.md's limits), listed; fails on any (CI runs it).
size-report:
	python3 tools/size-report.py --strict

# The side-by-side benchmark also needs nginx (not needed by the tests).
bench-deps: deps
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || missing="$$missing nginx-light"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "missing:$$missing; run: sudo apt-get install -y$$missing"; exit 1; fi; }

demo: deps
	$(CARGO) run --quiet --locked -- demo

test: deps soap-venv
	$(CARGO) test --locked

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

check: lint test

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean

# Benchmarks: criterion micro-benchmarks, the XSD figures against xmllint, then spocgw against
# nginx side by side (bench/results/latest.md).
bench: bench-deps
	$(CARGO) bench --locked --bench validator --bench policy --bench tpm
	mkdir -p bench/results
	{ echo "# $$(date -u +%Y-%m-%dT%H:%M:%SZ) commit $$(git rev-parse --short HEAD)"; $(CARGO) bench --locked --bench audit; } | tee bench/results/audit.txt
	bash bench/xsd.sh
	bash bench/side-by-side.sh

bench-sbs: bench-deps
	bash bench/side-by-side.sh

bench-xsd: deps
	bash bench/xsd.sh

# Fuzzing (not in CI): cargo-fuzz targets in fuzz/, 60 s each by default.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in validate xsd_compile xsd_regex; do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t --sanitizer none -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

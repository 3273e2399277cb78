# spocgw: the two commands a fresh Debian machine with Rust needs are `make demo` and
# `make test`; both install the Debian packages they use when run as root (otherwise they
# print the exact apt-get command).
SHELL := /bin/bash
CARGO ?= cargo

# command:package pairs the tests and the demo need
TOOLS := curl:curl openssl:openssl xmllint:libxml2-utils

.PHONY: all deps demo test lint check fmt clean

all: check

deps:
	@missing=""; \
	for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

demo: deps
	$(CARGO) run --quiet --locked -- demo

test: deps
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

check: lint test

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean

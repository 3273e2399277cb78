# spocgw: the two commands a fresh Debian machine with Rust needs are `make demo` and
# `make test`; both install the Debian packages they use when run as root (otherwise they
# print the exact apt-get command).
SHELL := /bin/bash
CARGO ?= cargo

# command:package pairs the tests and the demo need
TOOLS := curl:curl openssl:openssl xmllint:libxml2-utils pkg-config:pkg-config swtpm:swtpm tpm2_checkquote:tpm2-tools \
  haproxy:haproxy promtool:prometheus lintian:lintian chromium:chromium
# pkg-config module:package pairs the build links against (tss-esapi)
LIBS := tss2-esys:libtss2-dev tss2-tctildr:libtss2-dev

.PHONY: all deps deps-graph size-report soap-venv bench-deps demo pair-demo deb test lint check fmt clean bench bench-xsd bench-sbs fuzz \
	image-deps image image-test

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

# The Debian package (packaging/deb.sh): the release binary stripped, unit, user, manual pages,
# completions; fails unless lintian reports no error and no warning. SPOCGW_BIN=... packages
# another build.
deb: deps
	@if [ -z "$(SPOCGW_BIN)" ]; then $(CARGO) build --release --locked --bin spocgw; fi
	SPOCGW_BIN=$(or $(SPOCGW_BIN),target/release/spocgw) bash packaging/deb.sh

# Two appliances behind HAProxy on loopback: failover, callbacks, witnesses, recovery (docs/pair.md).
pair-demo: deps
	$(CARGO) run --quiet --locked -- pair-demo

# The appliance (firmware-image/, docs/appliance.md). Debian 12's packages only; needs root.
# command:package pairs the image build and its boot test use
IMAGE_TOOLS := mmdebstrap:mmdebstrap mkfs.erofs:erofs-utils veritysetup:cryptsetup-bin \
  mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk cpio:cpio objcopy:binutils \
  qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils swtpm:swtpm tpm2_checkquote:tpm2-tools \
  openssl:openssl curl:curl systemd-analyze:systemd sbsign:sbsigntool \
  sign-efi-sig-list:efitools
IMAGE_FILES := /usr/lib/systemd/boot/efi/linuxx64.efi.stub:systemd-boot-efi \
  /usr/share/OVMF/OVMF_CODE_4M.secboot.fd:ovmf
image-deps: deps
	@missing=""; \
	for pair in $(IMAGE_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	for pair in $(IMAGE_FILES); do \
	  f=$${pair%%:*}; pkg=$${pair##*:}; [ -e $$f ] || missing="$$missing $$pkg"; \
	done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "missing:$$missing; run: sudo apt-get install -y$$missing"; exit 1; fi; }

# The image's gateway: the release build unless SPOCGW_BIN names another (CI boots the debug
# build `make test` already made: the image's mechanics do not depend on the optimisation).
SPOCGW_BIN ?= target/release/spocgw
image: image-deps
	@if [ "$(SPOCGW_BIN)" = target/release/spocgw ]; then $(CARGO) build --release --locked --bin spocgw; fi
	SPOCGW_BIN=$(SPOCGW_BIN) bash firmware-image/build.sh

# Boots the image under qemu (TCG) with swtpm: provision, certify, serve, attest, tamper.
image-test: image-deps
	$(CARGO) build --locked --bin spocgw
	SPOCGW_BIN=target/debug/spocgw python3 firmware-image/test.py

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

# One-command entry points (see README.md).
#   make demo   install everything, then run the agent against the bundled simulator
#   make test   install everything, then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-venv libvlc5 libvlc-bin vlc-plugin-base espeak-ng mosquitto \
	mosquitto-clients rtl-sdr libasound2-dev sox lame gpiod openssl systemd \
	debootstrap gettext alsa-utils gcc python3-dev lintian \
	libsndfile1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The end-to-end tests mostly wait on real time (about 20 % of a core each): five workers
# keep two cores busy; at six, the playout process of one now and then ran late (30 ms).
PYTEST_WORKERS ?= 5
# soundfile built from its source, so that it loads the system's libsndfile: the one its
# wheels bundle encodes the off-air recording (Opus) three times slower (docs/benchmarks.md).
PIP_SOUNDFILE := --no-binary soundfile

.PHONY: install apt venv demo test lint bench deb bundle image-chroot-test arm64-check clean

install: apt venv

apt: .stamp-apt
.stamp-apt: Makefile
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_SOUNDFILE) -e '.[test]'
	touch $@

demo: install
	$(PY) -m tests.support.demo

# Then the tests marked 'alone' (tests/e2e/test_load.py, test_flood.py), on their own: they
# load the whole machine, and what they measure is the agent's.
test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not alone" tests
	$(PY) -m pytest -m alone tests

lint: venv
	$(VENV)/bin/ruff check agent drivers tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench.run_all

# The .deb of this checkout for this machine's architecture, into build/, then lintian
# (about 1.5 min in all; docs/field.md, "Packaging").
deb: install
	deb="$$(PYTHON=$(PY) firmware-image/deb/build-deb.sh build)" && \
		lintian --fail-on error,warning "$$deb" && \
		$(PY) firmware-image/deb/check-layout.py "$$deb" && echo "$$deb"

# The release bundle of this checkout for the `update` command, into build/: prints its
# path, version, size and sha256 (docs/updates.md).
bundle: venv
	$(PY) -m tests.support.bundles build

image-chroot-test: install
	$(SUDO) firmware-image/test-in-chroot.sh

# The arm64 .deb built and installed in bookworm arm64 chroots under qemu-user, then
# --version, validate, test-tone into the WAV sink, the FM demodulator on an IQ recording,
# and the unit and simulation tests there (root; docs/field.md, "Packaging", for its time).
# LOCK=/tmp/e2e.lock holds that lock during each heavy phase only.
arm64-check: install
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		qemu-user-static binfmt-support
	$(SUDO) env TEST_APT_PACKAGES="$(filter-out debootstrap lintian,$(APT_PACKAGES))" \
		firmware-image/arm64-check.sh

clean:
	rm -rf $(VENV) .stamp-apt build *.egg-info

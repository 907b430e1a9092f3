#!/bin/bash
# `make arm64-check`: the arm64 .deb of this checkout, built and tried in Debian bookworm
# arm64 chroots under qemu-user (binfmt_misc), on any Debian host:
#   base     debootstrap bookworm arm64 (minbase) from this machine's mirror; kept in WORK
#            and reused by the next run (FRESH=1 makes it again)
#   build    a copy of base with the build packages; the agent's wheel (pure Python) is
#            built on the host, the .deb in the chroot by firmware-image/deb/build-deb.sh;
#            then lintian and check-layout.py on the host, as `make deb`
#   install  a fresh copy of base; the .deb installed by the image stage's scripts, as
#            pi-gen does (chroot-lib.sh, shared with test-in-chroot.sh)
#   checks   `broadcast-agent --version`; provisioning and `validate` as the service user;
#            `test-tone` into the clocked WAV sink, the capture checked (440 Hz, level);
#            the installed FM demodulator on an IQ recording made by the tests' generator
#            (tests/support/arm64_check.py: tone SNR and level)
#   testdeps the Makefile's apt packages (TEST_APT_PACKAGES) and a test venv with the
#            wheel's [test] extras in that chroot
#   tests    pytest tests/unit tests/simulation there, from a copy of the checkout
# Prints the time of each phase at the end (docs/field.md, "Packaging").
#
# Root; needs qemu-user-static (binfmt for aarch64), debootstrap and the Debian mirror.
# Environment: WORK (default /var/tmp/broadcast-agent-arm64), MIRROR, PYTHON (the host venv),
# PYTEST_WORKERS (2), PYTEST_ARGS (extra), DEB (an arm64 .deb this script built before:
# the build phase is skipped), LOCK=FILE (hold flock FILE during each heavy
# phase only, to share a machine with other test runs), KEEP=1 (keep the build and test
# trees), REUSE=1 (development: reuse the trees a KEEP=1 run left, skipping their installs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
export PYTHON="${PYTHON:-${REPO}/.venv/bin/python}"
SUITE=bookworm
ARCH=arm64
# shellcheck source=firmware-image/chroot-lib.sh
. "${HERE}/chroot-lib.sh"
# shellcheck source=firmware-image/deb/build-deb.sh
. "${HERE}/deb/build-deb.sh"

MIRROR="${MIRROR:-$(configured_mirror | head -n 1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WORK="${WORK:-/var/tmp/broadcast-agent-arm64}"
BASE="${WORK}/base"
BUILD="${WORK}/build"
ROOT="${WORK}/root"
SRC=/root/broadcast-agent  # the checkout's copy, in both trees
TEST_VENV=/root/test-venv
CHECK_DIR=/tmp/arm64-check
BUILD_PACKAGES="python3-venv gcc python3-dev libasound2-dev"
# pip in a chroot trusts what the host trusts (a proxy's CA, say): the host's bundle.
HOST_CA=/etc/host-ca-certificates.crt
PIP_ENV=(HOME=/root PIP_CERT="${HOST_CA}" PIP_DISABLE_PIP_VERSION_CHECK=1)
: "${TEST_APT_PACKAGES:?the apt packages the tests need (make arm64-check passes those of the Makefile)}"

[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "apt-get install debootstrap" >&2; exit 2; }

# --- the emulator --------------------------------------------------------------------------
BINFMT=/proc/sys/fs/binfmt_misc/qemu-aarch64
if [ "$(dpkg --print-architecture)" != "${ARCH}" ]; then
	if [ ! -e "${BINFMT}" ] && command -v update-binfmts >/dev/null; then
		update-binfmts --enable qemu-aarch64 || true
	fi
	if [ ! -e "${BINFMT}" ] || ! grep -qx enabled "${BINFMT}"; then
		echo "no binfmt_misc entry for aarch64: apt-get install qemu-user-static binfmt-support" >&2
		exit 2
	fi
	# Without the F flag the kernel looks for the interpreter inside the chroot.
	grep -q '^flags:.*F' "${BINFMT}" || NEED_QEMU_IN_TREE=1
fi

# --- phases, their times, the lock ---------------------------------------------------------
TIMES=()
SUMMARY=()
PHASE=""
PHASE_START=0
phase() {
	PHASE="$1"; shift
	PHASE_START=${SECONDS}
	step "${PHASE}"
	if [ -n "${LOCK:-}" ]; then
		exec 9>>"${LOCK}"
		flock 9
	fi
	# (fd 9 closed for the phase's commands: nothing started in a chroot keeps the lock)
	"$@" 9>&-
	if [ -n "${LOCK:-}" ]; then
		flock -u 9
		exec 9>&-
	fi
	TIMES+=("$(printf '%-9s %4d s' "${PHASE}" $((SECONDS - PHASE_START)))")
	PHASE=""
}
report() {
	local status=$?
	[ -z "${PHASE}" ] || TIMES+=("$(printf '%-9s %4d s  (failed)' "${PHASE}" \
		$((SECONDS - PHASE_START)))")
	chroot_umount "${BUILD}"
	chroot_umount "${ROOT}"
	if [ "${KEEP:-0}" != 1 ] && [ "${REUSE:-0}" != 1 ]; then
		rm -rf "${BUILD}" "${ROOT}" "${WORK}/build.done" "${WORK}/root.done" "${WORK}/testdeps.done"
	fi
	printf '\n==> summary (%s)\n' "$(date -u '+%F %T UTC')"
	local line
	for line in "${SUMMARY[@]}"; do echo "${line}"; done
	echo "phase times:"
	for line in "${TIMES[@]}"; do echo "  ${line}"; done
	echo "  total     $(printf '%4d s' "${SECONDS}")"
	if [ "${status}" -ne 0 ]; then
		echo "arm64-check FAILED (exit ${status})"
	fi
}
trap report EXIT

mount_tree() {
	chroot_mount "$1"
	cp -L /etc/ssl/certs/ca-certificates.crt "$1${HOST_CA}"
	# debootstrap writes no /etc/hosts (the installer and pi-gen do): localhost must resolve.
	if [ ! -e "$1/etc/hosts" ]; then
		printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
			> "$1/etc/hosts"
	fi
}

# With REUSE=1, whether TREE is left from before, complete (STAMP).
reusable() { [ "${REUSE:-0}" = 1 ] && [ -e "$2" ] && echo "reusing $1"; }

# A fresh copy of the base tree.
new_tree() {
	local tree="$1" stamp="$2"
	chroot_umount "${tree}"
	rm -rf "${tree}" "${stamp}"
	cp -a "${BASE}" "${tree}"
	mount_tree "${tree}"
}

# The checkout as `make deb` sees it (tracked and untracked files, not the ignored ones).
copy_checkout() {
	local dest="$1"
	rm -rf "${dest}"
	mkdir -p "${dest}"
	local file
	git -C "${REPO}" ls-files -z --cached --others --exclude-standard \
		| while IFS= read -r -d '' file; do
			if [ -e "${REPO}/${file}" ]; then printf '%s\0' "${file}"; fi
		done | tar -C "${REPO}" --null -T - -cf - | tar -C "${dest}" -xf -
}

# --- base ----------------------------------------------------------------------------------
base_tree() {
	if [ "${FRESH:-0}" != 1 ] && [ -e "${WORK}/base.done" ]; then
		echo "reusing ${BASE} (debootstrapped $(cat "${WORK}/base.done"))"
		return 0
	fi
	rm -rf "${BASE}" "${WORK}/base.done"
	mkdir -p "${WORK}"
	# Download and unpack on the host, then the maintainer scripts under the emulator.
	debootstrap --foreign --arch="${ARCH}" --variant=minbase "${SUITE}" "${BASE}" "${MIRROR}"
	if [ "${NEED_QEMU_IN_TREE:-0}" = 1 ]; then
		cp /usr/bin/qemu-aarch64-static "${BASE}/usr/bin/"
	fi
	chroot "${BASE}" /debootstrap/debootstrap --second-stage
	date -u '+%F %T UTC' > "${WORK}/base.done"
}

# --- build ---------------------------------------------------------------------------------
build_deb() {
	if reusable "${BUILD}" "${WORK}/build.done"; then
		mount_tree "${BUILD}"
	else
		new_tree "${BUILD}" "${WORK}/build.done"
		in_chroot "${BUILD}" apt-get update -qq
		# shellcheck disable=SC2086  # one package name per word
		in_chroot "${BUILD}" apt-get install -y -qq --no-install-recommends ${BUILD_PACKAGES}
		in_chroot "${BUILD}" python3 -m venv /root/pip-venv
		touch "${WORK}/build.done"
	fi
	rm -rf "${WORK}/wheel" "${WORK}/out"
	WHEEL="$(build_wheel "${WORK}/wheel" "${PYTHON}")"
	echo "wheel (host): ${WHEEL}"
	copy_checkout "${BUILD}${SRC}"
	mkdir -p "${BUILD}/root/wheel" && rm -f "${BUILD}"/root/wheel/*.whl
	cp "${WHEEL}" "${BUILD}/root/wheel/"
	local epoch
	epoch="$(git -C "${REPO}" log -1 --format=%ct)"
	in_chroot "${BUILD}" "${PIP_ENV[@]}" SOURCE_DATE_EPOCH="${epoch}" PYTHON=/root/pip-venv/bin/python \
		BROADCAST_AGENT_WHEEL="/root/wheel/$(basename "${WHEEL}")" \
		"${SRC}/firmware-image/deb/build-deb.sh" /root/out
	mkdir -p "${WORK}/out"
	cp "${BUILD}"/root/out/broadcast-agent_*_"${ARCH}".deb "${WORK}/out/"
	rm -rf "${BUILD}/root/out"
	DEB="$(echo "${WORK}"/out/broadcast-agent_*_"${ARCH}".deb)"
	echo "deb: ${DEB}"
	dpkg-deb -f "${DEB}" Package Version Architecture
	lintian --fail-on error,warning "${DEB}"
	"${PYTHON}" "${HERE}/deb/check-layout.py" "${DEB}"
	SUMMARY+=("deb:      $(basename "${DEB}") ($(du -h "${DEB}" | cut -f1))")
}

# --- install -------------------------------------------------------------------------------
install_deb() {
	if reusable "${ROOT}" "${WORK}/root.done"; then
		mount_tree "${ROOT}"
	else
		rm -f "${WORK}/testdeps.done"
		new_tree "${ROOT}" "${WORK}/root.done"
	fi
	install_stage "${ROOT}" "${WORK}" "${DEB}"
	touch "${WORK}/root.done"
}

# --- checks of the installed package -------------------------------------------------------
in_root() { in_chroot "${ROOT}" "$@"; }
as_agent() { in_root runuser -u broadcast-agent -- "$@"; }
free_port() { "${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'; }
# OUTPUT of tests/support/arm64_check.py has COUNT PASS lines and no FAIL.
all_pass() { ! grep -q '^FAIL' <<<"$1" && [ "$(grep -c '^PASS' <<<"$1")" -eq "$2" ]; }

installed_checks() {
	local version machine
	version="$(in_root broadcast-agent --version)" || true
	machine="$(in_root /opt/broadcast-agent/venv/bin/python -c \
		'import platform, numpy, soundfile; print(platform.machine())')" || true
	echo "${version}; the venv's Python runs on ${machine}"
	SUMMARY+=("version:  ${version} (.deb $(dpkg-deb -f "${DEB}" Version)), on ${machine}")
	check "broadcast-agent --version on PATH, the .deb's version" \
		[ "$(deb_version "${version#broadcast-agent }")" = "$(dpkg-deb -f "${DEB}" Version)" ]
	check "the venv's Python, numpy and libsndfile run on aarch64" [ "${machine}" = aarch64 ]
	check "package files intact (dpkg --verify)" in_root dpkg --verify broadcast-agent

	provision_boot_config "${ROOT}" "${REPO}"
	check "provisioning from the boot partition" in_root /opt/broadcast-agent/venv/bin/python \
		-m agent.cli.provision --boot /boot/firmware --etc /etc/broadcast-agent
	check "validate as the service user" \
		as_agent broadcast-agent validate --config /etc/broadcast-agent/agent.yaml

	# test-tone into the clocked WAV sink, the amplifier simulated, at volume 100.
	rm -rf "${ROOT}${CHECK_DIR}"
	install -d -o "$(in_root id -u broadcast-agent)" "${ROOT}${CHECK_DIR}"
	local override="${ROOT}/etc/broadcast-agent/conf.d/99-arm64-check.yaml"
	# (health on a free port: test-tone refuses while something answers there)
	cat > "${override}" <<YAML
audio: {output: "wav:${CHECK_DIR}/test-tone.wav", default_volume: 100}
amplifier: {backend: sim, warmup_s: 0.3}
health: {listen: "127.0.0.1:$(free_port)"}
YAML
	check "validate with the WAV sink" \
		as_agent broadcast-agent validate --config /etc/broadcast-agent/agent.yaml
	check "test-tone into the clocked WAV sink, as the service user" as_agent broadcast-agent \
		test-tone --seconds 1.5 --frequency 440 --config /etc/broadcast-agent/agent.yaml
	rm -f "${override}"
	copy_checkout "${ROOT}${SRC}"
	local out
	out="$(in_root /opt/broadcast-agent/venv/bin/python "${SRC}/tests/support/arm64_check.py" \
		tone "${CHECK_DIR}/test-tone.wav" 2>&1)" || true
	echo "${out}"
	check "test-tone capture: 440 Hz at -9 dBFS RMS" all_pass "${out}" 4
	SUMMARY+=("test-tone: $(grep '^tone:' <<<"${out}" || echo 'no measure')")

	# The FM demodulator of the package on an IQ recording made on the host.
	"${PYTHON}" "${REPO}/tests/support/arm64_check.py" record-iq "${ROOT}${CHECK_DIR}/station.iq"
	out="$(in_root /opt/broadcast-agent/venv/bin/python "${SRC}/tests/support/arm64_check.py" \
		demodulate "${CHECK_DIR}/station.iq" 2>&1)" || true
	echo "${out}"
	check "the installed demodulator was used" \
		grep -q '^demodulator: /opt/broadcast-agent/venv/' <<<"${out}"
	check "FM demodulation of the recording: tone SNR and level" all_pass "${out}" 3
	SUMMARY+=("FM:       $(grep '^audio:' <<<"${out}" || echo 'no measure')")
	SUMMARY+=("checks:   ${CHECK_FAILURES} failed")
}

# --- the unit and simulation tests in the chroot -------------------------------------------
test_deps() {
	if [ "${REUSE:-0}" = 1 ] && [ -e "${WORK}/testdeps.done" ]; then
		echo "reusing the test packages and ${TEST_VENV}"
		return 0
	fi
	# shellcheck disable=SC2086  # one package name per word
	in_root apt-get install -y -qq --no-install-recommends ${TEST_APT_PACKAGES}
	rm -rf "${ROOT}${TEST_VENV}" "${ROOT}/root/wheel"
	mkdir -p "${ROOT}/root/wheel"
	cp "${WHEEL}" "${ROOT}/root/wheel/"
	in_root python3 -m venv "${TEST_VENV}"
	in_root "${PIP_ENV[@]}" "${TEST_VENV}/bin/python" -m pip install -q --upgrade pip
	in_root "${PIP_ENV[@]}" "${TEST_VENV}/bin/python" -m pip install -q --no-binary soundfile \
		"/root/wheel/$(basename "${WHEEL}")[test]"
	touch "${WORK}/testdeps.done"
}

# Tests of what qemu-user itself cannot give a process (checked: a bare python3 in the chroot
# sees the same), deselected only when emulating and listed in the summary; they run on a Pi
# (tests/hil) and on the native build machine.
QEMU_LIMITS=(
	# qemu-user adds a thread of its own to every process: /proc/self/task counts 2, not 1.
	"tests/unit/test_fm_audio.py::test_relaying_keeps_one_blas_thread"
	# qemu-user's own /proc/self/stat reports rss (and vsize) 0: process_resident_memory_bytes.
	"tests/unit/test_health.py::test_metrics_parse_as_prometheus_text"
	# prctl(PR_SET_MDWE) fails with EINVAL under qemu-user, whose JIT needs W+X memory.
	"tests/unit/test_systemd_unit.py::test_decoding_works_without_writable_executable_memory"
)

run_tests() {
	local log="${WORK}/pytest.log" status=0 deselect="" test
	if [ "$(dpkg --print-architecture)" != "${ARCH}" ]; then
		for test in "${QEMU_LIMITS[@]}"; do deselect+=" --deselect ${test}"; done
		SUMMARY+=("pytest:   deselected under qemu-user: ${QEMU_LIMITS[*]}")
	fi
	# shellcheck disable=SC2086  # PYTEST_ARGS: words
	in_root HOME=/root /bin/sh -c "cd '${SRC}' && exec '${TEST_VENV}/bin/python' -m pytest \
		-n '${PYTEST_WORKERS:-2}' --dist loadgroup -m 'not alone' ${deselect} ${PYTEST_ARGS:-} \
		tests/unit tests/simulation" 2>&1 | tee "${log}" || status=$?
	SUMMARY+=("pytest:   $(tail -n 1 "${log}" | tr -d '=' | sed 's/^ *//') (log: ${log})")
	check "pytest tests/unit tests/simulation (arm64)" [ "${status}" -eq 0 ]
}

WHEEL=""
phase base base_tree
if [ -n "${DEB:-}" ]; then
	# An arm64 .deb built before (by this script: its wheel is beside it in WORK).
	WHEEL="$(echo "${WORK}"/wheel/broadcast_agent-*.whl)"
	SUMMARY+=("deb:      ${DEB} (given)")
else
	phase build build_deb
fi
phase install install_deb
phase checks installed_checks
phase testdeps test_deps
phase tests run_tests

if [ "${CHECK_FAILURES}" -ne 0 ]; then
	echo "${CHECK_FAILURES} check(s) failed"
	exit 1
fi
SUMMARY+=("arm64-check: all checks passed")

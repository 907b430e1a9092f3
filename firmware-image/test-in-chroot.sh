#!/bin/bash
# `make image-chroot-test`: installs the agent's .deb (built now for this machine's
# architecture, or DEB=...) into a bare Debian bookworm chroot with the image stage's own
# scripts, the way pi-gen does on the Pi image, and checks the result:
#   - the package is installed, its files intact, the CLI on PATH, no compiler in the image;
#   - the units are enabled (symlinks made by the postinst, offline in the chroot);
#   - `systemd-analyze verify` passes for them inside the chroot;
#   - a config left on the boot partition is provisioned by the image's venv, and
#     `broadcast-agent validate` accepts it as the service user.
# Slow (a debootstrap and a few hundred MB of packages) and needs root and the Debian mirror
# configured in this machine's apt sources (override with MIRROR=...). KEEP=1 keeps the tree.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
export PYTHON="${PYTHON:-${REPO}/.venv/bin/python}"
SUITE=bookworm

configured_mirror() {
	local sources
	for sources in /etc/apt/sources.list.d/*.sources; do
		[ -e "${sources}" ] || continue
		awk '/^URIs:/ && $2 ~ /debian\/?$/ { print $2; exit }' "${sources}"
	done | head -n 1
	if [ -e /etc/apt/sources.list ]; then
		awk '/^deb / && $2 ~ /debian\/?$/ { print $2; exit }' /etc/apt/sources.list
	fi
}
MIRROR="${MIRROR:-$(configured_mirror | head -n 1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "apt-get install debootstrap" >&2; exit 2; }

WORK="$(mktemp -d /var/tmp/broadcast-agent-chroot.XXXXXX)"
ROOT="${WORK}/root"
cleanup() {
	for mount in dev/pts dev sys proc; do
		mountpoint -q "${ROOT}/${mount}" && umount -l "${ROOT}/${mount}"
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept ${WORK}"; else rm -rf "${WORK}"; fi
}
trap cleanup EXIT
step() { printf '\n==> %s\n' "$*"; }
in_root() { chroot "${ROOT}" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

step "debootstrap ${SUITE} (minbase) from ${MIRROR}"
debootstrap --variant=minbase "${SUITE}" "${ROOT}" "${MIRROR}"
mount -t proc proc "${ROOT}/proc"
mount -t sysfs sys "${ROOT}/sys"
mount --bind /dev "${ROOT}/dev"
mount --bind /dev/pts "${ROOT}/dev/pts"
cp -L /etc/resolv.conf "${ROOT}/etc/resolv.conf"
# As in pi-gen: no daemon starts from package scripts inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "${ROOT}/usr/sbin/policy-rc.d"
chmod +x "${ROOT}/usr/sbin/policy-rc.d"

STAGE="${WORK}/stage-broadcast-agent"
cp -a "${HERE}/stage-broadcast-agent" "${STAGE}"
INSTALL="${STAGE}/00-install"

step "packages of 00-packages (what pi-gen installs for the stage)"
in_root apt-get update -qq
# shellcheck disable=SC2046  # the list is one package name per word
in_root apt-get install -y -qq --no-install-recommends $(cat "${INSTALL}/00-packages")

step "the .deb into files/"
"${HERE}/prepare-stage-files.sh" "${INSTALL}/files" "${DEB:-}"

step "01-run.sh on the host (ROOTFS_DIR=${ROOT})"
ROOTFS_DIR="${ROOT}" bash -e "${INSTALL}/01-run.sh"

step "01-run-chroot.sh in the chroot"
cp "${INSTALL}/01-run-chroot.sh" "${ROOT}/tmp/01-run-chroot.sh"
in_root /bin/bash -e /tmp/01-run-chroot.sh
rm "${ROOT}/tmp/01-run-chroot.sh"

step "checks"
failures=0
check() {
	local what="$1"; shift
	if "$@"; then echo "PASS  ${what}"; else echo "FAIL  ${what}"; failures=$((failures + 1)); fi
}
check "package installed" test "$(in_root dpkg-query -W -f '${Status}' broadcast-agent)" \
	= "install ok installed"
check "package files intact (dpkg --verify)" in_root dpkg --verify broadcast-agent
check "agent.yaml is a conffile" bash -c "chroot '${ROOT}' dpkg-query -W \
	-f '\${Conffiles}' broadcast-agent | grep -q '/etc/broadcast-agent/agent.yaml '"
check "broadcast-agent --version on PATH" bash -c \
	"chroot '${ROOT}' /usr/bin/env PATH=/usr/bin:/bin broadcast-agent --version \
	| grep -q '^broadcast-agent [0-9]'"
WANTS="${ROOT}/etc/systemd/system/multi-user.target.wants"
check "broadcast-agent.service enabled" test -L "${WANTS}/broadcast-agent.service"
check "broadcast-agent-provision.service enabled" \
	test -L "${WANTS}/broadcast-agent-provision.service"
check "chrony enabled" test -L "${WANTS}/chrony.service"
check "systemd-analyze verify of both units" in_root systemd-analyze verify \
	/lib/systemd/system/broadcast-agent.service \
	/lib/systemd/system/broadcast-agent-provision.service
check "hardware watchdog in config.txt" \
	grep -qx 'dtparam=watchdog=on' "${ROOT}/boot/firmware/config.txt"
check "RuntimeWatchdogSec drop-in" grep -q '^RuntimeWatchdogSec=15' \
	"${ROOT}/usr/lib/systemd/system.conf.d/broadcast-agent-watchdog.conf"
check "volatile journal" grep -q '^Storage=volatile' \
	"${ROOT}/usr/lib/systemd/journald.conf.d/broadcast-agent.conf"
check "dvb_usb_rtl28xxu blacklisted" grep -qx 'blacklist dvb_usb_rtl28xxu' \
	"${ROOT}/etc/modprobe.d/rtl-sdr-blacklist.conf"
check "service user in audio, gpio, plugdev" \
	bash -c "in=\$(chroot '${ROOT}' id -nG broadcast-agent); \
		for g in audio gpio plugdev; do [[ \" \$in \" == *\" \$g \"* ]] || exit 1; done"
check "no compiler in the image" test ! -e "${ROOT}/usr/bin/gcc"

# A technician's config and secrets on the boot partition, as after writing the SD card.
BOOT="${ROOT}/boot/firmware"
cp "${REPO}/config/agent.yaml" "${BOOT}/broadcast-agent.yaml"
mkdir -p "${BOOT}/broadcast-agent-secrets"
echo "source-token-of-the-commune" > "${BOOT}/broadcast-agent-secrets/source.token"
echo "mqtt-password-of-the-commune" > "${BOOT}/broadcast-agent-secrets/mqtt.password"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=test province CA" -keyout /dev/null \
	-out "${BOOT}/broadcast-agent-secrets/province-ca.pem" 2>/dev/null
check "provisioning from the boot partition (as broadcast-agent-provision.service does)" \
	in_root /opt/broadcast-agent/venv/bin/python -m agent.cli.provision \
	--boot /boot/firmware --etc /etc/broadcast-agent
check "boot partition emptied" test ! -e "${BOOT}/broadcast-agent.yaml"
check "config 0640 root:broadcast-agent" test "$(in_root stat -c '%a %U:%G' \
	/etc/broadcast-agent/agent.yaml)" = "640 root:broadcast-agent"
check "validate as the service user" in_root runuser -u broadcast-agent -- \
	/opt/broadcast-agent/venv/bin/broadcast-agent validate --config /etc/broadcast-agent/agent.yaml

if [ "${failures}" -ne 0 ]; then
	echo "${failures} check(s) failed"
	exit 1
fi
echo "all image checks passed"

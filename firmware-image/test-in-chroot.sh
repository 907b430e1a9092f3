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
# shellcheck source=firmware-image/chroot-lib.sh
. "${HERE}/chroot-lib.sh"

MIRROR="${MIRROR:-$(configured_mirror | head -n 1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "apt-get install debootstrap" >&2; exit 2; }

WORK="$(mktemp -d /var/tmp/broadcast-agent-chroot.XXXXXX)"
ROOT="${WORK}/root"
cleanup() {
	chroot_umount "${ROOT}"
	if [ "${KEEP:-0}" = 1 ]; then echo "kept ${WORK}"; else rm -rf "${WORK}"; fi
}
trap cleanup EXIT
in_root() { in_chroot "${ROOT}" "$@"; }

step "debootstrap ${SUITE} (minbase) from ${MIRROR}"
debootstrap --variant=minbase "${SUITE}" "${ROOT}" "${MIRROR}"
chroot_mount "${ROOT}"
install_stage "${ROOT}" "${WORK}" "${DEB:-}"

step "checks"
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

provision_boot_config "${ROOT}" "${REPO}"
BOOT="${ROOT}/boot/firmware"
check "provisioning from the boot partition (as broadcast-agent-provision.service does)" \
	in_root /opt/broadcast-agent/venv/bin/python -m agent.cli.provision \
	--boot /boot/firmware --etc /etc/broadcast-agent
check "boot partition emptied" test ! -e "${BOOT}/broadcast-agent.yaml"
check "config 0640 root:broadcast-agent" test "$(in_root stat -c '%a %U:%G' \
	/etc/broadcast-agent/agent.yaml)" = "640 root:broadcast-agent"
check "validate as the service user" in_root runuser -u broadcast-agent -- \
	/opt/broadcast-agent/venv/bin/broadcast-agent validate --config /etc/broadcast-agent/agent.yaml

if [ "${CHECK_FAILURES}" -ne 0 ]; then
	echo "${CHECK_FAILURES} check(s) failed"
	exit 1
fi
echo "all image checks passed"

# shellcheck shell=bash
# Shared by the chroot tests (test-in-chroot.sh, arm64-check.sh); sourced, defines functions:
#   configured_mirror           the Debian mirror of this machine's apt sources
#   step TEXT                   a heading in the log
#   chroot_mount ROOT           /proc, /sys, /dev, /dev/pts, resolv.conf, policy-rc.d
#   chroot_umount ROOT
#   in_chroot ROOT CMD...       CMD in ROOT with a clean environment
#   install_stage ROOT WORK DEB the image stage's scripts into ROOT, as pi-gen runs them
#   check WHAT CMD...           PASS/FAIL line; failures are counted in CHECK_FAILURES
#   provision_boot_config ROOT REPO  a technician's config and secrets on the boot partition

CHROOT_LIB_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHECK_FAILURES=0

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

step() { printf '\n==> %s\n' "$*"; }

chroot_mount() {
	local root="$1"
	mountpoint -q "${root}/proc" || mount -t proc proc "${root}/proc"
	mountpoint -q "${root}/sys" || mount -t sysfs sys "${root}/sys"
	mountpoint -q "${root}/dev" || mount --bind /dev "${root}/dev"
	mountpoint -q "${root}/dev/pts" || mount --bind /dev/pts "${root}/dev/pts"
	cp -L /etc/resolv.conf "${root}/etc/resolv.conf"
	# As in pi-gen: no daemon starts from package scripts inside the chroot.
	printf '#!/bin/sh\nexit 101\n' > "${root}/usr/sbin/policy-rc.d"
	chmod +x "${root}/usr/sbin/policy-rc.d"
}

chroot_umount() {
	local root="$1" mount
	for mount in dev/pts dev sys proc; do
		if mountpoint -q "${root}/${mount}"; then umount -l "${root}/${mount}"; fi
	done
}

in_chroot() {
	local root="$1"; shift
	chroot "${root}" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# The stage (firmware-image/stage-broadcast-agent) copied to WORK and run on ROOT the way
# pi-gen does: its 00-packages, the .deb into files/ (DEB, or built now for this machine),
# 01-run.sh on the host, 01-run-chroot.sh inside.
install_stage() {
	local root="$1" work="$2" deb="${3:-}"
	local stage="${work}/stage-broadcast-agent"
	rm -rf "${stage}"
	cp -a "${CHROOT_LIB_HERE}/stage-broadcast-agent" "${stage}"
	local install="${stage}/00-install"

	step "packages of 00-packages (what pi-gen installs for the stage)"
	in_chroot "${root}" apt-get update -qq
	# shellcheck disable=SC2046  # the list is one package name per word
	in_chroot "${root}" apt-get install -y -qq --no-install-recommends $(cat "${install}/00-packages")

	step "the .deb into files/"
	"${CHROOT_LIB_HERE}/prepare-stage-files.sh" "${install}/files" "${deb}"

	step "01-run.sh on the host (ROOTFS_DIR=${root})"
	ROOTFS_DIR="${root}" bash -e "${install}/01-run.sh"

	step "01-run-chroot.sh in the chroot"
	cp "${install}/01-run-chroot.sh" "${root}/tmp/01-run-chroot.sh"
	in_chroot "${root}" /bin/bash -e /tmp/01-run-chroot.sh
	rm "${root}/tmp/01-run-chroot.sh"
}

check() {
	local what="$1"; shift
	if "$@"; then
		echo "PASS  ${what}"
	else
		echo "FAIL  ${what}"
		CHECK_FAILURES=$((CHECK_FAILURES + 1))
	fi
}

# A technician's config and secrets on the boot partition, as after writing the SD card.
provision_boot_config() {
	local root="$1" repo="$2"
	local boot="${root}/boot/firmware"
	cp "${repo}/config/agent.yaml" "${boot}/broadcast-agent.yaml"
	mkdir -p "${boot}/broadcast-agent-secrets"
	echo "source-token-of-the-commune" > "${boot}/broadcast-agent-secrets/source.token"
	echo "mqtt-password-of-the-commune" > "${boot}/broadcast-agent-secrets/mqtt.password"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=test province CA" -keyout /dev/null \
		-out "${boot}/broadcast-agent-secrets/province-ca.pem" 2>/dev/null
}

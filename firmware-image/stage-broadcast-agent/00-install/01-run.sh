#!/bin/bash -e
# pi-gen runs this on the build host with ROOTFS_DIR set to the image's root; it copies the
# broadcast-agent .deb the chroot step installs (files/ is filled by firmware-image/build.sh
# or test-in-chroot.sh, with prepare-stage-files.sh) and sets up the board around it.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FILES="${HERE}/files"

install -d "${ROOTFS_DIR}/tmp/broadcast-agent"
cp "${FILES}"/broadcast-agent_*.deb "${ROOTFS_DIR}/tmp/broadcast-agent/"

# The DVB-T driver grabs an RTL2832U as a TV tuner; rtl-sdr needs the raw USB device.
install -D -m 644 /dev/stdin "${ROOTFS_DIR}/etc/modprobe.d/rtl-sdr-blacklist.conf" <<'CONF'
blacklist dvb_usb_rtl28xxu
blacklist rtl2832
blacklist rtl2830
CONF
# The dongle (RTL2832U, 0bda:2838 and 0bda:2832) belongs to group plugdev.
install -D -m 644 /dev/stdin "${ROOTFS_DIR}/etc/udev/rules.d/99-rtl-sdr.rules" <<'RULES'
SUBSYSTEM=="usb", ATTRS{idVendor}=="0bda", ATTRS{idProduct}=="2838", GROUP="plugdev", MODE="0660"
SUBSYSTEM=="usb", ATTRS{idVendor}=="0bda", ATTRS{idProduct}=="2832", GROUP="plugdev", MODE="0660"
RULES

# The Pi's hardware watchdog, which PID 1 pets (the .deb's system.conf.d drop-in).
CONFIG_TXT="${ROOTFS_DIR}/boot/firmware/config.txt"
install -d "$(dirname "${CONFIG_TXT}")"
touch "${CONFIG_TXT}"
if ! grep -qx 'dtparam=watchdog=on' "${CONFIG_TXT}"; then
	printf '\n# broadcast-agent: hardware watchdog\ndtparam=watchdog=on\n' >> "${CONFIG_TXT}"
fi

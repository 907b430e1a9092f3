#!/bin/bash -e
# pi-gen runs this on the build host with ROOTFS_DIR set to the image's root; it copies the
# files the chroot step installs. files/ is filled by firmware-image/build.sh (or by
# test-in-chroot.sh): the broadcast-agent wheel and the systemd units and drop-ins.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FILES="${HERE}/files"

install -d "${ROOTFS_DIR}/tmp/broadcast-agent"
cp "${FILES}"/*.whl "${ROOTFS_DIR}/tmp/broadcast-agent/"

install -D -m 644 "${FILES}/broadcast-agent.service" \
	"${ROOTFS_DIR}/etc/systemd/system/broadcast-agent.service"
install -D -m 644 "${FILES}/broadcast-agent-provision.service" \
	"${ROOTFS_DIR}/etc/systemd/system/broadcast-agent-provision.service"
install -D -m 644 "${FILES}/journald-broadcast-agent.conf" \
	"${ROOTFS_DIR}/etc/systemd/journald.conf.d/broadcast-agent.conf"
install -D -m 644 "${FILES}/watchdog.conf" \
	"${ROOTFS_DIR}/etc/systemd/system.conf.d/broadcast-agent-watchdog.conf"

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

# The Pi's hardware watchdog, which PID 1 pets (watchdog.conf above).
CONFIG_TXT="${ROOTFS_DIR}/boot/firmware/config.txt"
install -d "$(dirname "${CONFIG_TXT}")"
touch "${CONFIG_TXT}"
if ! grep -qx 'dtparam=watchdog=on' "${CONFIG_TXT}"; then
	printf '\n# broadcast-agent: hardware watchdog\ndtparam=watchdog=on\n' >> "${CONFIG_TXT}"
fi

#!/bin/bash -e
# pi-gen runs this inside the image (chroot, qemu for arm64): the service user, the venv,
# and the units enabled. systemctl enable works offline in a chroot: it only makes links.
VENV=/opt/broadcast-agent/venv
WHEELS=/tmp/broadcast-agent

for group in audio gpio plugdev; do
	getent group "${group}" >/dev/null || groupadd --system "${group}"
done
if ! getent passwd broadcast-agent >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/broadcast-agent --no-create-home \
		--shell /usr/sbin/nologin --comment "broadcast-agent daemon" broadcast-agent
fi
usermod -a -G audio,gpio,plugdev broadcast-agent

python3 -m venv "${VENV}"
"${VENV}/bin/pip" install --no-cache-dir --upgrade pip
# Dependencies without a wheel for this platform (pyalsaaudio) are built here, against
# libasound2-dev; the compiler is removed again below.
"${VENV}/bin/pip" install --no-cache-dir --find-links "${WHEELS}" "${WHEELS}"/broadcast_agent-*.whl
rm -rf "${WHEELS}"
apt-get purge -y gcc python3-dev libasound2-dev
apt-get autoremove -y --purge

install -d -m 0750 -o root -g broadcast-agent /etc/broadcast-agent

systemctl enable broadcast-agent.service broadcast-agent-provision.service chrony.service

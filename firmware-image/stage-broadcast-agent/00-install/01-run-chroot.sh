#!/bin/bash -e
# pi-gen runs this inside the image (chroot, qemu for arm64): the broadcast-agent .deb, with
# its dependencies from the image's apt sources. Its postinst makes the service user (in
# audio, gpio, plugdev) and enables the agent and the provisioning; nothing is compiled and
# nothing comes from PyPI here. systemctl enable works offline in a chroot: it only makes links.
apt-get install -y --no-install-recommends /tmp/broadcast-agent/broadcast-agent_*.deb
rm -rf /tmp/broadcast-agent

systemctl enable chrony.service

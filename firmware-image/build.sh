#!/bin/bash
# Builds the controller's SD card image with pi-gen (https://github.com/RPi-Distro/pi-gen):
# 64-bit Raspberry Pi OS Lite (stages 0-2) plus stage-broadcast-agent from this directory.
#
#   [BROADCAST_AGENT_DEB=broadcast-agent_X_arm64.deb] firmware-image/build.sh [PI_GEN_DIR]
#
# The image installs the agent's arm64 .deb: the one given, or, on an arm64 machine, one
# built here (`make deb`). Needs network (git, Debian/Raspberry Pi archives) and either
# Docker (default: pi-gen's build-docker.sh) or a Debian host with pi-gen's dependencies
# (PI_GEN_DOCKER=0, as root).
# The image lands in PI_GEN_DIR/deploy/. Write it with Raspberry Pi Imager, then provision
# the controller with broadcast-agent.yaml on the boot partition (docs/field.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PI_GEN_DIR="${1:-${HERE}/build/pi-gen}"
PI_GEN_REPO="${PI_GEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}"
PI_GEN_BRANCH="${PI_GEN_BRANCH:-arm64}"  # pi-gen's branch for 64-bit images
PI_GEN_DOCKER="${PI_GEN_DOCKER:-1}"

# 1. pi-gen itself.
if [ ! -d "${PI_GEN_DIR}/.git" ]; then
	git clone --depth 1 --branch "${PI_GEN_BRANCH}" "${PI_GEN_REPO}" "${PI_GEN_DIR}"
fi

# 2. Our stage, with its files/: the agent's arm64 .deb.
if [ -z "${BROADCAST_AGENT_DEB:-}" ] && [ "$(uname -m)" != aarch64 ]; then
	echo "the image is arm64: set BROADCAST_AGENT_DEB to an arm64 .deb (make deb on arm64)" >&2
	exit 2
fi
STAGE="${PI_GEN_DIR}/stage-broadcast-agent"
rm -rf "${STAGE}"
cp -a "${HERE}/stage-broadcast-agent" "${STAGE}"
"${HERE}/prepare-stage-files.sh" "${STAGE}/00-install/files" "${BROADCAST_AGENT_DEB:-}"

# 3. A Lite image: skip the desktop stages, export only ours.
cp "${HERE}/config" "${PI_GEN_DIR}/config"
touch "${PI_GEN_DIR}/stage2/SKIP_IMAGES"
for stage in stage3 stage4 stage5; do
	touch "${PI_GEN_DIR}/${stage}/SKIP" "${PI_GEN_DIR}/${stage}/SKIP_IMAGES"
done

# 4. Build.
cd "${PI_GEN_DIR}"
if [ "${PI_GEN_DOCKER}" = 1 ]; then
	./build-docker.sh -c config
else
	./build.sh -c config
fi
ls -l deploy/

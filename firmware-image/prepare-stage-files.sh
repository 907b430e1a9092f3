#!/bin/bash
# Fills the stage's files/ directory with the broadcast-agent .deb: the one given, or one
# built now (firmware-image/deb/build-deb.sh) for this machine's architecture. The image is
# arm64, so on another machine give an arm64 .deb built on arm64.
#
#   firmware-image/prepare-stage-files.sh FILES_DIR [DEB]
set -euo pipefail

FILES="$1"
DEB="${2:-}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

mkdir -p "${FILES}"
rm -f "${FILES}"/broadcast-agent_*.deb
if [ -z "${DEB}" ]; then
	DEB="$("${HERE}/deb/build-deb.sh" "${FILES}")"
else
	cp "${DEB}" "${FILES}/"
fi
echo "${FILES}/$(basename "${DEB}")"

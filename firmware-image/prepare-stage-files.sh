#!/bin/bash
# Fills the stage's files/ directory: the wheel of this repository (no dependencies: the
# image's pip fetches those for its own platform) and the systemd units and drop-ins.
#
#   firmware-image/prepare-stage-files.sh FILES_DIR [PYTHON]
set -euo pipefail

FILES="$1"
PYTHON="${2:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

mkdir -p "${FILES}"
rm -f "${FILES}"/*.whl
"${PYTHON}" -m pip wheel --quiet --no-deps --wheel-dir "${FILES}" "${REPO}"
cp "${REPO}/systemd/broadcast-agent.service" "${REPO}/systemd/broadcast-agent-provision.service" \
	"${REPO}/systemd/journald-broadcast-agent.conf" "${REPO}/systemd/watchdog.conf" "${FILES}/"

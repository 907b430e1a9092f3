#!/bin/bash
# `make deb`: the broadcast-agent .deb, built with plain dpkg-deb around a venv.
#
#   firmware-image/deb/build-deb.sh [OUT_DIR]      (default: build/ of the repository)
#
# The venv is made by the Debian interpreter (/usr/bin/python3) directly at its final path
# inside the package tree, /opt/broadcast-agent/venv; its dependencies come from
# requirements.lock (every file pinned by hash), the agent from a wheel of this checkout,
# whose version setuptools-scm takes from the git tag. Builds for the machine it runs on:
# an arm64 .deb is built on arm64 (or in an arm64 chroot). docs/field.md, "Packaging".
#
# Sourced (`. build-deb.sh`) it only defines its functions, for tests/unit/test_deb.py.
set -euo pipefail

DEB_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEB_REPO="$(cd "${DEB_HERE}/../.." && pwd)"
DEB_PREFIX=/opt/broadcast-agent
DEB_UNITS="broadcast-agent.service broadcast-agent-provision.service"

# PEP 440 -> Debian: pre-releases and dev builds sort before their release with "~"; the
# local part (+gHASH) is left as it is.
deb_version() {
	local public="${1%%+*}" local_part=""
	[[ "$1" == *+* ]] && local_part="+${1#*+}"
	echo "$(sed -E 's/\.?(dev|a|b|rc)([0-9]+)/~\1\2/g' <<<"${public}")${local_part}"
}

# DEBIAN/ of the package tree ROOT: control, conffiles (everything under /etc) and the
# maintainer scripts.
write_debian_dir() {
	local root="$1" version="$2" arch="$3" maintainer="$4"
	install -d -m 0755 "${root}/DEBIAN"
	(cd "${root}" && find etc -type f | sed 's|^|/|' | LC_ALL=C sort) > "${root}/DEBIAN/conffiles"
	(cd "${root}" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
		| xargs -0 -r md5sum) > "${root}/DEBIAN/md5sums"
	local size
	size="$(du -sk --exclude=DEBIAN "${root}" | cut -f1)"
	sed -e "s|@VERSION@|${version}|" -e "s|@ARCH@|${arch}|" -e "s|@MAINTAINER@|${maintainer}|" \
		-e "s|@SIZE@|${size}|" "${DEB_HERE}/control.in" > "${root}/DEBIAN/control"
	local script
	for script in postinst prerm postrm; do
		install -m 0755 "${DEB_HERE}/${script}" "${root}/DEBIAN/${script}"
	done
	chmod 0644 "${root}/DEBIAN/control" "${root}/DEBIAN/conffiles" "${root}/DEBIAN/md5sums"
}

# The venv at ${DEB_PREFIX}/venv inside ROOT: the locked dependencies, then the agent.
build_venv() {
	local root="$1" wheel="$2" python="$3"
	local venv="${root}${DEB_PREFIX}/venv"
	/usr/bin/python3 -m venv --without-pip "${venv}"
	# No wheel cache: pyalsaaudio (an sdist) is compiled here from its hashed source.
	local pip=("${python}" -m pip --python "${venv}/bin/python" install --quiet --no-compile
		--no-cache-dir --no-warn-script-location)
	# soundfile from its source too: it then loads Debian's libsndfile (a Depends), whose
	# Opus encoder costs a third of the one the soundfile wheels bundle.
	"${pip[@]}" --require-hashes --no-deps --no-binary soundfile \
		-r "${DEB_HERE}/requirements.lock"
	"${pip[@]}" --no-deps "${wheel}"
	# Built inside ROOT, installed at /: scripts and pyvenv.cfg name the final path.
	grep -rlI --null -F "${root}${DEB_PREFIX}" "${venv}/bin" "${venv}/pyvenv.cfg" \
		| xargs -0 -r sed -i "s|${root}${DEB_PREFIX}|${DEB_PREFIX}|g"
	# It records the build directory's wheel; dpkg is what installed it. Nobody activates
	# this venv, and nothing is compiled against it.
	rm -f "${venv}"/lib/python3*/site-packages/broadcast_agent-*.dist-info/direct_url.json \
		"${venv}"/bin/activate* "${venv}"/bin/Activate.ps1
	rm -rf "${venv}/include"
	if grep -rlI -F "${root}" "${venv}"; then
		echo "build paths left in the venv (above)" >&2
		return 1
	fi
}

# Units, drop-ins, config, CLI link and docs into ROOT.
install_files() {
	local root="$1" version="$2" maintainer="$3"
	local unit
	for unit in ${DEB_UNITS}; do
		install -D -m 0644 "${DEB_REPO}/systemd/${unit}" "${root}/lib/systemd/system/${unit}"
	done
	install -D -m 0644 "${DEB_REPO}/systemd/journald-broadcast-agent.conf" \
		"${root}/usr/lib/systemd/journald.conf.d/broadcast-agent.conf"
	install -D -m 0644 "${DEB_REPO}/systemd/watchdog.conf" \
		"${root}/usr/lib/systemd/system.conf.d/broadcast-agent-watchdog.conf"
	install -D -m 0644 "${DEB_REPO}/config/agent.yaml" "${root}/etc/broadcast-agent/agent.yaml"
	install -D -m 0644 "${DEB_REPO}/config/conf.d/README.md" \
		"${root}/etc/broadcast-agent/conf.d/README.md"
	install -d -m 0755 "${root}/usr/bin"
	ln -s "${DEB_PREFIX}/venv/bin/broadcast-agent" "${root}/usr/bin/broadcast-agent"

	local doc="${root}/usr/share/doc/broadcast-agent"
	install -D -m 0644 "${DEB_HERE}/copyright" "${doc}/copyright"
	install -m 0644 "${DEB_REPO}/README.md" "${DEB_REPO}"/docs/*.md "${doc}/"
	install -m 0644 "${DEB_REPO}/config/example-full.yaml" "${doc}/agent.example.yaml"
	# The version on a line of its own: a dirty tree's (+gHASH.dYYYYMMDD) would take the
	# line past the 80 columns lintian allows.
	printf 'broadcast-agent (%s) stable; urgency=medium\n\n  * Release %s.\n    The changes are in the git history.\n\n -- %s  %s\n' \
		"${version}" "${version}" "${maintainer}" "$(date -R -u -d "@${SOURCE_DATE_EPOCH}")" \
		| gzip -9n > "${doc}/changelog.gz"
	chmod 0644 "${doc}/changelog.gz"
	install -D -m 0644 "${DEB_HERE}/lintian-overrides" \
		"${root}/usr/share/lintian/overrides/broadcast-agent"
}

# The agent's wheel of this checkout into OUT (pure Python, the same for every
# architecture; its version from git); prints its path. BROADCAST_AGENT_WHEEL=PATH makes
# main() use a wheel built before, e.g. on the host for a build in an arm64 chroot.
build_wheel() {
	local out="$1" python="$2"
	# setuptools builds in the checkout's build/ and would ship files deleted since.
	rm -rf "${DEB_REPO}/build/lib" "${DEB_REPO}"/build/bdist.*
	"${python}" -m pip wheel --quiet --no-deps --wheel-dir "${out}" "${DEB_REPO}"
	echo "${out}"/broadcast_agent-*.whl
}

main() {
	local out="${1:-${DEB_REPO}/build}"
	local python="${PYTHON:-${DEB_REPO}/.venv/bin/python}"
	local maintainer="${DEB_MAINTAINER:-broadcast-agent maintainers <broadcast-agent@example.org>}"
	local work
	work="$(mktemp -d)"
	# shellcheck disable=SC2064  # expand now: work is local
	trap "rm -rf '${work}'" EXIT
	# A PYTHONPATH naming a checkout would make pip take the agent as installed already.
	unset PYTHONPATH PYTHONHOME
	export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "${DEB_REPO}" log -1 --format=%ct)}"

	local wheel="${BROADCAST_AGENT_WHEEL:-}" version arch
	[ -n "${wheel}" ] || wheel="$(build_wheel "${work}/wheel" "${python}")"
	version="$(basename "${wheel}" | cut -d- -f2)"
	version="$(deb_version "${version}")"
	arch="$(dpkg --print-architecture)"

	local root="${work}/root"
	umask 022
	build_venv "${root}" "${wheel}" "${python}"
	install_files "${root}" "${version}" "${maintainer}"
	write_debian_dir "${root}" "${version}" "${arch}" "${maintainer}"

	mkdir -p "${out}"
	local deb="${out}/broadcast-agent_${version}_${arch}.deb"
	dpkg-deb --root-owner-group -Zxz --build "${root}" "${deb}" >/dev/null
	echo "${deb}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	main "$@"
fi

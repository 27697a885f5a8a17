#!/bin/sh
# Regenerate packaging/requirements.lock: every distribution the Debian package's
# virtualenv installs (setup.cfg's install_requires and everything they need), pinned
# to one version with the sha256 of each file PyPI has for it.  `make deb` installs
# from this lock only (pip --require-hashes --no-deps), so a build never resolves a
# new version and two builds of one commit ship the same bytes.
#
# Run it (`make deb-lock`) after changing install_requires, or to take newer releases;
# tests/packaging/test_lock.py fails while the lock no longer satisfies setup.cfg.
# The lock is resolved for the interpreter the package is built for (Debian 12's
# /usr/bin/python3.11) with pip-tools in a throw-away virtualenv under .cache/.
set -eu

cd "$(dirname "$0")/.."
PYTHON=${DEB_PYTHON:-/usr/bin/python3.11}
PIP_TOOLS_VERSION=7.6.2
TOOLS=.cache/pip-tools

[ -x "$PYTHON" ] || { echo "update-lock: $PYTHON is missing (apt-get install python3.11-venv)" >&2; exit 1; }
if [ ! -x "$TOOLS/bin/pip-compile" ] || ! "$TOOLS/bin/pip-compile" --version | grep -q " $PIP_TOOLS_VERSION\$"; then
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
fi

# PyPI as pip sees it without this machine's pip configuration files (extra indexes,
# find-links directories): the lock must name only what every builder can download.
# --allow-unsafe keeps setuptools (a dependency of incremental): the build installs it so
# that `pip check` sees a complete set, then removes it from the package.
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
  CUSTOM_COMPILE_COMMAND="make deb-lock" \
  "$TOOLS/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
    --upgrade --output-file packaging/requirements.lock setup.cfg "$@"
echo "update-lock: wrote packaging/requirements.lock"

#!/bin/sh
# Install the Debian packages the test suite drives as real outside programs: kcat (a Kafka
# client written by others, consuming our topics), prometheus (the server and promtool,
# scraping a worker and checking the alerting rules) and chromium (a real headless browser
# for the worker's page). Does nothing when all are present.
set -eu

missing=""
command -v kcat >/dev/null 2>&1 || missing="$missing kcat"
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing="$missing prometheus"
fi
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || missing="$missing chromium"
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing:$missing; install them with your system's package manager" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "system-deps: need root or sudo to apt-get install$missing" >&2
        exit 1
    }
    SUDO=sudo
fi

# The prometheus package starts its service on install; the tests start their own server on a
# free port, so keep the package from starting one (and from waiting for an init system that a
# container does not have) with a policy-rc.d that denies every start while we install.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT INT TERM
fi

install() {
    # shellcheck disable=SC2086  # $missing is a list of package names
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $missing </dev/null
}

echo "system-deps: apt-get install$missing"
if ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 && install; then
    exit 0
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
install

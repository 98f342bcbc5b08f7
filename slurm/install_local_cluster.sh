#!/usr/bin/env bash
# Install the Debian packages a one-node SLURM cluster with accounting needs:
# munge, slurmctld, slurmd, the clients, slurmdbd and MariaDB.
#
# Idempotent and quiet: packages already installed are skipped (no apt-get update at all when
# nothing is missing). The packages' post-install scripts try to start their services; on
# machines without an init system (containers, CI) policy-rc.d refuses, which is harmless:
# start_local_cluster.sh starts every daemon by hand under its own base directory.
#
# Usage: slurm/install_local_cluster.sh        (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
    munge
    slurmctld
    slurmd
    slurm-client
    slurm-wlm-basic-plugins
    slurmdbd
    slurm-wlm-mysql-plugin
    mariadb-server
)

# Print "apt-get" prefixed with sudo when we are not root.
apt_cmd() {
    if [[ $(id -u) -eq 0 ]]; then
        echo apt-get
    elif command -v sudo >/dev/null 2>&1; then
        echo "sudo -n apt-get"
    else
        echo "install_local_cluster.sh: needs root (or sudo) to install packages" >&2
        exit 1
    fi
}

# Print the packages of PACKAGES that are not installed yet, one per line.
missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
            echo "$pkg"
        fi
    done
}

main() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "install_local_cluster.sh: this script needs a Debian/Ubuntu system (apt, dpkg)" >&2
        exit 1
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "SLURM packages already installed"
        return 0
    fi
    local apt log
    apt=$(apt_cmd)
    log=$(mktemp /tmp/install_local_cluster.XXXXXX.log)
    echo "installing: ${missing[*]} (log: $log)"
    export DEBIAN_FRONTEND=noninteractive
    # Quiet, but keep the whole output for when it fails. A refused service start
    # ("policy-rc.d denied execution of start") makes some post-install scripts print a
    # warning without failing, so a non-zero exit here is a real failure.
    if ! { $apt update -q && $apt install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "install_local_cluster.sh: apt-get failed; full log: $log" >&2
        exit 1
    fi
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -ne 0 ]]; then
        echo "install_local_cluster.sh: still missing after install: ${missing[*]} (log: $log)" >&2
        exit 1
    fi
    rm -f "$log"
    echo "SLURM packages installed"
}

main "$@"

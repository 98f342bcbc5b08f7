#!/usr/bin/env bash
# Stop the local cluster started by start_local_cluster.sh from the same BASE_DIR.
#
# Processes are found by pid file (checked against the program they should run, so a recycled
# pid is left alone), never by process name; the slurmstepd processes of this cluster (those
# holding sockets in its spool directory or started with its SLURM_CONF) and their job
# processes are stopped too. Order: job steps, slurmd + slurmctld, slurmdbd, mariadbd + munged.
# Idempotent: stopping a stopped cluster does nothing. Configs, state, the database and logs are
# kept, so the next start resumes the same cluster; delete BASE_DIR for a clean slate.
#
# Usage: slurm/stop_local_cluster.sh [BASE_DIR]     (default /tmp/ssgan3d-slurm)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/_common.sh
source "$SCRIPT_DIR/_common.sh"

# Wait up to $1 seconds for every pid in the rest of the arguments to exit; return 1 if any
# is still alive.
wait_gone() {
    local timeout=$1 deadline pid alive
    shift
    deadline=$((SECONDS + timeout))
    while :; do
        alive=0
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Send SIGTERM to the pids given, wait up to $1 seconds, then SIGKILL what is left.
terminate() {
    local timeout=$1
    shift
    [[ $# -gt 0 ]] || return 0
    kill -TERM "$@" 2>/dev/null || true
    if ! wait_gone "$timeout" "$@"; then
        say "still alive after ${timeout}s, killing: $*"
        kill -KILL "$@" 2>/dev/null || true
        wait_gone 5 "$@" || true
    fi
}

# Stop, together, the daemons named in the arguments as PIDFILE:PROGRAM, waiting up to $1
# seconds. (Each daemon takes about 2 s to shut down, so independent ones go in parallel.)
stop_daemons() {
    local timeout=$1 spec pid_file program pid pids=()
    shift
    for spec in "$@"; do
        pid_file=${spec%%:*}
        program=${spec##*:}
        if pid=$(live_pid "$pid_file" "$program"); then
            say "stopping $program (pid $pid)"
            pids+=("$pid")
        fi
    done
    terminate "$timeout" "${pids[@]}"
    for spec in "$@"; do
        rm -f "${spec%%:*}"
    done
}

# Print the pids of this cluster's slurmstepd processes: a slurmstepd holding a unix socket
# under our spool directory, or one started with our SLURM_CONF in its environment.
our_slurmstepd_pids() {
    local inodes pid exe fd link
    # Inodes of the unix sockets bound under the spool directory (/proc/net/unix: inode is
    # the 7th field, path the 8th).
    inodes=$(awk -v dir="$SPOOL_DIR/" 'index($8, dir) == 1 {print $7}' /proc/net/unix)
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
        [[ ${exe##*/} == slurmstepd || ${exe##*/} == slurmstepd-* ]] || continue
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
                grep -qxF "SLURM_CONF=$SLURM_CONF_FILE"; then
            echo "$pid"
            continue
        fi
        for fd in /proc/"$pid"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            if [[ $link =~ ^socket:\[([0-9]+)\]$ ]] &&
                    grep -qxF "${BASH_REMATCH[1]}" <<<"$inodes"; then
                echo "$pid"
                break
            fi
        done
    done
}

# Print every descendant of the pids given (their job processes), deepest last.
descendants() {
    local -A parent_of=()
    local pid ppid file line rest frontier=("$@") next child
    for file in /proc/[0-9]*/stat; do
        # Field 4 of /proc/PID/stat is the parent pid; the command in field 2 may hold spaces.
        read -r line <"$file" 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }
        read -r _ ppid _ <<<"$rest"
        parent_of[$pid]=$ppid
    done
    while [[ ${#frontier[@]} -gt 0 ]]; do
        next=()
        for child in "${!parent_of[@]}"; do
            for pid in "${frontier[@]}"; do
                if [[ ${parent_of[$child]} == "$pid" ]]; then
                    echo "$child"
                    next+=("$child")
                fi
            done
        done
        frontier=("${next[@]}")
    done
}

# Stop this cluster's job steps and the processes they started.
stop_job_steps() {
    local steps=() procs=()
    mapfile -t steps < <(our_slurmstepd_pids)
    [[ ${#steps[@]} -gt 0 ]] || return 0
    mapfile -t procs < <(descendants "${steps[@]}")
    say "stopping ${#steps[@]} slurmstepd process(es) and ${#procs[@]} job process(es)"
    terminate 5 "${procs[@]}" "${steps[@]}"
}

main() {
    init_layout "${1:-}"
    if [[ ! -d $BASE_DIR ]]; then
        say "nothing to stop: $BASE_DIR does not exist"
        return 0
    fi
    # Same lock as start_local_cluster.sh (which holds it already when it calls us).
    if [[ -z ${SLURM_LOCAL_LOCK_HELD:-} ]]; then
        exec 9>"$LOCK_FILE"
        flock -w 120 9 || { say "timed out waiting for $LOCK_FILE"; exit 1; }
    fi
    # slurmctld flushes to slurmdbd, which writes to MariaDB; all of them need munged.
    stop_job_steps
    stop_daemons 15 "$PID_SLURMD:slurmd" "$PID_SLURMCTLD:slurmctld"
    stop_job_steps
    stop_daemons 15 "$PID_SLURMDBD:slurmdbd"
    stop_daemons 60 "$PID_MARIADBD:mariadbd" "$PID_MUNGED:munged"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$DB_SOCKET"
    say "cluster in $BASE_DIR stopped"
}

main "$@"

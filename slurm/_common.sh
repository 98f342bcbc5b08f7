# shellcheck shell=bash disable=SC2034  # variables used by the scripts that source this file
# Shared by start_local_cluster.sh and stop_local_cluster.sh: the layout of a local cluster's
# base directory and small helpers for pid files. Sourced, not run.
#
# Every knob can be set in the environment; the defaults suit tests on a 2-core machine.
#   SLURM_LOCAL_BASE_DIR   base directory when none is given as argument [/tmp/ssgan3d-slurm]
#   SLURM_LOCAL_CPUS       CPUs the node advertises (more than it has: config_overrides) [8]
#   SLURM_LOCAL_GPUS       fake GPUs (gres symlinks to /dev/null) [2]
#   SLURM_LOCAL_MEM_MB     RealMemory the node advertises, in MB (not enforced) [16384]
#   SLURM_LOCAL_PORT_BASE  slurmctld port; slurmd, slurmdbd, MariaDB use the next three [16817]
#   SLURM_LOCAL_TIMEOUT    seconds to wait for the cluster to become healthy [60]

DEFAULT_BASE_DIR=/tmp/ssgan3d-slurm
CLUSTER_NAME=ssgan3d
NODE_NAME=localhost
PARTITION=debug

# Set every path variable from the base directory given as $1 (made absolute).
init_layout() {
    BASE_DIR=$(realpath -m "${1:-${SLURM_LOCAL_BASE_DIR:-$DEFAULT_BASE_DIR}}")
    ETC_DIR=$BASE_DIR/etc
    RUN_DIR=$BASE_DIR/run
    LOG_DIR=$BASE_DIR/log
    MUNGE_DIR=$BASE_DIR/munge
    DB_DIR=$BASE_DIR/mariadb
    DB_DATA_DIR=$DB_DIR/data
    STATE_DIR=$BASE_DIR/state
    SPOOL_DIR=$BASE_DIR/spool
    GPU_DIR=$BASE_DIR/gpu

    SLURM_CONF_FILE=$ETC_DIR/slurm.conf
    SLURMDBD_CONF_FILE=$ETC_DIR/slurmdbd.conf
    GRES_CONF_FILE=$ETC_DIR/gres.conf
    PLUGSTACK_CONF_FILE=$ETC_DIR/plugstack.conf
    DB_INIT_FILE=$ETC_DIR/mariadb-init.sql
    ENV_FILE=$BASE_DIR/env.sh
    LOCK_FILE=$BASE_DIR/.lock

    MUNGE_KEY=$MUNGE_DIR/munge.key
    MUNGE_SOCKET=$MUNGE_DIR/munge.socket
    DB_SOCKET=$DB_DIR/mariadb.sock

    # Pid files, one per daemon; the names double as the daemon names in messages.
    PID_MUNGED=$RUN_DIR/munged.pid
    PID_MARIADBD=$RUN_DIR/mariadbd.pid
    PID_SLURMDBD=$RUN_DIR/slurmdbd.pid
    PID_SLURMCTLD=$RUN_DIR/slurmctld.pid
    PID_SLURMD=$RUN_DIR/slurmd.pid

    NODE_CPUS=${SLURM_LOCAL_CPUS:-8}
    NODE_GPUS=${SLURM_LOCAL_GPUS:-2}
    NODE_MEM_MB=${SLURM_LOCAL_MEM_MB:-16384}
    PORT_BASE=${SLURM_LOCAL_PORT_BASE:-16817}
    SLURMCTLD_PORT=$PORT_BASE
    SLURMD_PORT=$((PORT_BASE + 1))
    SLURMDBD_PORT=$((PORT_BASE + 2))
    DB_PORT=$((PORT_BASE + 3))
    HEALTH_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
}

# Print the pid stored in pid file $1 if that process is alive and runs program $2, so a
# recycled pid is never taken for ours. The executable is compared with the program's base
# name and with what the program resolves to on PATH (Debian installs slurmctld as an
# alternatives link to slurmctld-wlm).
live_pid() {
    local pid_file=$1 program=$2 pid exe expected
    [[ -s $pid_file ]] || return 1
    pid=$(tr -dc '0-9' <"$pid_file")
    [[ -n $pid ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    expected=$(readlink -f "$(command -v "$program" || echo "/nonexistent/$program")")
    [[ ${exe##*/} == "$program" || $exe == "$expected" ]] || return 1
    echo "$pid"
}

# Log a message on stderr with the script's name.
say() {
    echo "${0##*/}: $*" >&2
}

#!/usr/bin/env bash
# A real single-node Slurm on this machine, for CI and a laptop (the recipe of ../shared/slurm-local.md):
# Debian's slurm-wlm + munge, one node, as root.
#
#   scripts/slurm_local.sh start    # installs if missing, munge key + munged, slurm.conf, slurmctld, slurmd;
#                                   # waits for the node; prints: export SLURM_CONF=...
#   scripts/slurm_local.sh stop     # stops the daemons it started (by their pid files)
#   scripts/slurm_local.sh env      # prints the export line only
#
# Both are idempotent: start on a running cluster only prints the export line, stop on a stopped one
# does nothing. The configuration lives in $SLURM_LOCAL_DIR (default /var/tmp/xrd-slurm); nothing in
# the project depends on it beyond SLURM_CONF and the PATH: a facility's own slurm.conf works the same.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/xrd-slurm}
CONF="$DIR/slurm.conf"
HOST=$(hostname -s)
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

log() { echo "slurm_local: $*" >&2; }

alive() {  # alive PIDFILE: the process named in the pid file runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, then SIGKILL after 10 s
    local pidfile=$1 name=$2 pid i
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop in 10 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "stopped $name (pid $pid)"
}

install_if_missing() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || { log "slurm-wlm/munge are not installed and this is not root: install them first"; exit 1; }
    log "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

MUNGE_PID=/run/munge/munged.pid

start_munge() {
    mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
    [ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    if alive "$MUNGE_PID"; then
        return 0
    fi
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then  # one without our pid file answers
        log "a munged is already running: using it"
        return 0
    fi
    su -s /bin/sh munge -c munged
    touch "$DIR/munged.ours"  # stop stops only a munged this script started
    log "started munged"
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local new="$DIR/slurm.conf.new"
    cat >"$new" <<EOF
# written by scripts/slurm_local.sh: a one-node cluster on $HOST
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/ctld.log
SlurmdLogFile=$DIR/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=300
NodeName=$HOST CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$new" "$CONF"; then
        rm -f "$new"
    else
        mv "$new" "$CONF"
    fi
}

wait_node() {
    local i state
    for i in $(seq 1 $((WAIT_S * 5))); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*|completing*) return 0 ;;
        esac
        sleep 0.2
    done
    log "node $HOST is not up after ${WAIT_S} s (state '${state:-unknown}'); see $DIR/log/"
    exit 1
}

start() {
    install_if_missing
    mkdir -p "$DIR"
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld
        log "started slurmctld"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        slurmd
        log "started slurmd"
    fi
    wait_node
    echo "export SLURM_CONF=$CONF"
}

stop() {
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    if [ -f "$DIR/munged.ours" ]; then
        stop_pid "$MUNGE_PID" munged
        rm -f "$DIR/munged.ours"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac

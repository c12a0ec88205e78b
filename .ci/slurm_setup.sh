#!/usr/bin/env bash
# Start a one-node SLURM cluster (munged + slurmctld + slurmd) on this host, for
# the real `--cluster slurm` test in tests/test_cluster.py.  Needs root and
# Debian's slurm-wlm + munge (installed here if missing).  Idempotent: daemons
# already running are left alone.  No systemd or cgroups are needed:
# proctrack/linuxproc + task/none.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
fi

NODE="$(hostname -s)"
CPUS="$(nproc)"
# Leave 2 GiB to the OS; RealMemory is in MiB.
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 - 2048}' /proc/meminfo)"
CONF=/etc/slurm/slurm.conf
SPOOL=/var/spool/slurmctld
STATE=/var/spool/slurmd
LOGS=/var/log/slurm

mkdir -p /etc/slurm "$SPOOL" "$STATE" "$LOGS" /run/munge
chown munge:munge /run/munge

cat > "$CONF" <<CONF
ClusterName=sedscale-ci
SlurmctldHost=${NODE}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${SPOOL}
SlurmdSpoolDir=${STATE}
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
KillWait=5
NodeName=${NODE} CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF

if ! pgrep -x munged >/dev/null; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --force
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    su -s /bin/sh munge -c "munged"
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

# Wait until the node is schedulable.
for _ in $(seq 60); do
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm node did not become idle:" >&2
sinfo -N -l >&2 || true
tail -n 30 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
exit 1

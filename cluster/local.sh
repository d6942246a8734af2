#!/usr/bin/env bash
# A scale-out cluster on this one machine, to run the SLURM profile, an MLflow tracking server on
# PostgreSQL and an S3 DVC remote for real before a real cluster (and for tests/test_cluster.py).
#
#   cluster/local.sh up [COMPONENT...]      start them (default: all, in dependency order); one
#                                           already up is left alone
#   cluster/local.sh down [COMPONENT...]    stop what `up` started, by the pids it recorded
#   cluster/local.sh status [COMPONENT...]  one line each; exit status 1 unless all are up
#   cluster/local.sh env                    export lines: eval "$(cluster/local.sh env)"
#
# Components: slurm (munge, slurmctld, slurmd: one node), postgres (port 55432), s3 (moto, port
# 5057), mlflow (port 5055; needs postgres and s3, and `up mlflow` starts them). State, logs and
# data live under ${ETUDE_CLUSTER_DIR:-/tmp/etude-cluster}. Needs root: apt-get, and the daemons
# run as root, munge or postgres. For local use only: PostgreSQL trusts local connections and the
# S3 keys are moto's dummies.
#
# The MLflow server runs MLflow's basic-auth app: every request needs a user and password. Its
# admin's password is $MLFLOW_AUTH_ADMIN_PASSWORD at the first `up` (or, unset, one generated into
# $STATE/mlflow-admin-password, mode 600); `env` exports the admin's credentials for this
# machine's clients. Users start with READ (README: A team server).
set -euo pipefail
# Daemons and their tools live in sbin, which a non-login or CI shell often leaves off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
STATE=${ETUDE_CLUSTER_DIR:-/tmp/etude-cluster}
RUN=$STATE/run LOGS=$STATE/log DATA=$STATE/data
COMPONENTS=(slurm postgres s3 mlflow)  # dependency order: mlflow last
PG_PORT=55432 S3_PORT=5057 MLFLOW_PORT=5055
S3_URL=http://127.0.0.1:$S3_PORT
MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT
BACKEND=postgresql://mlflow:mlflow@127.0.0.1:$PG_PORT/mlflow
AUTH_DB=postgresql://mlflow:mlflow@127.0.0.1:$PG_PORT/mlflow_auth  # users and permissions
MLFLOW_ADMIN=admin
BUCKETS=(etude-dvc etude-mlflow)
# The jobstep plugin strips every SLURM_* variable (SLURM_CONF too) before its inner srun, so the
# configuration has to be where SLURM looks by default.
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_MARK="# Written by etude cluster/local.sh; removed by its 'down'."

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

say() { echo "local.sh: $*" >&2; }

# Stops with a message naming the component, and the end of its log when there is one.
fail() {
    local component=$1 message=$2 log=${3:-}
    say "$component: $message${log:+; log: $log}"
    if [[ -n $log && -s $log ]]; then tail -n 15 "$log" | sed 's/^/    /' >&2; fi
    exit 1
}

# ---- processes: only pids recorded here are ever signalled -----------------------------------

# Start a daemon in its own session (an interrupted `make` does not take it down), output to its
# log, and record its pid with the program it runs. `setsid` execs in place here (a background job
# of a non-interactive shell is no group leader), so $! is the daemon itself, but only once the
# forked shell has exec'd: until then its command line is this script's, and pid_of would take a
# daemon still starting for one that exited (CI met this race). So wait for the exec.
spawn() {
    local name=$1 program=$2 pid
    shift 2
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid $program" >"$RUN/$name.pid"
    for _ in $(seq 100); do
        pid_of "$name" >/dev/null || [[ ! -d /proc/$pid ]] || { sleep 0.1; continue; }
        return 0
    done
    fail "$name" "did not exec '$program' within 10 s" "$LOGS/$name.log"
}

# The recorded pid of `name` while it still runs the recorded program (never a reused pid).
pid_of() {
    local file=$RUN/$1.pid pid program
    [[ -f $file ]] || return 1
    read -r pid program <"$file"
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program" && echo "$pid"
}

stop() {
    local name=$1 pid
    if pid=$(pid_of "$name"); then
        kill -TERM "$pid"
        for _ in $(seq 30); do [[ -d /proc/$pid ]] || break; sleep 1; done
        if [[ -d /proc/$pid ]]; then say "$name ($pid) ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid"; fi
        echo "  stopped $name ($pid)"
    fi
    rm -f "$RUN/$name.pid"
}

# Poll `probe...` until it succeeds; fail early if the daemon died, or after `timeout` seconds.
wait_for() {
    local component=$1 name=$2 timeout=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        pid_of "$name" >/dev/null || fail "$component" "$name exited while starting" "$LOGS/$name.log"
        ((SECONDS < deadline)) || fail "$component" "$name not ready after ${timeout} s" "$LOGS/$name.log"
        sleep 1
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port held by a program this state directory did not start is an error, not something to take over.
port_free() {
    local component=$1 port=$2
    if port_open "$port"; then fail "$component" "port $port is in use by a program not started from $STATE"; fi
}

http_ok() { curl -sf -o /dev/null --max-time 5 "$1"; }

apt_install() {
    say "installing $* with apt-get"
    # Packages must not start daemons of their own (munge, postgresql): `up` starts and records them.
    local policy=/usr/sbin/policy-rc.d made="" rc=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1; fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
    if [[ -n $made ]]; then rm -f "$policy"; fi
    return "$rc"
}

# The `cluster` extra of pyproject.toml (moto, psycopg2, dvc-s3, the SLURM executor), installed
# into .venv when any of its pins is missing.
ensure_extra() {
    "$VENV/bin/python" - "$ROOT/pyproject.toml" <<'EOF' && return
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement

pins = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["cluster"]
def installed(req):
    try:
        return version(req.name) in req.specifier
    except PackageNotFoundError:
        return False
sys.exit(0 if all(installed(Requirement(pin)) for pin in pins) else 1)
EOF
    say "installing the cluster extra into .venv"
    "$VENV/bin/python" -m pip install -q -e "${ROOT}[cluster]"
}

# ---- slurm: munge, slurmctld and slurmd on this node -----------------------------------------

munge_ok() { munge -n | unmunge; }
slurm_ready() { scontrol ping | grep -q UP && sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'; }
slurm_up() { pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && slurm_ready >/dev/null 2>&1; }

write_slurm_conf() {
    local host hardware
    host=$(hostname -s)
    # The node as slurmd sees it (CPUs, sockets, cores, RealMemory): a larger RealMemory would drain it.
    hardware=$(slurmd -C | head -n 1)
    [[ $hardware == "NodeName=$host "* ]] || fail slurm "slurmd -C printed '$hardware', not NodeName=$host"
    if [[ -f $SLURM_CONF ]] && ! grep -qF "$SLURM_MARK" "$SLURM_CONF"; then
        fail slurm "$SLURM_CONF exists and was not written by local.sh: this machine has its own SLURM"
    fi
    port_free slurm 6817  # slurmctld, perhaps of another ETUDE_CLUSTER_DIR, whose config this would replace
    port_free slurm 6818  # slurmd
    mkdir -p "$(dirname "$SLURM_CONF")" "$DATA/slurm/state" "$DATA/slurm/spool"
    cat >"$SLURM_CONF" <<EOF
$SLURM_MARK
ClusterName=etude
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DATA/slurm/state
SlurmdSpoolDir=$DATA/slurm/spool
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
MailProg=/bin/true
# No cgroups in a sandbox: track processes by parentage, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct and sacctmgr do not work; the Snakemake plugin must poll with squeue, which
# sees a finished job for MinJobAge seconds (the plugin wants >= 3 x its first-check delay; the
# tests read the jobs' records after the workflow).
AccountingStorageType=accounting_storage/none
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
$hardware NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

up_slurm() {
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
        apt_install slurm-wlm munge || fail slurm "apt-get install slurm-wlm munge failed"
    fi
    if ! munge_ok >/dev/null 2>&1; then  # a munged already answering (the system's) is used as is
        [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 "$DATA/munge"
        spawn munged munged setpriv --reuid=munge --regid=munge --init-groups \
            munged --foreground --force --log-file="$DATA/munge/munged.log" --pid-file="$DATA/munge/munged.pid"
        wait_for slurm munged 30 munge_ok
    fi
    write_slurm_conf
    spawn slurmctld slurmctld slurmctld -D -f "$SLURM_CONF"
    wait_for slurm slurmctld 60 scontrol ping
    spawn slurmd slurmd slurmd -D -f "$SLURM_CONF"
    wait_for slurm slurmd 60 slurm_ready
}

down_slurm() {
    # Jobs still running belong to this cluster only: cancel them before their daemons go.
    if pid_of slurmctld >/dev/null; then
        squeue -h -t pending,running -o %i | xargs -r scancel || true
    fi
    stop slurmd
    stop slurmctld
    stop munged
    # The configuration goes with the daemons that read it: this state directory's, not another's.
    if grep -qF "StateSaveLocation=$DATA/slurm/state" "$SLURM_CONF" 2>/dev/null; then rm -f "$SLURM_CONF"; fi
}

# ---- postgres: a cluster of its own, as user postgres ----------------------------------------

pg_bin() {
    local bin
    bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $bin ]] && echo "$bin"
}
as_postgres() { runuser -u postgres -- "$@"; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
postgres_up() { pid_of postgres >/dev/null && pg_ready; }

up_postgres() {
    local bin data=$DATA/postgres sockets=$RUN/postgres
    bin=$(pg_bin) || { apt_install postgresql || fail postgres "apt-get install postgresql failed"; bin=$(pg_bin); }
    port_free postgres "$PG_PORT"
    install -d -o postgres -g postgres -m 0700 "$data"
    install -d -o postgres -g postgres -m 0755 "$sockets"
    touch "$LOGS/postgres.log" && chown postgres: "$LOGS/postgres.log"
    if [[ ! -f $data/PG_VERSION ]]; then  # initdb refuses to run as root
        as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >>"$LOGS/postgres.log" ||
            fail postgres "initdb failed" "$LOGS/postgres.log"
    fi
    as_postgres "$bin/pg_ctl" -D "$data" -l "$LOGS/postgres.log" -w -t 60 \
        -o "-p $PG_PORT -k $sockets -c listen_addresses=127.0.0.1" start >/dev/null ||
        fail postgres "pg_ctl start failed" "$LOGS/postgres.log"
    echo "$(head -n 1 "$data/postmaster.pid") postgres" >"$RUN/postgres.pid"
    wait_for postgres postgres 30 pg_ready
    local psql=(psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1)
    if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'") ]]; then
        "${psql[@]}" -c "CREATE USER mlflow PASSWORD 'mlflow'" -c "CREATE DATABASE mlflow OWNER mlflow"
    fi
    if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow_auth'") ]]; then
        "${psql[@]}" -c "CREATE DATABASE mlflow_auth OWNER mlflow"
    fi
}

down_postgres() {
    if pid_of postgres >/dev/null; then  # pg_ctl shuts down the postmaster and its backends cleanly
        as_postgres "$(pg_bin)/pg_ctl" -D "$DATA/postgres" -m fast -w stop >/dev/null && echo "  stopped postgres"
    fi
    stop postgres
}

# ---- s3: moto's standalone server, in memory (buckets are made again at each start) ----------

s3_up() { pid_of moto >/dev/null && http_ok "$S3_URL/"; }

up_s3() {
    port_free s3 "$S3_PORT"
    spawn moto moto_server "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
    wait_for s3 moto 60 http_ok "$S3_URL/"
    "$VENV/bin/python" - "$S3_URL" "${BUCKETS[@]}" <<'EOF' || fail s3 "could not create the buckets" "$LOGS/moto.log"
import sys
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
for bucket in sys.argv[2:]:
    s3.create_bucket(Bucket=bucket)
EOF
}

down_s3() { stop moto; }

# ---- mlflow: tracking server, runs in PostgreSQL, artifacts proxied to S3 --------------------

mlflow_up() { pid_of mlflow >/dev/null && http_ok "$MLFLOW_URL/health"; }

# A secret of this state directory, made once (mode 600): the admin's password unless the
# environment gives one, and the key that signs the auth app's CSRF tokens (one for all workers).
secret() {
    local file=$STATE/$1
    if [[ ! -s $file ]]; then
        (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$file")
    fi
    cat "$file"
}

# The environment's password counts only at the first start, as it does for MLflow itself.
admin_password() {
    local file=$STATE/mlflow-admin-password
    if [[ ! -s $file && -n ${MLFLOW_AUTH_ADMIN_PASSWORD:-} ]]; then
        (umask 077 && echo "$MLFLOW_AUTH_ADMIN_PASSWORD" >"$file")
    fi
    secret mlflow-admin-password
}

up_mlflow() {
    port_free mlflow "$MLFLOW_PORT"
    # The auth app reads its store and admin from this file; the admin's password only when it
    # creates the admin, at the first start against an empty store.
    cat >"$STATE/mlflow-auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $AUTH_DB
admin_username = $MLFLOW_ADMIN
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    # Migrate the schema once, before the server's workers start (it is a no-op when current).
    MLFLOW_S3_ENDPOINT_URL=$S3_URL "$VENV/bin/mlflow" db upgrade "$BACKEND" >>"$LOGS/mlflow.log" 2>&1 ||
        fail mlflow "mlflow db upgrade failed" "$LOGS/mlflow.log"
    # Clients send artifacts to the server (mlflow-artifacts:/), which writes them to S3: jobs need
    # only the tracking URI, no S3 credentials. No job runner: its seven consumer processes serve
    # GenAI features this project does not use.
    MLFLOW_S3_ENDPOINT_URL=$S3_URL MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
        MLFLOW_AUTH_CONFIG_PATH=$STATE/mlflow-auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$(admin_password) \
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret mlflow-secret-key) \
        spawn mlflow "mlflow server" "$VENV/bin/mlflow" server --app-name basic-auth \
        --backend-store-uri "$BACKEND" --artifacts-destination s3://etude-mlflow/artifacts \
        --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2
    wait_for mlflow mlflow 120 http_ok "$MLFLOW_URL/health"
}

down_mlflow() { stop mlflow; }

# ---- commands ---------------------------------------------------------------------------------

is_up() { "${1}_up"; }

# The named components (default: all), checked, in dependency order.
select_components() {
    local name wanted=("$@")
    ((${#wanted[@]})) || wanted=("${COMPONENTS[@]}")
    for name in "${wanted[@]}"; do
        [[ " ${COMPONENTS[*]} " == *" $name "* ]] || { say "unknown component '$name' (${COMPONENTS[*]})"; exit 2; }
    done
    for name in "${COMPONENTS[@]}"; do
        [[ " ${wanted[*]} " == *" $name "* ]] && echo "$name"
    done
    return 0
}

cmd_up() {
    local name selected
    selected=$(select_components "$@")
    # shellcheck disable=SC2086  # one name a line
    if grep -qx mlflow <<<"$selected"; then selected=$(select_components $selected postgres s3); fi
    mkdir -p "$RUN" "$LOGS" "$DATA"
    [[ -x $VENV/bin/python ]] || { say "no $VENV: run 'make install' first"; exit 1; }
    ensure_extra
    export PATH=$VENV/bin:$PATH
    for name in $selected; do
        if is_up "$name" 2>/dev/null; then echo "$name: already up"; continue; fi
        local start=$SECONDS
        "down_$name" >/dev/null  # what a failed start left running (recorded pids only)
        "up_$name"
        echo "$name: up ($((SECONDS - start)) s)"
    done
}

cmd_down() {
    local name selected
    selected=$(select_components "$@" | tac)  # dependents first
    for name in $selected; do
        "down_$name"
        echo "$name: down"
    done
}

cmd_status() {
    local name rc=0
    export PATH=$VENV/bin:$PATH
    for name in $(select_components "$@"); do
        if is_up "$name" 2>/dev/null; then echo "$name: up"; else echo "$name: down"; rc=1; fi
    done
    return $rc
}

# botocore reads AWS_ENDPOINT_URL_S3: boto3 and DVC's S3 remote reach moto with no endpointurl set.
cmd_env() {
    cat <<EOF
export MLFLOW_TRACKING_URI=$MLFLOW_URL
export MLFLOW_S3_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
export AWS_ENDPOINT_URL_S3=$S3_URL
export ETUDE_DVC_REMOTE=s3://etude-dvc/cache
EOF
    if [[ -s $STATE/mlflow-admin-password ]]; then  # made by the first `up mlflow`
        echo "export MLFLOW_TRACKING_USERNAME=$MLFLOW_ADMIN"
        echo "export MLFLOW_TRACKING_PASSWORD=$(cat "$STATE/mlflow-admin-password")"
    fi
}

usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case ${1:-} in
    up | down | status) command=$1; shift; "cmd_$command" "$@" ;;
    env) cmd_env ;;
    *) usage ;;
esac

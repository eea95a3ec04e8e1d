#!/bin/sh
# Valkey container entrypoint: checks the environment, renders valkey.conf and users.acl from the
# templates into VALKEY_CONFIG_DIR, applies the persistence mode and execs valkey-server.
#
# Contract: docs/design.md ("The Valkey container"); user-facing notes: docs/security.md.
# POSIX sh (runs under dash and bash); needs only envsubst, sha256sum, sed and the server binary.
# No password is ever printed, logged or put on a command line: hashes are computed from stdin,
# envsubst reads the values from its environment, and the server gets only the config path.
set -eu

# Valkey's default shutdown-timeout: how long a primary stopping on SIGTERM waits for its replicas
# to catch up (and, on 9.x, for one of them to take over). The chart's
# terminationGracePeriodSeconds must be larger; overrides.conf may change it.
SHUTDOWN_TIMEOUT_SECONDS=10
# Bounds on the replication password, the one clear-text password in the config.
REPLICATION_PASSWORD_MIN_LENGTH=16
REPLICATION_PASSWORD_MAX_LENGTH=128
# Restart delay with persistence off (field notes H1, restart variant): a restarted node waits this
# many times the effective cluster-node-timeout before its server starts, so its replica marks it
# failed and takes over first.
RESTART_DELAY_FACTOR=2
# Valkey's own cluster-node-timeout when no config line sets it.
DEFAULT_CLUSTER_NODE_TIMEOUT_MS=15000
# Cap on the computed delay. The chart's liveness probe (initialDelaySeconds 30, then 6 failures
# 15 s apart) restarts the container after about 105-120 s of no PONG; the delay must stay well
# inside that or the container is killed mid-wait, over and over. The chart default 5000 ms gives 10 s.
RESTART_DELAY_MAX_SECONDS=60
# First Valkey major version with "shutdown-on-sigterm failover" and atomic slot migration
# (8.x refuses to start with either in its config or ACL file).
VALKEY_9_MAJOR=9

ALNUM='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
NL='
'
CR=$(printf '\r')

die() {
    printf 'entrypoint: error: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'entrypoint: %s\n' "$*" >&2
}

# --- Required variables ---------------------------------------------------------------------------
# "${VAR+x}" tells unset from empty without expanding the value into any message.
require() {
    eval "is_set=\${$1+x}"
    if [ -z "$is_set" ]; then
        die "$1 is not set. Set it in the container environment ($2)."
    fi
}

PASSWORD_VARS='VALKEY_ADMIN_PASSWORD VALKEY_CLIENT_PASSWORD VALKEY_REPLICATION_PASSWORD VALKEY_RECONCILER_PASSWORD VALKEY_MONITOR_PASSWORD'

for var in $PASSWORD_VARS; do
    require "$var" "from the chart's Secret"
done
require POD_IP "from the downward API: fieldRef status.podIP"

VALKEY_PERSISTENCE=${VALKEY_PERSISTENCE-}
VALKEY_TEMPLATE_DIR=${VALKEY_TEMPLATE_DIR:-/etc/valkey/templates}
VALKEY_CONFIG_DIR=${VALKEY_CONFIG_DIR:-/run/valkey}
VALKEY_DATA_DIR=${VALKEY_DATA_DIR:-/data}
VALKEY_SERVER_BIN=${VALKEY_SERVER_BIN:-valkey-server}

# --- Passwords ------------------------------------------------------------------------------------
# Every password is hashed into users.acl, so any byte is safe there except a line break (it would
# break the AUTH line of probes and tools). An empty one must stop us: "#" with no hash makes the
# server refuse to start, and an empty clear-text password would accept an empty AUTH.
for var in $PASSWORD_VARS; do
    eval "value=\$$var"
    if [ -z "$value" ]; then
        die "$var is empty. Set a non-empty password in the Secret that provides it."
    fi
    case $value in
        *"$NL"* | *"$CR"*)
            die "$var contains a line break. Use a single-line password." ;;
    esac
done
# primaryauth is written in clear text between double quotes, where a quote, backslash or space
# makes the server refuse to start (field notes §2); the chart generates it, so demand a safe shape.
case $VALKEY_REPLICATION_PASSWORD in
    *[!$ALNUM]*)
        die "VALKEY_REPLICATION_PASSWORD may contain only letters A-Z, a-z and digits 0-9. Regenerate it (the chart's internal Secret does this)." ;;
esac
length=${#VALKEY_REPLICATION_PASSWORD}
if [ "$length" -lt "$REPLICATION_PASSWORD_MIN_LENGTH" ] || [ "$length" -gt "$REPLICATION_PASSWORD_MAX_LENGTH" ]; then
    die "VALKEY_REPLICATION_PASSWORD must be $REPLICATION_PASSWORD_MIN_LENGTH to $REPLICATION_PASSWORD_MAX_LENGTH characters long (it is $length). Regenerate it."
fi

# --- Addresses and paths --------------------------------------------------------------------------
if [ -z "$POD_IP" ]; then
    die "POD_IP is empty. Set it from the downward API: fieldRef status.podIP."
fi
case $POD_IP in
    *[!0123456789abcdefABCDEF.:]*)
        die "POD_IP='$POD_IP' is not an IPv4 or IPv6 address. Set it from the downward API: fieldRef status.podIP." ;;
esac
# The paths are written between double quotes into valkey.conf.
for var in VALKEY_TEMPLATE_DIR VALKEY_CONFIG_DIR VALKEY_DATA_DIR; do
    eval "value=\$$var"
    case $value in
        /*) ;;
        *) die "$var='$value' is not an absolute path. Use an absolute directory path." ;;
    esac
    case $value in
        *'"'* | *'\'* | *"$NL"* | *"$CR"*)
            die "$var='$value' contains a quote, backslash or line break. Use a plain directory path." ;;
    esac
done
for name in valkey.conf users.acl; do
    if [ ! -r "$VALKEY_TEMPLATE_DIR/$name" ]; then
        die "template $VALKEY_TEMPLATE_DIR/$name is missing or unreadable. Mount the chart's ConfigMap there or set VALKEY_TEMPLATE_DIR."
    fi
done

# --- Persistence ----------------------------------------------------------------------------------
# Accepted: "rdb,aof", "rdb", "aof" (also space-separated, the chart's list form, in any order) and
# empty, "~" or "none" for no persistence.
rdb=no
aof=no
case $VALKEY_PERSISTENCE in
    '' | '~' | none) ;;
    *)
        for mode in $(printf '%s' "$VALKEY_PERSISTENCE" | tr ',' ' '); do
            case $mode in
                rdb) rdb=yes ;;
                aof) aof=yes ;;
                *) die "VALKEY_PERSISTENCE='$VALKEY_PERSISTENCE' is not a persistence mode. Use one of: rdb,aof | rdb | aof | none (empty or ~ also mean none)." ;;
            esac
        done
        if [ "$rdb" = no ] && [ "$aof" = no ]; then
            die "VALKEY_PERSISTENCE='$VALKEY_PERSISTENCE' is not a persistence mode. Use one of: rdb,aof | rdb | aof | none (empty or ~ also mean none)."
        fi ;;
esac

# --- Server version -------------------------------------------------------------------------------
if ! version_line=$("$VALKEY_SERVER_BIN" --version 2>/dev/null); then
    die "VALKEY_SERVER_BIN='$VALKEY_SERVER_BIN' does not run. Point it at a valkey-server binary."
fi
major=$(printf '%s\n' "$version_line" | sed -n 's/.* v=\([0-9][0-9]*\)\..*/\1/p')
if [ -z "$major" ]; then
    die "VALKEY_SERVER_BIN='$VALKEY_SERVER_BIN' printed no 'v=<major>.' version. Point it at a valkey-server binary."
fi

# --- Restart delay (persistence off) --------------------------------------------------------------
# A node whose container restarts at the same IP within cluster-node-timeout is found again by its
# replica's replication link (by IP:port): the replica full-syncs the new node's EMPTY dataset and
# then wins the election for the old slots, so the shard's data is gone before any reconciler can
# act (measured on 8.1.8). Staying down for longer than the node timeout lets the replica mark this
# node failed and promote itself with the data first. Only a restart (nodes.conf left by an earlier
# run) waits; a first start has no replica to protect.
VALKEY_RESTART_DELAY_SECONDS=${VALKEY_RESTART_DELAY_SECONDS-}
case $VALKEY_RESTART_DELAY_SECONDS in
    '') ;;
    *[!0123456789]*)
        die "VALKEY_RESTART_DELAY_SECONDS='$VALKEY_RESTART_DELAY_SECONDS' is not a whole number of seconds. Leave it empty (computed from cluster-node-timeout), set 0 (no delay) or a number of seconds." ;;
esac
restart_delay=0
restart_reason=
# Digits without leading zeros (shell arithmetic would read "010" as octal).
decimal() {
    printf '%s\n' "$1" | sed 's/^0*\([0-9]\)/\1/'
}
if [ "$rdb" = no ] && [ "$aof" = no ] && [ -e "$VALKEY_DATA_DIR/nodes.conf" ]; then
    if [ -n "$VALKEY_RESTART_DELAY_SECONDS" ]; then
        restart_delay=$(decimal "$VALKEY_RESTART_DELAY_SECONDS")
        restart_reason="VALKEY_RESTART_DELAY_SECONDS=$VALKEY_RESTART_DELAY_SECONDS"
    else
        # The last cluster-node-timeout wins: overrides.conf is included after the template's lines
        # (the entrypoint adds none and substitutes none on that line). Config names are case-insensitive.
        node_timeout=$(cat "$VALKEY_TEMPLATE_DIR/valkey.conf" "$VALKEY_TEMPLATE_DIR/overrides.conf" 2>/dev/null |
            sed -n 's/^[[:space:]]*[Cc][Ll][Uu][Ss][Tt][Ee][Rr]-[Nn][Oo][Dd][Ee]-[Tt][Ii][Mm][Ee][Oo][Uu][Tt][[:space:]][[:space:]]*//p' |
            tail -n 1 | sed 's/[[:space:]]*$//; s/^"\(.*\)"$/\1/; s/^'"'"'\(.*\)'"'"'$/\1/')
        case $node_timeout in
            '') node_timeout=$DEFAULT_CLUSTER_NODE_TIMEOUT_MS ;;
            *[!0123456789]*)
                die "cluster-node-timeout '$node_timeout' in $VALKEY_TEMPLATE_DIR/valkey.conf or overrides.conf is not a whole number of milliseconds. Fix the template or the chart value cluster.nodeTimeoutMs." ;;
        esac
        restart_delay=$(( (RESTART_DELAY_FACTOR * $(decimal "$node_timeout") + 999) / 1000 ))
        restart_reason="$RESTART_DELAY_FACTOR x cluster-node-timeout $node_timeout ms"
        if [ "$restart_delay" -gt "$RESTART_DELAY_MAX_SECONDS" ]; then
            restart_delay=$RESTART_DELAY_MAX_SECONDS
            restart_reason="$restart_reason, capped at $RESTART_DELAY_MAX_SECONDS s to stay inside the liveness probe"
        fi
    fi
fi

# Everything is checked; from here on files change.
mkdir -p "$VALKEY_CONFIG_DIR" "$VALKEY_DATA_DIR"

# With persistence off a restarted node must come back as a new, empty node. If it kept nodes.conf
# it would rejoin as the owner of its old slots with no data, and its replica would then full-sync
# from it and lose everything too (field notes H1). So its cluster identity (nodes.conf) goes with
# its data; the reconciler re-attaches the new node. With persistence on, nodes.conf and the data
# survive together and the node resumes its place.
if [ "$rdb" = no ] && [ "$aof" = no ]; then
    if [ "$restart_delay" -gt 0 ]; then
        log "persistence off and nodes.conf from an earlier run found: waiting $restart_delay s ($restart_reason) before starting, so this node's replica takes over its slots before this empty node can be synced from (field notes H1)"
        # nodes.conf is removed only after the wait: a container killed mid-wait waits again next
        # time. A backgrounded sleep lets SIGTERM (the container's stop) end the wait at once.
        sleep_pid=
        trap 'if [ -n "$sleep_pid" ]; then kill "$sleep_pid" 2>/dev/null || true; fi; exit 143' TERM INT
        sleep "$restart_delay" &
        sleep_pid=$!
        wait "$sleep_pid" || true
        trap - TERM INT
    fi
    rm -rf "$VALKEY_DATA_DIR/nodes.conf" "$VALKEY_DATA_DIR/dump.rdb" "$VALKEY_DATA_DIR/appendonlydir"
    for stale in "$VALKEY_DATA_DIR"/temp-*.rdb "$VALKEY_DATA_DIR"/appendonly.aof*; do
        if [ -e "$stale" ]; then rm -rf "$stale"; fi
    done
    log "persistence off: removed nodes.conf, RDB and AOF files; this node starts as a new, empty node"
fi

# --- Render ---------------------------------------------------------------------------------------
sha256() {
    # printf is a shell builtin: the password reaches sha256sum on stdin, never in argv.
    printf '%s' "$1" | sha256sum | sed 's/ .*//'
}

umask 077
conf_tmp="$VALKEY_CONFIG_DIR/.valkey.conf.tmp"
acl_tmp="$VALKEY_CONFIG_DIR/.users.acl.tmp"

# envsubst gets an explicit list, so any other "$" in the templates (and in overrides.conf, which
# is included rather than substituted) stays as written. The values reach envsubst through its
# environment only.
POD_IP=$POD_IP VALKEY_CONFIG_DIR=$VALKEY_CONFIG_DIR VALKEY_DATA_DIR=$VALKEY_DATA_DIR \
    envsubst '${POD_IP} ${VALKEY_CONFIG_DIR} ${VALKEY_DATA_DIR} ${VALKEY_REPLICATION_PASSWORD}' \
    <"$VALKEY_TEMPLATE_DIR/valkey.conf" >"$conf_tmp"

{
    printf '\n# --- Added by entrypoint.sh: persistence %s ---\n' "${VALKEY_PERSISTENCE:-none}"
    if [ "$rdb" = yes ]; then
        # Valkey's default snapshot schedule, written out.
        echo 'save 3600 1 300 100 60 10000'
    else
        echo 'save ""'
    fi
    echo "appendonly $aof"
    echo "shutdown-timeout $SHUTDOWN_TIMEOUT_SECONDS"
    if [ "$major" -ge "$VALKEY_9_MAJOR" ]; then
        # On SIGTERM a primary first hands its shard to an up-to-date replica (field notes H1).
        echo 'shutdown-on-sigterm failover'
    fi
    if [ -f "$VALKEY_TEMPLATE_DIR/overrides.conf" ]; then
        echo '# Chart-generated settings (maxmemory, extraConfig); later lines win.'
        echo "include \"$VALKEY_TEMPLATE_DIR/overrides.conf\""
    fi
} >>"$conf_tmp"

# Valkey refuses comments in an ACL file: drop the template's comment and blank lines. It also
# refuses rules naming commands it does not know: before 9.0 there is no atomic slot migration
# (CLUSTER SYNCSLOTS) and no CLIENT IMPORT-SOURCE, so those rules are dropped on 8.x.
if [ "$major" -ge "$VALKEY_9_MAJOR" ]; then
    drop_unknown_rules='s/$//'
else
    drop_unknown_rules='s/$/ /; s/ [+-]cluster|syncslots / /g; s/ [+-]client|import-source / /g; s/ $//'
fi
VALKEY_ADMIN_PASSWORD_SHA256=$(sha256 "$VALKEY_ADMIN_PASSWORD") \
VALKEY_CLIENT_PASSWORD_SHA256=$(sha256 "$VALKEY_CLIENT_PASSWORD") \
VALKEY_REPLICATION_PASSWORD_SHA256=$(sha256 "$VALKEY_REPLICATION_PASSWORD") \
VALKEY_RECONCILER_PASSWORD_SHA256=$(sha256 "$VALKEY_RECONCILER_PASSWORD") \
VALKEY_MONITOR_PASSWORD_SHA256=$(sha256 "$VALKEY_MONITOR_PASSWORD") \
    envsubst '${VALKEY_ADMIN_PASSWORD_SHA256} ${VALKEY_CLIENT_PASSWORD_SHA256} ${VALKEY_REPLICATION_PASSWORD_SHA256} ${VALKEY_RECONCILER_PASSWORD_SHA256} ${VALKEY_MONITOR_PASSWORD_SHA256}' \
    <"$VALKEY_TEMPLATE_DIR/users.acl" | sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' -e "$drop_unknown_rules" >"$acl_tmp"

chmod 600 "$conf_tmp" "$acl_tmp"
mv -f "$conf_tmp" "$VALKEY_CONFIG_DIR/valkey.conf"
mv -f "$acl_tmp" "$VALKEY_CONFIG_DIR/users.acl"

log "rendered $VALKEY_CONFIG_DIR/valkey.conf and users.acl (persistence: ${VALKEY_PERSISTENCE:-none}, server major $major); starting $VALKEY_SERVER_BIN"

# The server needs no password from its environment: they are in the rendered files.
unset VALKEY_ADMIN_PASSWORD VALKEY_CLIENT_PASSWORD VALKEY_REPLICATION_PASSWORD VALKEY_RECONCILER_PASSWORD VALKEY_MONITOR_PASSWORD
exec "$VALKEY_SERVER_BIN" "$VALKEY_CONFIG_DIR/valkey.conf" "$@"

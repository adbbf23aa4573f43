# shellcheck shell=bash
# Shared by testbed/netns/scenarios.sh and its scenarios: build a small network of
# Linux network namespaces (two "datacenters" joined by a router whose links add
# latency and loss with tc netem), run PostgreSQL 15 in one of them and three fedgw
# replicas sharing it in the others, and a static HTTPS bundle endpoint (not fedgw)
# for them to poll. Every namespace, bridge and process made here is removed on exit,
# even on failure. See docs/testbed-netns.md.
#
#   dc1 10.77.1.0/24 (bridge br0 in netns <p>dc1)   dc2 10.77.2.0/24 (bridge br0 in <p>dc2)
#     pg   10.77.1.10  PostgreSQL                     r3   10.77.2.13  fedgw replica
#     r1   10.77.1.11  fedgw replica                  peer 10.77.2.20  https_server.py
#     r2   10.77.1.12  fedgw replica                  ds   10.77.2.30  downstream fedgw
#     rt   10.77.1.1 (eth1) ---- router netns <p>rt ---- 10.77.2.1 (eth2)
#          both router links: netem delay 40ms 10ms loss 1%; where the kernel has no
#          netem, the same delay by delay.py on an NFQUEUE and the loss by iptables
#   ds reaches the replicas as one Service address, 10.77.9.9:8443, spread over r1, r2
#   and r3 connection by connection (iptables DNAT, as kube-proxy does).
#
# Environment:
#   FEDGW              the fedgw binary (default: <repo>/target/debug/fedgw, built if missing)
#   NB_KEEP=1          keep the work directory (logs, data) after the run
#   NB_VERBOSE=1       print every step
#   NB_LOG=...         fedgw's log filter (default warn,fedgw=info)
#   NB_PG_BIN=DIR      PostgreSQL's programs (default /usr/lib/postgresql/15/bin)
#   NETNS_CUT_SECONDS  how long the partition scenario cuts dc2 off the database (60)
#   NB_PYTHON          a Python with `cryptography` (default <repo>/.venv/bin/python)

nb_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nb_repo=$(cd "$nb_here/../.." && pwd)
# shellcheck source=testbed/lib/common.sh
source "$nb_repo/testbed/lib/common.sh"
NB_PYTHON=${NB_PYTHON:-$nb_repo/.venv/bin/python}
NB_PG_BIN=${NB_PG_BIN:-/usr/lib/postgresql/15/bin}
# Seconds; the shortest lease fedgw accepts, so that take-overs are quick.
NB_LEASE=3
NB_WEB_PORT=8443
NB_PEER_TD=peer.test
NB_HOME_TD=home.test
NB_NETEM=(delay 40ms 10ms loss 1%)
# The same, for the stand-in: milliseconds of delay and jitter, loss probability.
NB_DELAY_MS=40
NB_JITTER_MS=10
NB_LOSS=0.01
# How the inter-DC link is impaired: netem, nfqueue (the stand-in) or none (NB_NETEM_OFF=1).
NB_LINK=netem
[[ "${NB_NETEM_OFF:-0}" != 1 ]] || NB_LINK=none
# The smallest round trip across the link that shows the delay is in place (2 x 30 ms).
NB_MIN_RTT_MS=60

NB_REPLICAS=(r1 r2 r3)
declare -A NB_IP=([rt1]=10.77.1.1 [rt2]=10.77.2.1 [pg]=10.77.1.10 [r1]=10.77.1.11
    [r2]=10.77.1.12 [r3]=10.77.2.13 [peer]=10.77.2.20 [ds]=10.77.2.30)
declare -A NB_DC=([pg]=1 [r1]=1 [r2]=1 [r3]=2 [peer]=2 [ds]=2)
# The replicas' Service address, as the downstream fedgw sees it.
NB_VIP=10.77.9.9
# Running fedgw replicas by host name.
declare -A NB_PID=()
# Other processes started (killed on exit too).
NB_EXTRA_PIDS=()
# Namespaces made (deleted on exit).
NB_NS=()
NB_PFX=""
NB_WORK=""
NB_FAILED=0
NB_PG_UP=0

nb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
nb_debug() { [[ "${NB_VERBOSE:-0}" != 1 ]] || nb_log "$@"; }
# A measurement: scenarios.sh repeats these lines under the scenario's result.
nb_measure() { printf 'measured: %s\n' "$*"; }
# A note: scenarios.sh repeats these lines too (e.g. a missing netem).
nb_note() { printf 'note: %s\n' "$*"; }
nb_now_ms() { echo $(($(date +%s%N) / 1000000)); }
# nb_secs MS: milliseconds as seconds with one decimal.
nb_secs() { printf '%d.%01ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }

nb_fail() {
    NB_FAILED=1
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# nb_expect_eq WHAT EXPECTED SEEN
nb_expect_eq() {
    [[ "$2" == "$3" ]] || nb_fail "$1: expected '$2', saw '$3'"
    nb_debug "ok: $1 = '${3:0:80}'"
}

# nb_wait SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.25 s until it succeeds;
# fail naming DESCRIPTION and COMMAND's last output after SECONDS.
nb_wait() {
    local seconds=$1 what=$2 out
    shift 2
    out=$(poll_until "$seconds" 0.25 "$@") ||
        nb_fail "$what: not seen within ${seconds}s; last check said: ${out:-nothing}"
    nb_debug "ok: $what"
}

# nb_why_not: why network namespaces cannot be made here (empty if they can).
nb_why_not() {
    local probe out
    if [[ "$(id -u)" != 0 ]]; then
        echo "not root (uid $(id -u)); run it with sudo"
        return
    fi
    command -v ip >/dev/null || { echo "no ip command (iproute2)"; return; }
    command -v tc >/dev/null || { echo "no tc command (iproute2)"; return; }
    probe="fgw-probe-$$-$RANDOM"
    if ! out=$(ip netns add "$probe" 2>&1); then
        echo "ip netns add failed: ${out//$'\n'/ }"
        return
    fi
    ip netns del "$probe" 2>/dev/null || true
}

# nb_need_tools: what the scenarios need besides namespaces; fails naming what is missing.
nb_need_tools() {
    local tool
    for tool in curl openssl setpriv; do
        command -v "$tool" >/dev/null || nb_fail "$tool is needed by the netns scenarios"
    done
    # The Service address's DNAT, and the link's delay and loss where netem is missing.
    command -v iptables >/dev/null || nb_fail "iptables is needed by the netns scenarios (Debian: apt-get install iptables)"
    for tool in initdb pg_ctl psql; do
        [[ -x "$NB_PG_BIN/$tool" ]] || nb_fail "$NB_PG_BIN/$tool is needed (Debian: apt-get install postgresql-15)"
    done
    id postgres >/dev/null 2>&1 || nb_fail "a postgres user is needed to run PostgreSQL (Debian's postgresql package makes it)"
    [[ -x "$NB_PYTHON" ]] || nb_fail "$NB_PYTHON is needed (tests/interop/run.sh --setup-only makes it)"
}

# nb_build: FEDGW, or <repo>/target/debug/fedgw, built with cargo if missing.
nb_build() {
    local target
    if [[ -n "${FEDGW:-}" ]]; then
        [[ -x "$FEDGW" ]] || nb_fail "FEDGW=$FEDGW is not an executable"
        return
    fi
    target="${CARGO_TARGET_DIR:-$nb_repo/target}"
    case "$target" in /*) ;; *) target="$nb_repo/$target" ;; esac
    FEDGW="$target/debug/fedgw"
    [[ -x "$FEDGW" ]] && return
    nb_log "building fedgw (cargo build --locked --bin fedgw)"
    (cd "$nb_repo" && cargo build -q --locked --bin fedgw) || nb_fail "cargo build failed"
    [[ -x "$FEDGW" ]] || nb_fail "no fedgw binary at $FEDGW after the build"
}

# The namespace of HOST (rt, dc1, dc2, pg, r1, r2, r3, peer).
nb_ns() { printf '%s%s' "$NB_PFX" "$1"; }

# nb_in HOST COMMAND...: run COMMAND in HOST's namespace.
nb_in() {
    local host=$1
    shift
    ip netns exec "$(nb_ns "$host")" "$@"
}

nb_netns_add() {
    local ns
    ns=$(nb_ns "$1")
    ip netns add "$ns" || nb_fail "ip netns add $ns failed"
    NB_NS+=("$ns")
    ip -n "$ns" link set lo up
}

# nb_init: a work directory, a unique name prefix and the EXIT trap.
nb_init() {
    NB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedgw-netns.XXXXXX")
    # PostgreSQL runs as the postgres user and must reach its directory.
    chmod 755 "$NB_WORK"
    NB_PFX="fgw-$(printf '%04x' $((RANDOM % 65536)))$$-"
    trap nb_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    nb_debug "work directory $NB_WORK, namespaces $NB_PFX*"
}

# nb_topology: the namespaces, bridges, veth pairs, addresses, routes and the
# inter-DC link's delay and loss (nb_impair), checked by a measured round trip.
nb_topology() {
    local dc host ns
    nb_netns_add rt
    ip netns exec "$(nb_ns rt)" sysctl -qw net.ipv4.ip_forward=1 || nb_fail "cannot enable forwarding in the router"
    for dc in 1 2; do
        nb_netns_add "dc$dc"
        ns=$(nb_ns "dc$dc")
        ip -n "$ns" link add br0 type bridge || nb_fail "cannot add a bridge in $ns"
        ip -n "$ns" link set br0 up
        ip link add "eth$dc" netns "$(nb_ns rt)" type veth peer name v-rt netns "$ns" ||
            nb_fail "cannot add the router's veth into $ns"
        ip -n "$ns" link set v-rt master br0 up
        ip -n "$(nb_ns rt)" addr add "${NB_IP[rt$dc]}/24" dev "eth$dc"
        ip -n "$(nb_ns rt)" link set "eth$dc" up
    done
    for host in pg r1 r2 r3 peer ds; do
        dc=${NB_DC[$host]}
        nb_netns_add "$host"
        ns=$(nb_ns "$host")
        ip link add eth0 netns "$ns" type veth peer name "v-$host" netns "$(nb_ns "dc$dc")" ||
            nb_fail "cannot add the veth of $host"
        ip -n "$(nb_ns "dc$dc")" link set "v-$host" master br0 up
        ip -n "$ns" addr add "${NB_IP[$host]}/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "${NB_IP[rt$dc]}"
    done
    nb_impair
    nb_debug "topology up: ${NB_NS[*]}; inter-DC link: $NB_LINK"
}

# nb_impair: delay and loss on both router links (every packet leaving the router,
# forwarded or its own, as netem on each link's egress does). With tc netem where the
# kernel has it; otherwise with the stand-in: iptables drops NB_LOSS of the packets
# and queues the rest to delay.py, which holds each one NB_DELAY_MS +/- NB_JITTER_MS.
# Then one round trip across the link is measured (a refused TCP connect from r3 to
# pg, the least of five) and must be at least NB_MIN_RTT_MS.
nb_impair() {
    local dc out rt
    rt=$(nb_ns rt)
    [[ "$NB_LINK" != none ]] || {
        nb_note "WARNING: NB_NETEM_OFF=1: the inter-DC link has NO added latency or loss"
        return 0
    }
    for dc in 1 2; do
        out=$(tc -n "$rt" qdisc add dev "eth$dc" root netem "${NB_NETEM[@]}" 2>&1) && continue
        # A kernel without sch_netem (e.g. a minimal VM kernel): the stand-in.
        NB_LINK=nfqueue
        nb_debug "tc netem is not available ($out); using delay.py on an NFQUEUE"
        break
    done
    if [[ "$NB_LINK" == nfqueue ]]; then
        tc -n "$rt" qdisc del dev eth1 root 2>/dev/null || true
        ip netns exec "$rt" "$NB_PYTHON" "$nb_here/delay.py" 0 "$NB_DELAY_MS" "$NB_JITTER_MS" \
            "$NB_WORK/delay.stats" 2>>"$NB_WORK/delay.log" &
        NB_EXTRA_PIDS+=("$!")
        NB_DELAY_PID=$!
        sleep 0.3
        kill -0 "$NB_DELAY_PID" 2>/dev/null || nb_fail "delay.py did not start: $(tail -n 3 "$NB_WORK/delay.log")"
        for dc in 1 2; do
            ip netns exec "$rt" iptables -t mangle -A POSTROUTING -o "eth$dc" \
                -m statistic --mode random --probability "$NB_LOSS" -j DROP ||
                nb_fail "iptables could not add the inter-DC link's loss"
            ip netns exec "$rt" iptables -t mangle -A POSTROUTING -o "eth$dc" -j NFQUEUE --queue-num 0 ||
                nb_fail "iptables could not queue the inter-DC link's packets to delay.py"
        done
    fi
    NB_RTT_MS=$(nb_in r3 "$NB_PYTHON" -c '
import socket, sys, time
best = None
for _ in range(5):
    t = time.monotonic()
    try:
        socket.create_connection((sys.argv[1], 1), timeout=5).close()
    except ConnectionRefusedError:
        pass
    except OSError as e:
        sys.exit(f"no answer across the link: {e}")
    ms = (time.monotonic() - t) * 1000
    best = ms if best is None else min(best, ms)
print(round(best))' "${NB_IP[pg]}") || nb_fail "cannot measure the inter-DC round trip: $NB_RTT_MS"
    ((NB_RTT_MS >= NB_MIN_RTT_MS)) ||
        nb_fail "the inter-DC round trip is ${NB_RTT_MS} ms, below ${NB_MIN_RTT_MS} ms: the link's delay ($NB_LINK) is not in place"
    if [[ "$NB_LINK" == nfqueue ]]; then
        nb_note "tc netem is not available ($out); the inter-DC link's delay is delay.py on an NFQUEUE (${NB_DELAY_MS} ms +/- ${NB_JITTER_MS} ms each way) and its ${NB_LOSS} loss iptables' statistic match: round trip ${NB_RTT_MS} ms"
    else
        nb_measure "inter-DC round trip ${NB_RTT_MS} ms (netem ${NB_NETEM[*]})"
    fi
}

# nb_cut / nb_heal: drop, in the router, every packet between dc2 and the database
# (both directions); dc2 still reaches dc1's replicas and dc1 reaches the peer.
nb_cut() {
    ip -n "$(nb_ns rt)" rule add from 10.77.2.0/24 to "${NB_IP[pg]}" blackhole pref 100 ||
        nb_fail "cannot cut dc2 off the database"
    ip -n "$(nb_ns rt)" rule add from "${NB_IP[pg]}" to 10.77.2.0/24 blackhole pref 101 ||
        nb_fail "cannot cut the database off dc2"
}
nb_heal() {
    ip -n "$(nb_ns rt)" rule del pref 100 || nb_fail "cannot heal the cut (dc2 to the database)"
    ip -n "$(nb_ns rt)" rule del pref 101 || nb_fail "cannot heal the cut (the database to dc2)"
}

# Stop everything this testbed started, delete its namespaces; keep the work
# directory (and show the logs' last lines) on failure or with NB_KEEP=1.
nb_cleanup() {
    local status=$? pid ns host delay_gone=0
    set +e
    if [[ -n "${NB_DELAY_PID:-}" ]] && ! kill -0 "$NB_DELAY_PID" 2>/dev/null; then delay_gone=1; fi
    for pid in "${NB_PID[@]}" "${NB_EXTRA_PIDS[@]}"; do
        [[ -z "$pid" ]] || kill -9 "$pid" 2>/dev/null
    done
    for pid in "${NB_PID[@]}" "${NB_EXTRA_PIDS[@]}"; do
        [[ -z "$pid" ]] || wait "$pid" 2>/dev/null
    done
    if ((NB_PG_UP)); then
        nb_pg_ctl stop -m immediate >/dev/null 2>&1
    fi
    # Anything still running in our namespaces was started by this run.
    for ns in "${NB_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
    done
    for ns in "${NB_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || printf 'could not delete netns %s\n' "$ns" >&2
    done
    if ((status != 0 && !NB_FAILED)); then
        printf 'FAIL: %s exited with status %s\n' "$0" "$status" >&2
    fi
    [[ -n "$NB_WORK" ]] || return "$status"
    if ((status != 0 || NB_FAILED)); then
        for host in "${NB_REPLICAS[@]}"; do
            if [[ -s "$NB_WORK/$host/fedgw.log" ]]; then
                printf -- '--- last lines of %s/fedgw.log (without unchanged fetches)\n' "$NB_WORK/$host" >&2
                grep -v 'outcome="unchanged"' "$NB_WORK/$host/fedgw.log" | tail -n 12 >&2
            fi
        done
        if [[ -s "$NB_WORK/ds/fedgw.log" ]]; then
            printf -- '--- last lines of %s/ds/fedgw.log (the downstream fedgw)\n' "$NB_WORK" >&2
            grep -v 'outcome="unchanged"' "$NB_WORK/ds/fedgw.log" | tail -n 12 >&2
        fi
        if ((delay_gone)); then
            printf -- '--- delay.py (the inter-DC delay) had exited: %s\n' "$(tail -n 3 "$NB_WORK/delay.log")" >&2
        fi
        if [[ -s "$NB_WORK/pg/postgres.log" ]]; then
            printf -- '--- last lines of %s/pg/postgres.log\n' "$NB_WORK" >&2
            tail -n 6 "$NB_WORK/pg/postgres.log" >&2
        fi
        printf 'work directory kept: %s\n' "$NB_WORK" >&2
    elif [[ "${NB_KEEP:-0}" == 1 ]]; then
        printf 'work directory kept: %s\n' "$NB_WORK"
    else
        rm -rf "$NB_WORK"
    fi
    return "$status"
}

# --- PostgreSQL, in the pg namespace, as the postgres user --------------------------

nb_as_postgres() { (cd "$NB_WORK/pg" && setpriv --reuid postgres --regid postgres --init-groups -- "$@"); }

# nb_pg_ctl ARGS...: pg_ctl on the testbed's cluster, in the pg namespace.
nb_pg_ctl() {
    (cd "$NB_WORK/pg" && ip netns exec "$(nb_ns pg)" setpriv --reuid postgres --regid postgres \
        --init-groups -- "$NB_PG_BIN/pg_ctl" -D "$NB_WORK/pg/data" -l "$NB_WORK/pg/postgres.log" "$@")
}

# nb_pg_up: initdb, start PostgreSQL on pg's address (scram-sha-256 over TCP), make
# the fedgw role (its password in $NB_WORK/db-password) and database.
nb_pg_up() {
    local pg="$NB_WORK/pg" password
    mkdir -p "$pg/sock"
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" >"$NB_WORK/db-password"
    chmod 600 "$NB_WORK/db-password"
    printf '%s\n' "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$pg/superuser-password"
    chown -R postgres:postgres "$pg"
    chmod 700 "$pg"
    nb_as_postgres "$NB_PG_BIN/initdb" -D "$pg/data" -U postgres -E UTF8 --no-sync \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pg/superuser-password" \
        >"$pg/initdb.log" 2>&1 || nb_fail "initdb failed: $(tail -n 5 "$pg/initdb.log")"
    cat >>"$pg/data/postgresql.conf" <<EOF
listen_addresses = '${NB_IP[pg]}'
port = 5432
unix_socket_directories = '$pg/sock'
max_connections = 100
EOF
    echo "host all all 10.77.0.0/16 scram-sha-256" >>"$pg/data/pg_hba.conf"
    nb_pg_ctl -w -t 30 start >/dev/null || nb_fail "PostgreSQL did not start: $(tail -n 5 "$pg/postgres.log")"
    NB_PG_UP=1
    nb_psql -c "CREATE ROLE fedgw LOGIN PASSWORD '$password'" >/dev/null ||
        nb_fail "cannot create the fedgw role"
    nb_psql -c "CREATE DATABASE fedgw OWNER fedgw" >/dev/null || nb_fail "cannot create the fedgw database"
    nb_debug "PostgreSQL up on ${NB_IP[pg]}:5432"
}

nb_psql() {
    nb_as_postgres "$NB_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$NB_WORK/pg/sock" -U postgres -d postgres "$@"
}

# --- PKI -----------------------------------------------------------------------------

# nb_ca CERT KEY CN [TD]: a self-signed P-256 CA; with TD, URI SAN spiffe://TD (openssl_ca).
nb_ca() { openssl_ca "$@" || nb_fail "openssl could not make the CA $1"; }

# nb_leaf CERT KEY CA_CERT CA_KEY SAN: a P-256 server certificate issued by CA.
nb_leaf() {
    local cert=$1 key=$2 ca=$3 ca_key=$4 san=$5 ext
    ext=$(mktemp)
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=$san" "authorityKeyIdentifier=keyid" >"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$key" -out "$cert.csr" -subj "/CN=netns testbed" 2>/dev/null ||
        nb_fail "openssl could not make a key and request for $cert"
    openssl x509 -req -in "$cert.csr" -CA "$ca" -CAkey "$ca_key" -CAcreateserial \
        -days 7 -extfile "$ext" -out "$cert" 2>/dev/null || nb_fail "openssl could not issue $cert"
    rm -f "$ext" "$cert.csr"
}

# nb_bundle_json OUT [--sequence N] [--refresh-hint S] CA.pem...: a SPIFFE bundle
# written by Python's cryptography (testbed/local's spiffe_bundle.py), atomically.
nb_bundle_json() {
    local out=$1
    shift
    "$NB_PYTHON" "$nb_repo/testbed/local/scenarios/spiffe_bundle.py" "$@" >"$out.new" ||
        nb_fail "spiffe_bundle.py $* failed"
    mv "$out.new" "$out"
}

# nb_pki: the replicas' Web CA and certificate (IP SANs of the three replicas and
# their Service address), the local domain's CA and bundle, the peer's Web PKI and
# its first bundle (sequence 1).
nb_pki() {
    local p="$NB_WORK/pki" s="$NB_WORK/peer"
    mkdir -p "$p" "$s/www"
    nb_ca "$p/web-ca.pem" "$p/web-ca.key" "replicas web CA"
    nb_leaf "$p/web.pem" "$p/web.key" "$p/web-ca.pem" "$p/web-ca.key" \
        "IP:${NB_IP[r1]},IP:${NB_IP[r2]},IP:${NB_IP[r3]},IP:$NB_VIP"
    nb_ca "$p/home-ca.pem" "$p/home-ca.key" "$NB_HOME_TD CA" "$NB_HOME_TD"
    nb_bundle_json "$p/home.json" --sequence 1 "$p/home-ca.pem"
    nb_ca "$s/web-ca.pem" "$s/web-ca.key" "peer web CA"
    nb_leaf "$s/server.pem" "$s/server.key" "$s/web-ca.pem" "$s/web-ca.key" "IP:${NB_IP[peer]}"
    nb_ca "$s/ca1.pem" "$s/ca1.key" "$NB_PEER_TD CA 1" "$NB_PEER_TD"
    nb_ca "$s/ca2.pem" "$s/ca2.key" "$NB_PEER_TD CA 2" "$NB_PEER_TD"
    nb_bundle_json "$s/www/bundle.json" --sequence 1 --refresh-hint 2 "$s/ca1.pem"
}

# --- The peer's bundle endpoint --------------------------------------------------------

nb_port_open() { nb_in rt bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

nb_peer_up() {
    local s="$NB_WORK/peer"
    ip netns exec "$(nb_ns peer)" "$NB_PYTHON" "$nb_here/https_server.py" "${NB_IP[peer]}" 8443 \
        "$s/server.pem" "$s/server.key" "$s/www" 2>>"$s/access.log" &
    NB_EXTRA_PIDS+=("$!")
    nb_wait 15 "the peer's HTTPS server on ${NB_IP[peer]}:8443" nb_port_open "${NB_IP[peer]}" 8443
}

# nb_peer_bundle SEQUENCE CA.pem...: the peer now serves this bundle.
nb_peer_bundle() {
    local seq=$1
    shift
    nb_bundle_json "$NB_WORK/peer/www/bundle.json" --sequence "$seq" --refresh-hint 2 "$@"
}

# --- fedgw replicas --------------------------------------------------------------------

# nb_config HOST: HOST's configuration (the same local bundle file, web certificate
# and storage for all; its own data_dir and listen address).
nb_config() {
    local h=$1 d="$NB_WORK/$1" p="$NB_WORK/pki"
    mkdir -p "$d"
    cat >"$d/fedgw.toml" <<EOF
data_dir = "$d/data"

[polling]
min_refresh = "1s"
default_refresh = "1s"
fetch_timeout = "2s"

[[local]]
trust_domain = "$NB_HOME_TD"
source = { file = "$p/home.json" }
refresh_hint = "5s"

[endpoint.https_web]
listen = "${NB_IP[$h]}:$NB_WEB_PORT"
cert = "$p/web.pem"
key = "$p/web.key"
public_names = ["${NB_IP[$h]}"]

[storage]
backend = "postgres"

[storage.postgres]
url = "postgres://fedgw@${NB_IP[pg]}:5432/fedgw"
password_file = "$NB_WORK/db-password"
tls = "disable"
lease_time = "${NB_LEASE}s"
# Across the inter-DC link (about 80 ms a round trip, 1% loss), a connection takes
# four round trips and the first call (schema check and trim) about twenty.
connect_timeout = "3s"
statement_timeout = "5s"
EOF
}

nb_sock() { printf '%s/%s/data/admin.sock' "$NB_WORK" "$1"; }

# nb_fedgw HOST ARGS...: a fedgw admin verb against replica HOST.
nb_fedgw() {
    local h=$1
    shift
    FEDGW_ADMIN="unix:$(nb_sock "$h")" "$FEDGW" "$@"
}

# nb_api HOST ARGS...: curl on HOST's admin socket (ARGS: curl options and a path).
nb_api() {
    local h=$1
    shift
    curl --noproxy "*" -s --max-time 10 --unix-socket "$(nb_sock "$h")" "$@"
}

# nb_start HOST: start replica HOST in its namespace, wait until its admin API answers
# and it listens for what the others commit (fedgw_store_listening 1).
nb_start() {
    local h=$1 n log="$NB_WORK/$1/fedgw.log"
    [[ -f "$NB_WORK/$h/fedgw.toml" ]] || nb_config "$h"
    printf -- '--- start %s\n' "$(date +%H:%M:%S.%N)" >>"$log"
    # Not through nb_in: $! must be fedgw itself (ip netns exec execs its command).
    ip netns exec "$(nb_ns "$h")" env NO_COLOR=1 "$FEDGW" serve --config "$NB_WORK/$h/fedgw.toml" \
        --log "${NB_LOG:-warn,fedgw=info}" >>"$log" 2>&1 &
    NB_PID[$h]=$!
    for ((n = 0; n < 300; n++)); do
        kill -0 "${NB_PID[$h]}" 2>/dev/null || nb_fail "replica $h exited at start: $(tail -n 5 "$log")"
        if [[ -S "$(nb_sock "$h")" ]] && [[ "$(nb_metric "$h" fedgw_store_listening 2>/dev/null)" == 1 ]]; then
            nb_debug "replica $h started (pid ${NB_PID[$h]}) and listens for the others' changes"
            return 0
        fi
        sleep 0.1
    done
    nb_fail "replica $h did not answer on its admin socket, listening for changes, within 30s (log: $log)"
}

# nb_stop HOST [SIGNAL]
nb_stop() {
    local h=$1 signal=${2:-TERM}
    [[ -n "${NB_PID[$h]:-}" ]] || nb_fail "replica $h is not running"
    kill "-$signal" "${NB_PID[$h]}" || nb_fail "cannot signal replica $h"
    wait "${NB_PID[$h]}" 2>/dev/null || true
    unset "NB_PID[$h]"
}

# nb_up [REPLICA...]: topology, PKI, PostgreSQL, the peer and the replicas given
# (default all three, started one after the other).
nb_up() {
    local h
    nb_build
    nb_need_tools
    nb_init
    nb_topology
    nb_pki
    nb_pg_up
    nb_peer_up
    for h in "${NB_REPLICAS[@]}"; do nb_config "$h"; done
    (($#)) || set -- "${NB_REPLICAS[@]}"
    for h in "$@"; do nb_start "$h"; done
}

# nb_federate HOST: create the relationship with the peer through HOST's admin API.
nb_federate() {
    local out
    out=$(nb_fedgw "$1" federation create --trust-domain "$NB_PEER_TD" \
        --bundle-endpoint-url "https://${NB_IP[peer]}:8443/bundle.json" \
        --bundle-endpoint-profile https_web --extra-ca-roots "$NB_WORK/peer/web-ca.pem" \
        --proxy off 2>&1) || nb_fail "federation create $NB_PEER_TD through $1 failed: $out"
}

# --- A downstream fedgw -----------------------------------------------------------------

# nb_downstream_up: a fourth fedgw in ds (dc2), not a replica: its own sled store, one
# relationship with the peer's domain through the replicas' Service address
# (https://NB_VIP:8443/relay/peer.test, the replicas' Web CA), and its default sequence
# policy (a lower spiffe_sequence is refused and counted). The Service address is
# DNAT in ds's own namespace, every new connection to the next replica in turn (r1,
# r2, r3; fedgw opens one connection per fetch), so its fetches alternate.
nb_downstream_up() {
    local d="$NB_WORK/ds" n
    mkdir -p "$d"
    # The first rule takes every 3rd new connection, the second every 2nd of the rest.
    nb_service_rule -m statistic --mode nth --every 3 --packet 0 -j DNAT --to-destination "${NB_IP[r1]}:$NB_WEB_PORT"
    nb_service_rule -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination "${NB_IP[r2]}:$NB_WEB_PORT"
    nb_service_rule -j DNAT --to-destination "${NB_IP[r3]}:$NB_WEB_PORT"
    cat >"$d/fedgw.toml" <<END
data_dir = "$d/data"

[polling]
min_refresh = "1s"
default_refresh = "1s"
fetch_timeout = "2s"

[[federation]]
trust_domain = "$NB_PEER_TD"
url = "https://$NB_VIP:$NB_WEB_PORT/relay/$NB_PEER_TD"
profile = "https_web"
extra_ca_roots = "$NB_WORK/pki/web-ca.pem"
proxy = "off"
END
    ip netns exec "$(nb_ns ds)" env NO_COLOR=1 "$FEDGW" serve --config "$d/fedgw.toml" \
        --log "${NB_LOG:-warn,fedgw=info}" >>"$d/fedgw.log" 2>&1 &
    NB_EXTRA_PIDS+=("$!")
    NB_DS_PID=$!
    for ((n = 0; n < 300; n++)); do
        kill -0 "$NB_DS_PID" 2>/dev/null || nb_fail "the downstream fedgw exited at start: $(tail -n 5 "$d/fedgw.log")"
        nb_ds_api -f -o /dev/null http://x/v1/status && return 0
        sleep 0.1
    done
    nb_fail "the downstream fedgw did not answer on its admin socket within 30s"
}

# nb_service_rule ARGS...: one rule of the Service address, in ds's nat OUTPUT chain.
nb_service_rule() {
    nb_in ds iptables -t nat -A OUTPUT -d "$NB_VIP" -p tcp --dport "$NB_WEB_PORT" "$@" ||
        nb_fail "iptables could not make the replicas' Service address in ds"
}

# nb_ds_api ARGS...: curl on the downstream fedgw's admin socket.
nb_ds_api() { curl --noproxy "*" -s --max-time 10 --unix-socket "$NB_WORK/ds/data/admin.sock" "$@"; }

# nb_ds_seq: the spiffe_sequence of the peer's bundle as the downstream fedgw holds it.
nb_ds_seq() { nb_ds_api -f "http://x/v1/bundles/$NB_PEER_TD" | nb_seq; }

# nb_ds_metric NAME LABEL: the sum of NAME's samples on the downstream fedgw whose
# labels contain LABEL (0 when there are none).
nb_ds_metric() {
    nb_ds_api -f http://x/metrics |
        awk -v m="$1" -v l="$2" 'index($1, m "{") == 1 && index($1, l) { s += $2 } END { print s + 0 }'
}

# nb_ds_spread: how many connections ds's Service address sent to r1, r2 and r3
# ("<r1> <r2> <r3>", the DNAT rules' packet counters: nat sees one packet per connection).
nb_ds_spread() {
    nb_in ds iptables -t nat -L OUTPUT -n -v -x | awk '/DNAT/ { printf "%s%s", sep, $1; sep = " " } END { print "" }'
}

# --- Reading the replicas --------------------------------------------------------------

# nb_relay HOST TD: the body of HOST's https_web /relay/TD, fetched from the router
# namespace with curl trusting the replicas' Web CA (fails unless 200).
nb_relay() {
    nb_in rt curl --noproxy "*" -sf --max-time 5 --cacert "$NB_WORK/pki/web-ca.pem" \
        "https://${NB_IP[$1]}:$NB_WEB_PORT/relay/$2"
}

# nb_seq: the spiffe_sequence of the bundle on standard input ("none" without one).
nb_seq() {
    local s
    s=$(grep -o '"spiffe_sequence" *: *[0-9]*' | grep -o '[0-9]*$' || true)
    echo "${s:-none}"
}

# nb_json EXPR: evaluate a Python expression over the JSON document on standard input
# (bound to d) and print it.
nb_json() {
    "$NB_PYTHON" -c 'import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True))' "$1"
}

# nb_status HOST: GET /v1/status of HOST.
nb_status() { nb_api "$1" -f http://x/v1/status; }

nb_store_state() { nb_status "$1" | nb_json 'd["store"]["state"]'; }
nb_revision() { nb_status "$1" | nb_json 'd["revision"]'; }

# nb_metric HOST NAME: the value of metric NAME (first sample) on HOST.
nb_metric() {
    nb_api "$1" -f http://x/metrics | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { print $2; exit }'
}

# nb_holder: the running replica whose fedgw_leases_held is 1 (fails unless exactly one).
nb_holder() {
    local h v holders=()
    for h in "${!NB_PID[@]}"; do
        v=$(nb_metric "$h" fedgw_leases_held)
        [[ "$v" != 1 ]] || holders+=("$h")
    done
    ((${#holders[@]} == 1)) || {
        echo "lease holders: ${holders[*]:-none}"
        return 1
    }
    echo "${holders[0]}"
}

# nb_serving_same TD [EXPECTED]: every running replica serves the same non-empty
# /relay/TD (EXPECTED if given); prints what differs otherwise.
nb_serving_same() {
    local td=$1 want=${2:-} h body first=""
    for h in "${NB_REPLICAS[@]}"; do
        [[ -n "${NB_PID[$h]:-}" ]] || continue
        body=$(nb_relay "$h" "$td") || {
            echo "$h: no 200 for /relay/$td"
            return 1
        }
        [[ -n "$first" ]] || first=$body
        [[ "$body" == "$first" ]] || {
            echo "$h serves other bytes for /relay/$td (sequence $(nb_seq <<<"$body") vs $(nb_seq <<<"$first"))"
            return 1
        }
        [[ -z "$want" || "$body" == "$want" ]] || {
            echo "$h serves sequence $(nb_seq <<<"$body") for $td, not the expected bytes (sequence $(nb_seq <<<"$want"))"
            return 1
        }
    done
}

# nb_bundles_digest HOST: "<global revision> <td>=<digest>..." of HOST's /v1/bundles.
nb_bundles_digest() {
    nb_api "$1" -f http://x/v1/bundles |
        nb_json '" ".join([str(d["revision"])] + sorted(b["trust_domain"] + "=" + b["digest"] for b in d["bundles"]))'
}

# nb_converged: every running replica has the same revision and bundle digests, and
# its store ok.
nb_converged() {
    local h first="" mine state
    for h in "${NB_REPLICAS[@]}"; do
        [[ -n "${NB_PID[$h]:-}" ]] || continue
        state=$(nb_store_state "$h") || state="no answer"
        [[ "$state" == ok ]] || {
            echo "$h: store $state"
            return 1
        }
        mine=$(nb_bundles_digest "$h") || {
            echo "$h: no /v1/bundles"
            return 1
        }
        [[ -n "$first" ]] || first=$mine
        [[ "$mine" == "$first" ]] || {
            echo "$h is at revision ${mine%% *}, another at ${first%% *} (or other digests)"
            return 1
        }
    done
}

# nb_reader_start FILE: a downstream client alternating between r1, r2 and r3 reading
# /relay/peer.test, one line per read: "<ms> <replica> <spiffe_sequence|err>".
nb_reader_start() {
    local file=$1
    (
        set +e
        while :; do
            for h in "${NB_REPLICAS[@]}"; do
                if body=$(nb_relay "$h" "$NB_PEER_TD" 2>/dev/null); then
                    echo "$(nb_now_ms) $h $(nb_seq <<<"$body")"
                else
                    echo "$(nb_now_ms) $h err"
                fi
            done
            sleep 0.1
        done
    ) >>"$file" &
    NB_EXTRA_PIDS+=("$!")
    NB_READER=$!
}

nb_reader_stop() { kill "$NB_READER" 2>/dev/null || true; wait "$NB_READER" 2>/dev/null || true; }

# nb_regressions FILE [per-replica]: the reads whose sequence is lower than one read
# earlier (by any replica, or by the same replica); prints "<count> <reads> <first>".
nb_regressions() {
    awk -v per="${2:-}" '
        $3 == "err" || $3 == "none" { next }
        { key = (per == "" ? "all" : $2); reads++ }
        (key in max) && $3 + 0 < max[key] {
            n++
            if (first == "") first = sprintf("%s read %s after %s had been read", $2, $3, max[key])
        }
        !(key in max) || $3 + 0 > max[key] { max[key] = $3 + 0 }
        END { printf "%d %d %s\n", n, reads, first }' "$1"
}

# nb_put HOST TD PEM: PUT the PEM CA as TD's bundle through HOST's admin API; prints
# the HTTP status, a space and the answer's body.
nb_put() {
    local out code
    out=$(mktemp)
    code=$(nb_api "$1" -o "$out" -w '%{http_code}' -X PUT -H 'Content-Type: application/x-pem-file' \
        --data-binary "@$3" "http://x/v1/bundles/$2") || code=${code:-000}
    printf '%s %s\n' "$code" "$(tr -d '\n' <"$out")"
    rm -f "$out"
}

# nb_has_bundle HOST TD: HOST serves a bundle for TD through its admin API.
nb_has_bundle() { nb_api "$1" -f -o /dev/null "http://x/v1/bundles/$2"; }

# nb_revisions_start FILE: record every running replica's global revision (GET
# /v1/status) about every 0.3 s, one line per read: "<ms> <replica> <revision>".
nb_revisions_start() {
    local file=$1
    (
        set +e
        while :; do
            for h in "${NB_REPLICAS[@]}"; do
                if r=$(nb_revision "$h" 2>/dev/null); then echo "$(nb_now_ms) $h $r"; fi
            done
            sleep 0.3
        done
    ) >>"$file" &
    NB_EXTRA_PIDS+=("$!")
    NB_REVISIONS=$!
}

nb_revisions_stop() { kill "$NB_REVISIONS" 2>/dev/null || true; wait "$NB_REVISIONS" 2>/dev/null || true; }

# nb_stuck_conns HOST: how many of HOST's TCP connections to PostgreSQL are in
# retransmission backoff (unacknowledged data, e.g. sent into the cut).
nb_stuck_conns() {
    nb_in "$1" ss -tin dst "${NB_IP[pg]}" 2>/dev/null | grep -c 'backoff:' || true
}

# nb_heal_converged WHAT DESCRIPTION: heal the cut and wait until the three replicas
# converged (NETNS_CONVERGE_SECONDS, default 20; DESCRIPTION names the wait), then
# note, as nb_heal_note does, when WHAT took long. Sets NB_HEALED_AT (nb_now_ms at the
# heal) and NB_CONVERGE_MS (from the heal to convergence).
nb_heal_converged() {
    local stuck_pid
    nb_heal
    NB_HEALED_AT=$(nb_now_ms)
    (sleep 2; nb_stuck_conns r3 >"$NB_WORK/stuck") &
    stuck_pid=$!
    nb_wait "${NETNS_CONVERGE_SECONDS:-20}" "$2" nb_converged
    NB_CONVERGE_MS=$(($(nb_now_ms) - NB_HEALED_AT))
    wait "$stuck_pid" || true
    nb_heal_note "$1" "$NB_CONVERGE_MS" "$(cat "$NB_WORK/stuck")"
}

# nb_heal_note WHAT MS STUCK: a loud note when a replica took longer after the heal
# than operations.md's "catches up within 5 s" (with 5 s of margin).
nb_heal_note() {
    (($2 <= 10000)) && return 0
    nb_note "WARNING: $1 took $(nb_secs "$2") after the heal to converge (operations.md: a replica catches up within 5 s once the database answers); 2 s after the heal r3 had $3 connection(s) to PostgreSQL in TCP retransmission backoff"
}

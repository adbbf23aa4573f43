# shellcheck shell=bash
# Shared by testbed/spire/run.sh and its scenarios: per trust domain a real SPIRE
# server (sqlite datastore, join_token node attestation, disk key manager) and agent
# (unix workload attestor), a fedgw registered as a workload of its own SPIRE (local
# bundle and endpoint SVID from its agent), and go-spiffe workloads. Each SPIRE server
# federates only with its own fedgw (/relay/<td>, https_spiffe, fedgw's own SPIFFE
# ID: same trust domain, so no bootstrap); the fedgws federate with each other.
#
# Environment:
#   FEDGW            a fedgw binary to use instead of building target/debug/fedgw
#   SP_KEEP=1        keep the work directory (configs, logs, data) after the run
#   SP_VERBOSE=1     print every step
#
# Needs bash, coreutils, python3 (free ports), openssl, Go (scripts/peers.sh builds
# SPIRE and the go-spiffe peers, cached) and the Rust toolchain.

sp_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

sp_names=(west east north south)

# Per domain i: trust domain, directory, SPIRE server port, fedgw https_spiffe port,
# fedgw https_web port; PIDs of the SPIRE server, agent and fedgw.
SP_TD=()
SP_DIR=()
SP_SERVER_PORT=()
SP_SPIFFE_PORT=()
SP_WEB_PORT=()
# Every process started is also listed in $SP_WORK/pids (one per line), and the
# current one of each role in $SP_WORK/pid.<role>.<i>, so that scenarios run in
# subshells can stop and restart them and the cleanup still finds them all.
# How many of the domains (the first ones) are federated; the rest have SPIRE only.
SP_FEDERATED=""
SP_ADDR=""
SP_WORK=""
SP_FAILED=0
SPIRE_BIN=""
PEER_BIN=""

sp_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
sp_debug() { [[ "${SP_VERBOSE:-0}" != 1 ]] || sp_log "$@"; }

sp_fail() {
    SP_FAILED=1
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# sp_wait SECONDS WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds.
sp_wait() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || sp_fail "$what: not within ${seconds}s"
        sleep 0.2
    done
    sp_debug "ok: $what"
}

# sp_track PID [ROLE I]: remember PID for the cleanup and, with ROLE, as domain i's
# current ROLE (server, agent, fedgw).
sp_track() {
    echo "$1" >>"$SP_WORK/pids"
    [[ $# -lt 3 ]] || echo "$1" >"$SP_WORK/pid.$2.$3"
}

# sp_alive PID: the process runs (a zombie does not count).
sp_alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$stat" && "$stat" != Z* ]]
}

# sp_pid ROLE I: the PID of domain i's ROLE ("" if none was started).
sp_pid() { cat "$SP_WORK/pid.$1.$2" 2>/dev/null || true; }

# sp_stop ROLE I [SIGNAL]: stop domain i's ROLE (SIGTERM by default) and wait until it
# has exited.
sp_stop() {
    local role=$1 i=$2 signal=${3:-TERM} pid n
    pid=$(sp_pid "$role" "$i")
    [[ -n "$pid" ]] || sp_fail "no $role of ${SP_TD[i]} was started"
    kill "-$signal" "$pid" 2>/dev/null || true
    for ((n = 0; n < 300; n++)); do
        # Gone, or a zombie of the shell that started it (reaped at its end).
        if ! sp_alive "$pid"; then
            rm -f "$SP_WORK/pid.$role.$i"
            return 0
        fi
        sleep 0.1
    done
    sp_fail "the $role of ${SP_TD[i]} (pid $pid) did not exit within 30 s of SIG$signal"
}

# sp_free_port: a free port on 127.0.0.1 for a listener started later: below the
# kernel's ephemeral range (so that no outgoing connection takes it between this
# choice and the bind, minutes later on a busy machine), never one this run has
# chosen before (kept in $SP_WORK/ports).
sp_free_port() {
    python3 - "$SP_WORK/ports" <<'PY'
import random, socket, sys
chosen = set()
try:
    chosen = set(open(sys.argv[1]).read().split())
except FileNotFoundError:
    pass
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", random.randrange(10000, low) if low > 11000 else 0))
        except OSError:
            continue
        port = s.getsockname()[1]
    if str(port) not in chosen:
        open(sys.argv[1], "a").write(f"{port}\n")
        print(port)
        break
else:
    sys.exit("no free port")
PY
}

# sp_build: fedgw (cargo) and the real peers (scripts/peers.sh, cached).
sp_build() {
    local line
    while IFS= read -r line; do
        case "$line" in
        spire=*) SPIRE_BIN=${line#spire=} ;;
        go=*) PEER_BIN=${line#go=} ;;
        esac
    done < <("$sp_repo/scripts/peers.sh") || sp_fail "scripts/peers.sh failed (see above)"
    [[ -x "$SPIRE_BIN/spire-server" && -x "$SPIRE_BIN/spire-agent" ]] ||
        sp_fail "scripts/peers.sh built no spire-server and spire-agent"
    if [[ -n "${FEDGW:-}" ]]; then
        [[ -x "$FEDGW" ]] || sp_fail "FEDGW=$FEDGW is not an executable"
        return
    fi
    sp_log "building fedgw (cargo build --locked --bin fedgw)"
    (cd "$sp_repo" && cargo build -q --locked --bin fedgw) || sp_fail "cargo build failed"
    local target="${CARGO_TARGET_DIR:-$sp_repo/target}"
    case "$target" in /*) ;; *) target="$sp_repo/$target" ;; esac
    FEDGW="$target/debug/fedgw"
}

# sp_init N: a fresh work directory and N domains (nothing started).
sp_init() {
    local n=$1 i
    SP_WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedgw-spire.XXXXXX")
    # SPIRE's sockets must fit in sun_path: keep the directory names short.
    trap sp_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for ((i = 0; i < n; i++)); do
        SP_TD[i]="${sp_names[i]}.spire.test"
        SP_DIR[i]="$SP_WORK/${sp_names[i]}"
        mkdir -p "${SP_DIR[i]}/server" "${SP_DIR[i]}/agent" "${SP_DIR[i]}/fedgw"
        SP_SERVER_PORT[i]=$(sp_free_port)
        SP_SPIFFE_PORT[i]=$(sp_free_port)
        SP_WEB_PORT[i]=$(sp_free_port)
    done
}

sp_cleanup() {
    local status=$? pid
    # Clean up fully even if a step here fails, and keep the run's exit status.
    set +e
    if [[ -n "$SP_WORK" && -f "$SP_WORK/pids" ]]; then
        while read -r pid; do
            kill "$pid" 2>/dev/null
        done < <(tac "$SP_WORK/pids")
    fi
    wait 2>/dev/null
    ((status == 0)) || SP_FAILED=1
    if [[ "${SP_KEEP:-0}" == 1 || "$SP_FAILED" == 1 ]]; then
        [[ -z "$SP_WORK" ]] || echo "work directory kept: $SP_WORK" >&2
        if [[ "$SP_FAILED" == 1 && -n "$SP_WORK" ]]; then
            local log
            for log in "$SP_WORK"/*/*/*.log; do
                [[ -f "$log" ]] || continue
                echo "--- last lines of $log" >&2
                tail -n 15 "$log" >&2
            done
        fi
    else
        [[ -z "$SP_WORK" ]] || rm -rf "$SP_WORK"
    fi
    return "$status"
}

# Paths of domain i.
sp_server_sock() { echo "${SP_DIR[$1]}/server/api.sock"; }
sp_agent_sock() { echo "${SP_DIR[$1]}/agent/api.sock"; }
sp_admin() { echo "unix:${SP_DIR[$1]}/fedgw/admin.sock"; }

# sp_spire_server I ARGS...: spire-server CLI against domain i's server.
sp_spire_server() {
    local i=$1
    shift
    local sub=$1
    shift
    if [[ "$sub" == localauthority ]]; then
        # `localauthority x509 prepare`: two words before the flags.
        local kind=$1 verb=$2
        shift 2
        "$SPIRE_BIN/spire-server" localauthority "$kind" "$verb" -socketPath "$(sp_server_sock "$i")" "$@"
    else
        local verb=$1
        shift
        "$SPIRE_BIN/spire-server" "$sub" "$verb" -socketPath "$(sp_server_sock "$i")" "$@"
    fi
}

# sp_write_server_conf I: domain i's server.conf; its federates_with stanzas point at
# its own fedgw's /relay/<td> for every other domain.
sp_write_server_conf() {
    local i=$1 j n=${SP_FEDERATED:-${#SP_TD[@]}} dir=${SP_DIR[$1]}/server
    # A domain past the federated ones federates with nobody.
    ((i < n)) || n=0
    {
        cat <<EOF
server {
    bind_address = "127.0.0.1"
    bind_port = "${SP_SERVER_PORT[i]}"
    socket_path = "$dir/api.sock"
    trust_domain = "${SP_TD[i]}"
    data_dir = "$dir/data"
    log_level = "INFO"
    log_file = "$dir/server.log"
    ca_ttl = "${SP_CA_TTL:-24h}"
    default_x509_svid_ttl = "${SP_SVID_TTL:-1h}"
    default_jwt_svid_ttl = "5m"
    federation {
EOF
        for ((j = 0; j < n; j++)); do
            ((j != i)) || continue
            cat <<EOF
        federates_with "${SP_TD[j]}" {
            bundle_endpoint_url = "https://127.0.0.1:${SP_SPIFFE_PORT[i]}/relay/${SP_TD[j]}"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://${SP_TD[i]}/fedgw"
            }
        }
EOF
        done
        cat <<EOF
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$dir/data/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "$dir/data/keys.json"
        }
    }
}
EOF
    } >"$dir/server.conf"
}

sp_write_agent_conf() {
    local i=$1 dir=${SP_DIR[$1]}/agent
    cat >"$dir/agent.conf" <<EOF
agent {
    data_dir = "$dir/data"
    log_level = "INFO"
    log_file = "$dir/agent.log"
    server_address = "127.0.0.1"
    server_port = "${SP_SERVER_PORT[i]}"
    socket_path = "$dir/api.sock"
    trust_bundle_path = "$dir/bootstrap.pem"
    trust_domain = "${SP_TD[i]}"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = true
        }
    }
}
EOF
}

# sp_start_server I: start domain i's SPIRE server and wait until it is healthy.
sp_start_server() {
    local i=$1 dir=${SP_DIR[$1]}/server
    [[ -f "$dir/server.conf" ]] || sp_write_server_conf "$i"
    "$SPIRE_BIN/spire-server" run -config "$dir/server.conf" >>"$dir/stdout.log" 2>&1 &
    sp_track "$!" server "$i"
    sp_wait 60 "SPIRE server of ${SP_TD[i]} healthy" \
        "$SPIRE_BIN/spire-server" healthcheck -socketPath "$dir/api.sock"
}

# sp_start_agent I: attest domain i's agent with a fresh join token (its SPIFFE ID
# spiffe://<td>/agent) and wait until it is healthy.
sp_start_agent() {
    local i=$1 dir=${SP_DIR[$1]}/agent token
    [[ -f "$dir/agent.conf" ]] || sp_write_agent_conf "$i"
    sp_spire_server "$i" bundle show >"$dir/bootstrap.pem" || sp_fail "bundle show of ${SP_TD[i]}"
    token=$(sp_spire_server "$i" token generate -spiffeID "spiffe://${SP_TD[i]}/agent" | awk '/Token:/ {print $2}')
    [[ -n "$token" ]] || sp_fail "no join token from the SPIRE server of ${SP_TD[i]}"
    rm -rf "$dir/data"
    "$SPIRE_BIN/spire-agent" run -config "$dir/agent.conf" -joinToken "$token" >>"$dir/stdout.log" 2>&1 &
    sp_track "$!" agent "$i"
    sp_wait 60 "SPIRE agent of ${SP_TD[i]} healthy" \
        "$SPIRE_BIN/spire-agent" healthcheck -socketPath "$dir/api.sock"
}

# sp_entry I PATH NAME [FEDERATES_WITH...]: a registration entry under domain i's agent
# for the program at PATH (unix:path selector), SPIFFE ID spiffe://<td>/NAME.
sp_entry() {
    local i=$1 path=$2 name=$3 td args=()
    shift 3
    for td in "$@"; do args+=(-federatesWith "spiffe://$td"); done
    sp_spire_server "$i" entry create -parentID "spiffe://${SP_TD[i]}/agent" \
        -spiffeID "spiffe://${SP_TD[i]}/$name" -selector "unix:path:$path" \
        -x509SVIDTTL "${SP_SVID_TTL_SECONDS:-3600}" "${args[@]}" >/dev/null ||
        sp_fail "entry $name in ${SP_TD[i]}"
}

# --- fedgw ---------------------------------------------------------------------------

# sp_web_pki: one Web PKI CA for the testbed and, per domain, a server certificate
# for 127.0.0.1 and localhost (the https_web listeners).
sp_web_pki() {
    local i pki=$SP_WORK/web-pki
    mkdir -p "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=fedgw spire testbed web CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign >/dev/null 2>&1 ||
        sp_fail "openssl: the testbed's web CA"
    for ((i = 0; i < ${#SP_TD[@]}; i++)); do
        local dir=${SP_DIR[i]}/fedgw
        if ! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=${sp_names[i]} fedgw" -keyout "$dir/web.key" -out "$dir/web.csr" >/dev/null 2>&1; then
            sp_fail "openssl: the web key of ${SP_TD[i]}"
        fi
        openssl x509 -req -in "$dir/web.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
            -days 2 -out "$dir/web.pem" \
            -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') >/dev/null 2>&1 ||
            sp_fail "openssl: the web certificate of ${SP_TD[i]}"
    done
}

# sp_write_fedgw_conf I: domain i's fedgw configuration: its local bundle and its
# https_spiffe endpoint's X509-SVID from its own SPIRE agent.
sp_write_fedgw_conf() {
    local i=$1 dir=${SP_DIR[$1]}/fedgw
    cat >"$dir/fedgw.toml" <<EOF
data_dir = "$dir/data"

[admin]
listen = "unix:$dir/admin.sock"

[polling]
min_refresh = "1s"
default_refresh = "2s"
fetch_timeout = "5s"

[[local]]
trust_domain = "${SP_TD[i]}"
source = { workload_api_socket = "unix://$(sp_agent_sock "$i")" }
refresh_hint = "${SP_HINT:-2s}"

[endpoint.https_spiffe]
listen = "127.0.0.1:${SP_SPIFFE_PORT[i]}"
workload_api_socket = "unix://$(sp_agent_sock "$i")"
endpoint_spiffe_id = "spiffe://${SP_TD[i]}/fedgw"

[endpoint.https_web]
listen = "127.0.0.1:${SP_WEB_PORT[i]}"
cert = "$dir/web.pem"
key = "$dir/web.key"
public_names = ["127.0.0.1"]

[sinks.sds]
listen = "unix:$dir/sds.sock"
EOF
}

sp_fedgw() {
    local i=$1
    shift
    NO_COLOR=1 "$FEDGW" "$@" --admin "$(sp_admin "$i")"
}

# sp_start_fedgw I: start domain i's fedgw and wait until its admin API answers.
sp_start_fedgw() {
    local i=$1 dir=${SP_DIR[$1]}/fedgw
    [[ -f "$dir/fedgw.toml" ]] || sp_write_fedgw_conf "$i"
    NO_COLOR=1 "$FEDGW" serve --config "$dir/fedgw.toml" --log "${SP_LOG:-warn,fedgw=info}" >>"$dir/fedgw.log" 2>&1 &
    sp_track "$!" fedgw "$i"
    sp_wait 30 "fedgw of ${SP_TD[i]} answering" sp_fedgw "$i" status
}

# sp_federate I J: fedgw i polls fedgw j; https_spiffe when i + j is even (bootstrapped
# with SPIRE j's bundle), https_web otherwise (the testbed's web CA).
sp_federate() {
    local i=$1 j=$2 dir=${SP_DIR[$1]}/fedgw
    if (((i + j) % 2 == 0)); then
        sp_spire_server "$j" bundle show -format spiffe >"$dir/bootstrap-${sp_names[j]}.json" ||
            sp_fail "bundle show of ${SP_TD[j]}"
        sp_fedgw "$i" federation create "${SP_TD[j]}" \
            --bundle-endpoint-url "https://127.0.0.1:${SP_SPIFFE_PORT[j]}/" --bundle-endpoint-profile https_spiffe \
            --endpoint-spiffe-id "spiffe://${SP_TD[j]}/fedgw" \
            --trust-domain-bundle-path "$dir/bootstrap-${sp_names[j]}.json" >/dev/null ||
            sp_fail "federation create ${SP_TD[j]} on ${SP_TD[i]}"
    else
        sp_fedgw "$i" federation create "${SP_TD[j]}" \
            --bundle-endpoint-url "https://127.0.0.1:${SP_WEB_PORT[j]}/" --bundle-endpoint-profile https_web \
            --extra-ca-roots "$SP_WORK/web-pki/ca.pem" >/dev/null ||
            sp_fail "federation create ${SP_TD[j]} on ${SP_TD[i]}"
    fi
}

# sp_spire_has I TD: SPIRE server i holds a federated bundle of TD.
sp_spire_has() {
    sp_spire_server "$1" bundle list -id "spiffe://$2" >/dev/null 2>&1
}

# --- the whole testbed ---------------------------------------------------------------

# sp_up N U: N federated domains (SPIRE, fedgw, federation in a full mesh) and U more
# with SPIRE only (not federated); registration entries for every fedgw and workload.
sp_up() {
    local n=$1 u=$2 i j started
    SP_FEDERATED=$n
    sp_init $((n + u))
    sp_web_pki
    sp_log "starting SPIRE: $((n + u)) servers and agents in $SP_WORK"
    for ((i = 0; i < n + u; i++)); do
        sp_start_server "$i"
        sp_start_agent "$i"
    done
    for ((i = 0; i < n; i++)); do
        sp_entry "$i" "$FEDGW" fedgw
    done
    sp_log "starting $n fedgws (local bundle and endpoint SVID from their agents)"
    for ((i = 0; i < n; i++)); do
        sp_start_fedgw "$i"
    done
    started=$SECONDS
    sp_log "federating the fedgws in a full mesh"
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            ((i == j)) || sp_federate "$i" "$j"
        done
    done
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            ((i == j)) || sp_wait 60 "SPIRE server of ${SP_TD[i]} holds the bundle of ${SP_TD[j]}" \
                sp_spire_has "$i" "${SP_TD[j]}"
        done
    done
    sp_log "every SPIRE server holds every other domain's bundle ($((SECONDS - started))s after federating)"
    for ((i = 0; i < n + u; i++)); do
        local others=()
        for ((j = 0; j < n; j++)); do
            if ((i < n && j != i)); then others+=("${SP_TD[j]}"); fi
        done
        sp_entry "$i" "$PEER_BIN/fedgw-peer" workload "${others[@]}"
    done
}

# --- workloads -----------------------------------------------------------------------

# sp_mtls_server I CLIENT_ID: a go-spiffe mTLS server with domain i's workload SVID,
# accepting only CLIENT_ID; sets SP_ADDR to its address. (Not in a command
# substitution, so that it returns at once.)
sp_mtls_server() {
    local i=$1 client=$2 out addr n
    out=$(mktemp "$SP_WORK/mtls-server.XXXXXX")
    "$PEER_BIN/fedgw-peer" mtls-server --socket "unix://$(sp_agent_sock "$i")" \
        --client-id "$client" >"$out" 2>>"$SP_WORK/workloads.log" &
    sp_track "$!"
    for ((n = 0; n < 300; n++)); do
        addr=$(awk '/^listening / { print $2; exit }' "$out")
        if [[ -n "$addr" ]]; then
            SP_ADDR=$addr
            return
        fi
        sleep 0.1
    done
    sp_fail "the mtls-server of ${SP_TD[i]} (accepting $client) did not start"
}

# sp_mtls_client J ADDR SERVER_ID: a go-spiffe mTLS client with domain j's workload SVID;
# prints the server's answer, or fails with go-spiffe's error on stderr.
sp_mtls_client() {
    "$PEER_BIN/fedgw-peer" mtls-client --socket "unix://$(sp_agent_sock "$1")" \
        --url "https://$2/" --server-id "$3" --timeout "${4:-10s}"
}

# sp_expect_mtls I J: a workload of domain j completes mTLS with one of domain i, each
# authorising the other's exact SPIFFE ID (retried for 60 s: SPIRE's agents pick up new
# entries and federated bundles on their next sync).
sp_expect_mtls() {
    local i=$1 j=$2 addr answer want deadline=$((SECONDS + 60))
    local server="spiffe://${SP_TD[i]}/workload" client="spiffe://${SP_TD[j]}/workload"
    sp_mtls_server "$i" "$client"
    addr=$SP_ADDR
    want="hello $client from $server"
    until answer=$(sp_mtls_client "$j" "$addr" "$server" 2>>"$SP_WORK/workloads.log") && [[ "$answer" == "$want" ]]; do
        ((SECONDS < deadline)) || sp_fail "mTLS from $client to $server: expected '$want', saw '${answer:-nothing}' (see $SP_WORK/workloads.log)"
        sleep 1
    done
    sp_debug "ok: mTLS $client -> $server"
}

# sp_expect_refused I J: mTLS between workloads of domains i and j fails at the
# handshake, in both directions.
sp_expect_refused() {
    local i=$1 j=$2 addr err
    local server="spiffe://${SP_TD[i]}/workload" client="spiffe://${SP_TD[j]}/workload"
    sp_mtls_server "$i" "$client"
    addr=$SP_ADDR
    if sp_mtls_client "$j" "$addr" "$server" 10s >/dev/null 2>"$SP_WORK/refused.err"; then
        sp_fail "mTLS from $client to $server succeeded; ${SP_TD[j]} is not federated with ${SP_TD[i]}"
    fi
    err=$(cat "$SP_WORK/refused.err")
    [[ "$err" == *certificate* || "$err" == *x509* || "$err" == *tls* ]] ||
        sp_fail "mTLS from $client to $server failed, but not at the handshake: $err"
    sp_debug "ok: refused $client -> $server ($err)"
}

# sp_cross CHECK I: CHECK I J and CHECK J I for every other federated domain j (CHECK
# is sp_expect_mtls, or the Envoy one in envoy.sh).
sp_cross() {
    local check=$1 i=$2 j
    for ((j = 0; j < SP_FEDERATED; j++)); do
        ((j == i)) && continue
        "$check" "$i" "$j"
        "$check" "$j" "$i"
    done
}

# sp_prove_mesh: every federated domain's workload completes mTLS with every other's;
# every unfederated domain's workload is refused by the first federated domain's, and
# the other way round.
sp_prove_mesh() {
    local i j n=$SP_FEDERATED pairs=0
    sp_log "mTLS between the workloads of every pair of federated domains (go-spiffe)"
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            ((i == j)) && continue
            sp_expect_mtls "$i" "$j"
            pairs=$((pairs + 1))
        done
    done
    for ((j = n; j < ${#SP_TD[@]}; j++)); do
        sp_expect_refused 0 "$j"
        sp_expect_refused "$j" 0
    done
    sp_log "mesh proved: $pairs federated pairs completed mTLS; $((${#SP_TD[@]} - n)) unfederated domain(s) refused both ways"
}

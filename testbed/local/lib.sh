# shellcheck shell=bash
# Shared by testbed/local/run.sh and the scenarios: start N fedgw gateways as separate
# processes on loopback, each with its own trust domain, development PKI (made by
# `fedgw serve` without --config), ports and admin socket, and federate them in a full
# mesh through their admin APIs. Needs bash, coreutils and the Rust toolchain; nothing
# here calls curl, openssl, python or jq.
#
# Environment:
#   FEDGW            a fedgw binary to use instead of building target/debug/fedgw
#   TB_KEEP=1        keep the work directory (logs, data) after the run
#   TB_VERBOSE=1     print every step
#   TB_HINT=4        the refresh hint (seconds) every gateway serves
#   TB_MIN_REFRESH=1 every gateway's polling floor (seconds)
#   TB_LOG=...       fedgw's log filter (default warn,fedgw=info), logs in <dir>/fedgw.log

tb_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=testbed/lib/common.sh
source "$tb_repo/testbed/lib/common.sh"

# Trust domains, in order; gateway i serves TB_TD[i].
tb_names=(alpha beta gamma delta epsilon zeta eta theta)

# Per gateway: trust domain, data directory, https_web port, https_spiffe port, PID.
TB_TD=()
TB_DIR=()
TB_WEB=()
TB_SPIFFE=()
TB_PID=()
TB_WORK=""
TB_FAILED=0
# Other processes a scenario starts (killed on exit too).
TB_EXTRA_PIDS=()
# Seconds: the refresh hint every gateway serves, and its polling floor. Peers poll
# at a quarter of the hint (1 s).
TB_HINT=${TB_HINT:-4}
TB_MIN_REFRESH=${TB_MIN_REFRESH:-1}

tb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
tb_debug() { [[ "${TB_VERBOSE:-0}" != 1 ]] || tb_log "$@"; }

# Report a failed expectation and exit non-zero (the EXIT trap cleans up).
tb_fail() {
    TB_FAILED=1
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# tb_expect_eq WHAT EXPECTED SEEN
tb_expect_eq() {
    [[ "$2" == "$3" ]] || tb_fail "$1: expected '$2', saw '$3'"
    tb_debug "ok: $1 = '$3'"
}

# tb_build: build fedgw once (cargo decides whether anything changed).
tb_build() {
    if [[ -n "${FEDGW:-}" ]]; then
        [[ -x "$FEDGW" ]] || tb_fail "FEDGW=$FEDGW is not an executable"
        return
    fi
    # cargo's progress on a terminal (a first build takes minutes), quiet otherwise.
    local quiet=(-q)
    [[ ! -t 2 ]] || quiet=()
    tb_log "building fedgw (cargo build --locked --bin fedgw)"
    (cd "$tb_repo" && cargo build "${quiet[@]}" --locked --bin fedgw) || tb_fail "cargo build failed"
    local target="${CARGO_TARGET_DIR:-$tb_repo/target}"
    case "$target" in /*) ;; *) target="$tb_repo/$target" ;; esac
    FEDGW="$target/debug/fedgw"
    [[ -x "$FEDGW" ]] || tb_fail "no fedgw binary at $FEDGW after the build"
}

# tb_init N: a fresh work directory and N gateway slots (not started).
tb_init() {
    local n=$1 i
    ((n >= 1 && n <= ${#tb_names[@]})) || tb_fail "between 1 and ${#tb_names[@]} gateways, not $n"
    TB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedgw-testbed.XXXXXX")
    trap tb_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for ((i = 0; i < n; i++)); do
        TB_TD[i]="${tb_names[i]}.testbed.localhost"
        TB_DIR[i]="$TB_WORK/${tb_names[i]}"
        TB_WEB[i]=""
        TB_SPIFFE[i]=""
        TB_PID[i]=""
        mkdir -p "${TB_DIR[i]}"
    done
    tb_debug "work directory $TB_WORK"
}

# Stop everything this testbed started; keep the work directory (and show the logs'
# last lines) on failure or with TB_KEEP=1.
tb_cleanup() {
    local status=$? i pid
    # Clean up fully even if a step here fails.
    set +e
    for pid in "${TB_PID[@]}" "${TB_EXTRA_PIDS[@]}"; do
        [[ -z "$pid" ]] || kill "$pid" 2>/dev/null || true
    done
    for pid in "${TB_PID[@]}" "${TB_EXTRA_PIDS[@]}"; do
        [[ -z "$pid" ]] || wait "$pid" 2>/dev/null || true
    done
    if ((status != 0 && !TB_FAILED)); then
        printf 'FAIL: %s exited with status %s\n' "$0" "$status" >&2
    fi
    [[ -n "$TB_WORK" ]] || return "$status"
    if ((status != 0 || TB_FAILED)); then
        for ((i = 0; i < ${#TB_TD[@]}; i++)); do
            if [[ -s "${TB_DIR[i]}/fedgw.log" ]]; then
                printf -- '--- last lines of %s/fedgw.log (without unchanged fetches)\n' "${TB_DIR[i]}" >&2
                grep -v 'outcome="unchanged"' "${TB_DIR[i]}/fedgw.log" | tail -n 8 >&2
            fi
        done
        printf 'work directory kept: %s\n' "$TB_WORK" >&2
    elif [[ "${TB_KEEP:-0}" == 1 ]]; then
        printf 'work directory kept: %s\n' "$TB_WORK"
    else
        rm -rf "$TB_WORK"
    fi
    return "$status"
}

# The admin API of gateway I, for fedgw's --admin.
tb_admin() { printf 'unix:%s/admin.sock' "${TB_DIR[$1]}"; }

# tb_fedgw I ARGS...: a fedgw admin verb against gateway I.
tb_fedgw() {
    local i=$1
    shift
    FEDGW_ADMIN=$(tb_admin "$i") "$FEDGW" "$@"
}

# Files of gateway I's development PKI.
tb_pki() { printf '%s/dev-pki/%s' "${TB_DIR[$1]}" "${TB_TD[$1]}"; }

# The https_spiffe endpoint SPIFFE ID of gateway I (fixed by the embedded default).
tb_endpoint_id() { printf 'spiffe://%s/fedgw/bundle-endpoint' "${TB_TD[$1]}"; }

# Whether something accepts connections on 127.0.0.1:PORT.
tb_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port in 20000-59999 that nothing listens on and that this testbed does not use.
tb_free_port() {
    local port used
    while :; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        used=" ${TB_WEB[*]} ${TB_SPIFFE[*]} "
        [[ "$used" == *" $port "* ]] && continue
        tb_port_busy "$port" && continue
        printf '%s' "$port"
        return
    done
}

# tb_start I: start gateway I (again on the same ports after a stop) and wait until
# its admin API answers; new ports are chosen if the first ones turn out to be taken.
tb_start() {
    local i=$1 attempt log="${TB_DIR[$1]}/fedgw.log"
    for attempt in 1 2 3 4 5; do
        [[ -n "${TB_WEB[i]}" ]] || TB_WEB[i]=$(tb_free_port)
        [[ -n "${TB_SPIFFE[i]}" ]] || TB_SPIFFE[i]=$(tb_free_port)
        printf -- '--- start (attempt %s) %s\n' "$attempt" "$(date +%H:%M:%S)" >>"$log"
        NO_COLOR=1 "$FEDGW" serve \
            --data-dir "${TB_DIR[i]}" \
            --trust-domain "${TB_TD[i]}" \
            --web-listen "127.0.0.1:${TB_WEB[i]}" \
            --spiffe-listen "127.0.0.1:${TB_SPIFFE[i]}" \
            --refresh-hint "${TB_HINT}s" \
            --min-refresh "${TB_MIN_REFRESH}s" \
            --log "${TB_LOG:-warn,fedgw=info}" >>"$log" 2>&1 &
        TB_PID[i]=$!
        if tb_wait_ready "$i"; then
            tb_debug "${TB_TD[i]} started (pid ${TB_PID[i]}, https_web ${TB_WEB[i]}, https_spiffe ${TB_SPIFFE[i]})"
            return 0
        fi
        kill "${TB_PID[i]}" 2>/dev/null || true
        wait "${TB_PID[i]}" 2>/dev/null || true
        TB_PID[i]=""
        if tail -n 5 "$log" | grep -qi 'address already in use'; then
            tb_log "${TB_TD[i]}: a port was taken, trying others"
            TB_WEB[i]=""
            TB_SPIFFE[i]=""
            continue
        fi
        tb_fail "${TB_TD[i]}: fedgw serve did not start (log: $log)"
    done
    tb_fail "${TB_TD[i]}: no free ports found in 5 attempts"
}

# Wait (20 s at most) until gateway I answers on its admin socket; false if the
# process ended or it did not answer.
tb_wait_ready() {
    local i=$1 n
    for ((n = 0; n < 200; n++)); do
        kill -0 "${TB_PID[i]}" 2>/dev/null || return 1
        if [[ -S "${TB_DIR[i]}/admin.sock" ]] && tb_fedgw "$i" status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# tb_stop I [SIGNAL]: stop gateway I (SIGTERM by default) and wait for it to exit.
tb_stop() {
    local i=$1 signal=${2:-TERM}
    [[ -n "${TB_PID[i]}" ]] || tb_fail "${TB_TD[i]} is not running"
    kill "-$signal" "${TB_PID[i]}" || tb_fail "cannot signal ${TB_TD[i]} (pid ${TB_PID[i]})"
    wait "${TB_PID[i]}" 2>/dev/null || true
    TB_PID[i]=""
    tb_debug "${TB_TD[i]} stopped with SIG$signal"
}

# tb_start_all: start every gateway.
tb_start_all() {
    local i
    for ((i = 0; i < ${#TB_TD[@]}; i++)); do tb_start "$i"; done
}

# The profile gateway I uses to poll gateway J: the pairs alternate, as in fedgw demo.
tb_profile() { if (($(($1 + $2)) % 2 == 0)); then echo https_web; else echo https_spiffe; fi; }

# tb_federate I J: gateway I creates a relationship with gateway J's trust domain
# through its admin API (https_web with J's development Web CA as extra root, or
# https_spiffe bootstrapped from J's bundle file).
tb_federate() {
    local i=$1 j=$2 out
    if [[ "$(tb_profile "$i" "$j")" == https_web ]]; then
        out=$(tb_fedgw "$i" federation create \
            --trust-domain "${TB_TD[j]}" \
            --bundle-endpoint-url "https://localhost:${TB_WEB[j]}/" \
            --bundle-endpoint-profile https_web \
            --extra-ca-roots "$(tb_pki "$j")/web-ca.pem" \
            --proxy off 2>&1)
    else
        out=$(tb_fedgw "$i" federation create \
            --trust-domain "${TB_TD[j]}" \
            --bundle-endpoint-url "https://127.0.0.1:${TB_SPIFFE[j]}/" \
            --bundle-endpoint-profile https_spiffe \
            --endpoint-spiffe-id "$(tb_endpoint_id "$j")" \
            --trust-domain-bundle-path "$(tb_pki "$j")/bundle.json" \
            --proxy off 2>&1)
    fi || tb_fail "${TB_TD[i]}: federation create ${TB_TD[j]} failed: $out"
    tb_debug "${TB_TD[i]} -> ${TB_TD[j]} ($(tb_profile "$i" "$j"))"
}

# tb_mesh: every gateway federates with every other.
tb_mesh() {
    local i j
    for ((i = 0; i < ${#TB_TD[@]}; i++)); do
        for ((j = 0; j < ${#TB_TD[@]}; j++)); do
            ((i == j)) || tb_federate "$i" "$j"
        done
    done
}

# tb_pem I TD: the X.509 authorities gateway I holds for TD, one line per
# certificate (its base64), sorted; empty if it holds none.
tb_pem() {
    tb_fedgw "$1" bundle show "$2" --format pem 2>/dev/null |
        awk '/-----BEGIN/ { cert = ""; next } /-----END/ { print cert; next } { cert = cert $0 }' |
        sort
}

# tb_state I TD: the STATE column of `fedgw status` on gateway I for TD ("" if absent).
tb_state() {
    tb_fedgw "$1" status 2>/dev/null | awk -v td="$2" '$1 == td { print $3 }'
}

# tb_status_line I TD: the row of `fedgw status` on gateway I for TD.
tb_status_line() {
    tb_fedgw "$1" status 2>/dev/null | awk -v td="$2" '$1 == td'
}

# tb_mesh_missing: what keeps the mesh from being converged, one line each; empty
# when every gateway holds, freshly fetched, the same CAs as every other domain's own
# gateway.
tb_mesh_missing() {
    local i j own held state
    for ((j = 0; j < ${#TB_TD[@]}; j++)); do
        [[ -n "${TB_PID[j]}" ]] || continue
        own=$(tb_pem "$j" "${TB_TD[j]}")
        for ((i = 0; i < ${#TB_TD[@]}; i++)); do
            if ((i == j)) || [[ -z "${TB_PID[i]}" ]]; then continue; fi
            held=$(tb_pem "$i" "${TB_TD[j]}")
            state=$(tb_state "$i" "${TB_TD[j]}")
            if [[ -z "$held" ]]; then
                echo "${TB_TD[i]} holds no bundle of ${TB_TD[j]} (state ${state:-none})"
            elif [[ "$held" != "$own" ]]; then
                echo "${TB_TD[i]} holds other CAs for ${TB_TD[j]} than ${TB_TD[j]} serves"
            elif [[ "$state" != healthy ]]; then
                echo "${TB_TD[i]}: ${TB_TD[j]} is ${state:-absent}, not healthy"
            fi
        done
    done
}

# tb_wait SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.25 s until it succeeds;
# fail naming DESCRIPTION and COMMAND's last output after SECONDS.
tb_wait() {
    local seconds=$1 what=$2 out
    shift 2
    out=$(poll_until "$seconds" 0.25 "$@") ||
        tb_fail "$what: not seen within ${seconds}s; last check said: ${out:-nothing}"
    tb_debug "ok: $what"
}

tb_converged() {
    local missing
    missing=$(tb_mesh_missing)
    [[ -z "$missing" ]] || {
        echo "$missing"
        return 1
    }
}

# tb_wait_converged [SECONDS]: wait until the mesh converged (default 30 s).
tb_wait_converged() {
    tb_wait "${1:-30}" "full mesh converged (every gateway holds every other domain's current CAs, healthy)" tb_converged
}

# tb_up N: build, start N gateways, federate them in a full mesh and wait for it.
tb_up() {
    tb_build
    tb_init "$1"
    tb_start_all
    tb_mesh
    tb_wait_converged 30
}

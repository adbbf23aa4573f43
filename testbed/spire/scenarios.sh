#!/usr/bin/env bash
# The SPIRE testbed's scenarios, one after the other on one testbed (three federated
# trust domains with SPIRE, fedgw and go-spiffe workloads, and one domain that is not
# federated; see run.sh), ending with one line:
#
#   testbed/spire: 6 passed in 312.4s     (or: 5 passed, 1 failed in ...)
#
#   testbed/spire/scenarios.sh [NAME...]    mesh jwt x509-rotation outage kill9 deletion
#
# mesh           every federated pair completes mTLS (go-spiffe, exact SPIFFE IDs);
#                the unfederated domain is refused both ways
# jwt            a JWT-SVID of one domain validates in another, by go-spiffe from the
#                SPIRE agent's federated JWT bundles and by fedgw's /v1/jwt-svid/validate;
#                one of the unfederated domain is refused by both
# x509-rotation  localauthority x509 prepare, activate, taint, revoke in one domain:
#                the other domains' workloads keep completing mTLS at every step; after
#                the revocation an SVID of the old CA is refused
# outage         one domain's SPIRE server and fedgw stopped: the others keep its last
#                bundle and keep working; then both come back
# kill9          a fedgw killed with SIGKILL while its domain's bundle changes, and
#                restarted: no SPIRE server sees a bundle of that domain regress or
#                vanish
# deletion       a deleted relationship: after SPIRE's next sync the foreign workload
#                is refused
#
# A failed scenario prints why, with the end of every log, and the run goes on with
# the next; `deletion` runs last since it changes the mesh. See docs/spire.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/spire/lib.sh
source "$here/lib.sh"

all=(mesh jwt x509-rotation outage kill9 deletion)
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

# sp_x509_count I TD: how many X.509 authorities SPIRE server i holds for TD (its own
# bundle when TD is its own domain).
sp_x509_count() {
    local i=$1 td=$2 json
    if [[ "$td" == "${SP_TD[i]}" ]]; then
        json=$(sp_spire_server "$i" bundle show -format spiffe) || return 1
    else
        json=$(sp_spire_server "$i" bundle list -id "spiffe://$td" -format spiffe) || return 1
    fi
    printf '%s' "$json" | python3 -c 'import json, sys; print(sum(1 for k in json.load(sys.stdin)["keys"] if k.get("use") == "x509-svid"))'
}

# sp_x509_count_is N I TD: SPIRE server i holds N X.509 authorities of TD now.
sp_x509_count_is() { [[ "$(sp_x509_count "$2" "$3" 2>/dev/null)" == "$1" ]]; }

# sp_expect_x509_count N TD: every federated SPIRE server holds N X.509 authorities
# of TD (within 90 s).
sp_expect_x509_count() {
    local n=$1 td=$2 i
    for ((i = 0; i < SP_FEDERATED; i++)); do
        sp_wait 90 "SPIRE server of ${SP_TD[i]} holds $n X.509 authorities of $td" \
            sp_x509_count_is "$n" "$i" "$td"
    done
}

# sp_cross_mtls I: domain i's workload and every other federated domain's complete
# mTLS, both ways.
sp_cross_mtls() {
    local i=$1 j
    for ((j = 0; j < SP_FEDERATED; j++)); do
        ((j == i)) && continue
        sp_expect_mtls "$i" "$j"
        sp_expect_mtls "$j" "$i"
    done
}

sp_authority() {
    sp_spire_server "$1" localauthority x509 show -output json |
        python3 -c "import json, sys; print(json.load(sys.stdin).get('$2', {}).get('authority_id', ''))"
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
    # Agents rotate SVIDs of the tainted CA at once; workloads keep working.
    sp_cross_mtls 0
    sp_spire_server 0 localauthority x509 revoke -authorityID "$old" >/dev/null || sp_fail "revoke $old"
    sp_expect_x509_count 1 "${SP_TD[0]}"
    sp_cross_mtls 0
    # The old SVID is refused by a workload of another domain.
    sp_mtls_server 1 "spiffe://${SP_TD[0]}/workload"
    if openssl s_client -connect "$SP_ADDR" -cert "$svid_dir/svid.0.pem" -key "$svid_dir/svid.0.key" \
        -CAfile "$svid_dir/bundle.0.pem" -verify_return_error </dev/null >"$SP_WORK/old-svid.out" 2>&1 &&
        ! grep -qi "alert" "$SP_WORK/old-svid.out"; then
        sp_fail "a workload of ${SP_TD[1]} accepted an SVID of the revoked CA of ${SP_TD[0]}"
    fi
    grep -qiE "alert (bad|unknown) certificate|certificate unknown|bad certificate|alert" "$SP_WORK/old-svid.out" ||
        sp_fail "the old SVID failed, but not at the server's verification: $(tail -n 5 "$SP_WORK/old-svid.out")"
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
    sp_fedgw 0 federation delete "${SP_TD[2]}" >/dev/null || sp_fail "federation delete on ${SP_TD[0]}"
    if curl -sfk "https://127.0.0.1:${SP_SPIFFE_PORT[0]}/relay/${SP_TD[2]}" >/dev/null; then
        sp_fail "fedgw of ${SP_TD[0]} still relays ${SP_TD[2]} after the deletion"
    fi
    sp_spire_server 0 bundle delete -id "spiffe://${SP_TD[2]}" -mode dissociate >/dev/null ||
        sp_fail "bundle delete of ${SP_TD[2]} in SPIRE server ${SP_TD[0]}"
    sp_wait 60 "a workload of ${SP_TD[2]} refused by ${SP_TD[0]}'s" sp_refused_quietly 0 2
}

sp_refused_quietly() {
    sp_mtls_server "$1" "spiffe://${SP_TD[$2]}/workload"
    ! sp_mtls_client "$2" "$SP_ADDR" "spiffe://${SP_TD[$1]}/workload" 5s >/dev/null 2>&1
}

# --- run ---------------------------------------------------------------------------

sp_build
sp_up 3 1

start=$(date +%s%N)
passed=0
failed=0
failures=()
for name in "${names[@]}"; do
    t0=$(date +%s%N)
    out=$SP_WORK/scenario-$name.out
    if (
        trap - EXIT
        "scenario_${name//-/_}"
    ) >"$out" 2>&1; then
        status=ok
        passed=$((passed + 1))
    else
        status=FAILED
        failed=$((failed + 1))
        failures+=("$name")
    fi
    ms=$((($(date +%s%N) - t0) / 1000000))
    printf 'scenario %-14s %s (%d.%01ds)\n' "$name" "$status" $((ms / 1000)) $((ms % 1000 / 100))
    [[ "$status" == ok ]] || sed 's/^/    /' "$out"
done

ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((ms / 1000)).$((ms % 1000 / 100))s"
if ((failed)); then
    SP_FAILED=1
    echo "failed: ${failures[*]}"
    echo "testbed/spire: $passed passed, $failed failed in $elapsed"
    exit 1
fi
echo "testbed/spire: $passed passed in $elapsed"

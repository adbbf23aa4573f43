#!/usr/bin/env bash
# CA rotation: alpha publishes a second CA (made by openssl, not by fedgw) next to its
# first; beta (polling alpha over https_spiffe) and gamma (over https_web) hold both.
# alpha's https_spiffe endpoint then serves an X509-SVID issued by the new CA, and
# beta keeps fetching from it. Finally the old CA is withdrawn and both peers drop it,
# beta still fetching over https_spiffe.
set -euo pipefail
# shellcheck source=testbed/local/scenarios/helpers.sh
source "$(dirname "$0")/helpers.sh"
tb_need_tools
tb_up 3

alpha=${TB_TD[0]}
pki=$(tb_pki 0)
next="$TB_WORK/rotation"
mkdir -p "$next"
tb_openssl_ca "$next/ca.pem" "$next/ca.key" "$alpha next CA" "$alpha"
old_ca=$(tb_pem_of "$pki/ca.pem")
new_ca=$(tb_pem_of "$next/ca.pem")
both=$(tb_pem_of "$pki/ca.pem" "$next/ca.pem")

sequence() { tb_status_line "$1" "$alpha" | awk '{ print $4 }'; }
seq_before=$(sequence 0)

# beta fetches alpha now (over https_spiffe) and gets an answer.
fetch_ok() {
    local out
    out=$(tb_fedgw 1 federation refresh "$alpha" 2>&1) || {
        echo "federation refresh failed: $out"
        return 1
    }
    [[ "$out" == *": accepted"* || "$out" == *": unchanged"* ]] || {
        echo "federation refresh said: $out"
        return 1
    }
}

tb_log "rotation 1/3: $alpha publishes a second CA"
tb_bundle_json "$pki/bundle.json" "$pki/ca.pem" "$next/ca.pem"
tb_wait 15 "alpha serves both CAs" tb_holds 0 "$alpha" "$both"
tb_wait 15 "beta (https_spiffe) holds both of alpha's CAs" tb_holds 1 "$alpha" "$both"
tb_wait 15 "gamma (https_web) holds both of alpha's CAs" tb_holds 2 "$alpha" "$both"
seq_both=$(sequence 0)
((seq_both > seq_before)) || tb_fail "alpha's sequence: expected above $seq_before after adding a CA, saw $seq_both"
tb_expect_eq "beta's sequence of alpha" "$seq_both" "$(sequence 1)"

tb_log "rotation 2/3: $alpha's https_spiffe endpoint gets an X509-SVID from the new CA"
tb_openssl_leaf "$pki/svid.pem" "$pki/svid.key" "$next/ca.pem" "$next/ca.key" \
    "URI:$(tb_endpoint_id 0)"
want=$(openssl x509 -in "$pki/svid.pem" -noout -fingerprint -sha256)
served_svid() {
    openssl s_client -connect "127.0.0.1:${TB_SPIFFE[0]}" </dev/null 2>/dev/null |
        openssl x509 -outform PEM 2>/dev/null
}
serves_new_svid() {
    local seen
    seen=$(served_svid | openssl x509 -noout -fingerprint -sha256 2>&1)
    [[ "$seen" == "$want" ]] || {
        echo "served: ${seen:-nothing}; want: $want"
        return 1
    }
}
# The gateway re-reads its certificate files every 5 s.
tb_wait 20 "alpha's https_spiffe endpoint serves the X509-SVID issued by the new CA" serves_new_svid
served_svid >"$next/served.pem"
openssl verify -CAfile "$next/ca.pem" "$next/served.pem" >/dev/null 2>&1 ||
    tb_fail "the served X509-SVID does not verify against the new CA (openssl verify)"
tb_wait 10 "beta fetches alpha over https_spiffe from the new SVID" fetch_ok
tb_expect_eq "beta's $alpha state with the new SVID" healthy "$(tb_state 1 "$alpha")"

tb_log "rotation 3/3: $alpha withdraws its old CA"
tb_bundle_json "$pki/bundle.json" "$next/ca.pem"
tb_wait 15 "alpha serves only the new CA" tb_holds 0 "$alpha" "$new_ca"
tb_wait 15 "beta (https_spiffe) dropped alpha's old CA" tb_holds 1 "$alpha" "$new_ca"
tb_wait 15 "gamma (https_web) dropped alpha's old CA" tb_holds 2 "$alpha" "$new_ca"
[[ "$(tb_pem 1 "$alpha")" != *"$old_ca"* ]] || tb_fail "beta still holds alpha's old CA"
seq_new=$(sequence 0)
((seq_new > seq_both)) || tb_fail "alpha's sequence: expected above $seq_both after withdrawing a CA, saw $seq_new"
tb_wait 10 "beta keeps fetching alpha over https_spiffe with only the new CA" fetch_ok
tb_expect_eq "beta's $alpha state after the rotation" healthy "$(tb_state 1 "$alpha")"
tb_expect_eq "gamma's $alpha state after the rotation" healthy "$(tb_state 2 "$alpha")"
tb_scenario_done rotation

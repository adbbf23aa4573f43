#!/usr/bin/env bash
# Relationship deletion: `fedgw federation delete` on alpha for beta. beta's bundle
# leaves alpha's bundle list, relay (404), status and relationship list and does not
# come back; alpha's relationship with gamma is untouched; beta still serves its own
# bundle and still holds alpha's (a relationship is one-way), and gamma still holds
# beta's.
set -euo pipefail
# shellcheck source=testbed/local/scenarios/helpers.sh
source "$(dirname "$0")/helpers.sh"
tb_need_tools
tb_up 3

alpha=${TB_TD[0]} beta=${TB_TD[1]} gamma=${TB_TD[2]}
gamma_relay=$(tb_relay 0 "$gamma") || tb_fail "alpha's /relay/$gamma before the deletion"

tb_log "fedgw federation delete -t $beta on $alpha"
out=$(tb_fedgw 0 federation delete -t "$beta" 2>&1) || tb_fail "federation delete failed: $out"

gone() {
    local where
    where=$(tb_fedgw 0 bundle list | awk -v td="$beta" '$1 == td { print " bundle list," }')
    where+=$(tb_fedgw 0 federation list | awk -v td="$beta" '$1 == td { print " federation list," }')
    where+=$(tb_fedgw 0 status | awk -v td="$beta" '$1 == td { print " status," }')
    [[ -z "$where" ]] || {
        echo "$beta still in alpha's${where%,}"
        return 1
    }
}
tb_wait 10 "$beta gone from alpha's bundle list, federation list and status" gone
tb_expect_eq "alpha's /relay/$beta after the deletion (HTTP status)" 404 "$(tb_relay_code 0 "$beta")"

# Polling stopped: after several poll periods (the peers poll every second) it is
# still gone.
sleep 3
gone || tb_fail "$beta came back on alpha after the deletion: $(gone)"
tb_expect_eq "alpha's /relay/$beta 3 s after the deletion (HTTP status)" 404 "$(tb_relay_code 0 "$beta")"

# alpha's other relationship is untouched.
tb_expect_eq "alpha's $gamma state" healthy "$(tb_state 0 "$gamma")"
tb_expect_eq "alpha's /relay/$gamma after the deletion" "$gamma_relay" "$(tb_relay 0 "$gamma")"
tb_expect_eq "alpha's relationships after the deletion" "$gamma" \
    "$(tb_fedgw 0 federation list | awk 'NR > 1 { print $1 }')"

# The other side keeps its own bundle and its own relationship with alpha.
tb_expect_eq "beta's own bundle state" serving "$(tb_state 1 "$beta")"
tb_expect_eq "beta's CAs of its own domain" "$(tb_pem_of "$(tb_pki 1)/ca.pem")" "$(tb_pem 1 "$beta")"
tb_expect_eq "beta's $alpha state" healthy "$(tb_state 1 "$alpha")"
tb_expect_eq "gamma's $beta state" healthy "$(tb_state 2 "$beta")"
tb_expect_eq "gamma's CAs of $beta" "$(tb_pem_of "$(tb_pki 1)/ca.pem")" "$(tb_pem 2 "$beta")"
tb_scenario_done deletion

#!/usr/bin/env bash
# kill -9: SIGKILL alpha's gateway while it is federated, stop its peers (so nothing
# can be fetched again), restart alpha: it serves every foreign bundle it had stored,
# from sled, as soon as it is ready, with its relationships intact. Then the peers
# come back and the mesh converges again.
set -euo pipefail
# shellcheck source=testbed/local/scenarios/helpers.sh
source "$(dirname "$0")/helpers.sh"
tb_need_tools
tb_up 3

alpha=${TB_TD[0]}
declare -A relay_before
for td in "${TB_TD[1]}" "${TB_TD[2]}"; do
    relay_before[$td]=$(tb_relay 0 "$td") || tb_fail "alpha's /relay/$td before the kill"
done
list_before=$(tb_fedgw 0 bundle list | awk 'NR > 1 { print $1 }' | sort)
# The foreign rows of `fedgw bundle list` (sequence, authorities, source, accepted
# at), whitespace normalised.
foreign_rows() { tb_fedgw 0 bundle list | awk -v td="$alpha" 'NR > 1 && $1 != td { $1 = $1; print }' | sort; }
rows_before=$(foreign_rows)
tb_expect_eq "foreign rows in alpha's bundle list before the kill" 2 "$(grep -c . <<<"$rows_before")"
relationships_before=$(tb_fedgw 0 federation list | awk 'NR > 1 { print $1 }' | sort)
tb_expect_eq "alpha's bundles before the kill" \
    "$(printf '%s\n' "${TB_TD[@]}" | sort)" "$list_before"

tb_log "kill -9 $alpha's gateway; stopping its peers so that nothing can be re-fetched"
tb_stop 0 KILL
tb_stop 1
tb_stop 2
tb_port_busy "${TB_WEB[1]}" && tb_fail "beta's https_web port still answers after it was stopped"
tb_port_busy "${TB_SPIFFE[2]}" && tb_fail "gamma's https_spiffe port still answers after it was stopped"

tb_start 0
# Right after the admin API answers, before any fetch could have succeeded (the peers
# are down): every foreign bundle is served again, byte for byte.
for td in "${TB_TD[1]}" "${TB_TD[2]}"; do
    code=$(tb_relay_code 0 "$td")
    tb_expect_eq "alpha's /relay/$td right after the restart (HTTP status)" 200 "$code"
    tb_expect_eq "alpha's /relay/$td after the restart is the bundle served before the kill" \
        "${relay_before[$td]}" "$(tb_relay 0 "$td")"
done
tb_expect_eq "alpha's bundles after the restart" "$list_before" \
    "$(tb_fedgw 0 bundle list | awk 'NR > 1 { print $1 }' | sort)"
tb_expect_eq "alpha's relationships after the restart" "$relationships_before" \
    "$(tb_fedgw 0 federation list | awk 'NR > 1 { print $1 }' | sort)"
# Nothing was fetched (the peers are down): the same records, accepted at the same
# time, came back from the database.
tb_expect_eq "alpha's foreign bundle records (bundle list) after the restart" "$rows_before" "$(foreign_rows)"
# alpha polls the peers and fails, and keeps serving what it stored.
is_failing() {
    local state
    state=$(tb_state 0 "$1")
    [[ "$state" == failing ]] || {
        echo "state: ${state:-none}"
        return 1
    }
}
for td in "${TB_TD[1]}" "${TB_TD[2]}"; do
    tb_wait 15 "alpha shows $td failing while its endpoint is down" is_failing "$td"
    tb_expect_eq "alpha's /relay/$td while failing (HTTP status)" 200 "$(tb_relay_code 0 "$td")"
done

tb_log "restarting the peers"
tb_start 1
tb_start 2
tb_wait_converged 30
tb_scenario_done kill9

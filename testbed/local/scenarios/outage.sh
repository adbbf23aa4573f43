#!/usr/bin/env bash
# Endpoint outage: stop beta's gateway. alpha and gamma keep serving beta's last good
# bundle at /relay/beta..., and their status shows the failure with its error. Then
# beta comes back on the same ports and both recover.
set -euo pipefail
# shellcheck source=testbed/local/scenarios/helpers.sh
source "$(dirname "$0")/helpers.sh"
tb_need_tools
tb_up 3

beta=${TB_TD[1]}
before0=$(tb_relay 0 "$beta") || tb_fail "alpha's /relay/$beta before the outage"
before2=$(tb_relay 2 "$beta") || tb_fail "gamma's /relay/$beta before the outage"

tb_log "outage: stopping $beta's gateway"
tb_stop 1

failing() {
    local line
    line=$(tb_status_line "$1" "$beta")
    [[ "$(awk '{ print $3 }' <<<"$line")" == failing && "$line" == *"$2"* ]] || {
        echo "status row: ${line:-none}"
        return 1
    }
}
# alpha polls beta over https_spiffe, gamma over https_web; both fail to connect.
tb_wait 20 "alpha's status shows $beta failing with a connection error" failing 0 "connect: cannot connect"
tb_wait 20 "gamma's status shows $beta failing with a connection error" failing 2 "connect: cannot connect"

for i in 0 2; do
    code=$(tb_relay_code "$i" "$beta")
    tb_expect_eq "${TB_TD[i]}'s /relay/$beta during the outage (HTTP status)" 200 "$code"
done
tb_expect_eq "alpha's /relay/$beta during the outage is the last good bundle" "$before0" "$(tb_relay 0 "$beta")"
tb_expect_eq "gamma's /relay/$beta during the outage is the last good bundle" "$before2" "$(tb_relay 2 "$beta")"
tb_expect_eq "alpha's CAs of $beta during the outage" "$(tb_pem_of "$(tb_pki 1)/ca.pem")" "$(tb_pem 0 "$beta")"

tb_log "outage over: restarting $beta's gateway"
tb_start 1
# Converged includes: both peers hold beta's CAs, fetched, state healthy (no failure
# since the last success).
tb_wait_converged 30
tb_scenario_done outage

#!/usr/bin/env bash
# replicated: three replicas (r1, r2 in dc1, r3 in dc2 behind the delayed link) share
# one PostgreSQL. A relationship created through r1's admin API is answered for by all
# three admin APIs within 1 s and listed by all three, and the peer's bundle is served
# byte for byte the same by all three /relay/<td>.
set -euo pipefail
# shellcheck source=testbed/netns/lib.sh
source "$(dirname "$0")/../lib.sh"
nb_up

nb_federate r1
t0=$(nb_now_ms)
# When each replica's admin API first answers for the new relationship (curl every
# 50 ms; the create's own answer is t0).
declare -A seen=()
while ((${#seen[@]} < 3 && $(nb_now_ms) - t0 < 20000)); do
    for h in "${NB_REPLICAS[@]}"; do
        [[ -z "${seen[$h]:-}" ]] || continue
        if nb_api "$h" -f -o /dev/null "http://x/v1/federation-relationships/$NB_PEER_TD"; then
            seen[$h]=$(($(nb_now_ms) - t0))
        fi
    done
    sleep 0.05
done
((${#seen[@]} == 3)) || nb_fail "not every replica has the relationship with $NB_PEER_TD within 20s (seen: ${!seen[*]})"
t_listed=0
for h in "${NB_REPLICAS[@]}"; do ((seen[$h] <= t_listed)) || t_listed=${seen[$h]}; done
((t_listed <= 1000)) ||
    nb_fail "a relationship created on r1 reached every replica after ${t_listed} ms (r1 ${seen[r1]}, r2 ${seen[r2]}, r3 ${seen[r3]}), not within 1 s"
listed() {
    local h
    for h in "${NB_REPLICAS[@]}"; do
        nb_fedgw "$h" federation list 2>/dev/null | awk 'NR > 1 { print $1 }' | grep -qx "$NB_PEER_TD" ||
            { echo "$h does not list $NB_PEER_TD"; return 1; }
    done
}
nb_wait 5 "every replica lists the relationship with $NB_PEER_TD (fedgw federation list)" listed
expected=$(cat "$NB_WORK/peer/www/bundle.json")
served_by_all() {
    nb_serving_same "$NB_PEER_TD" || return 1
    # The relayed document is the peer's own sequence and authorities.
    local body
    body=$(nb_relay r1 "$NB_PEER_TD")
    [[ "$(nb_seq <<<"$body")" == "$(nb_seq <<<"$expected")" ]] || { echo "r1 serves sequence $(nb_seq <<<"$body")"; return 1; }
}
nb_wait 30 "all three replicas serve the same /relay/$NB_PEER_TD" served_by_all
t_served=$(($(nb_now_ms) - t0))
# The peer's CA is the one relayed (same x5c as in the peer's document).
x5c=$(nb_json 'd["keys"][0]["x5c"][0]' <"$NB_WORK/peer/www/bundle.json")
nb_relay r3 "$NB_PEER_TD" | grep -qF "$x5c" || nb_fail "r3's /relay/$NB_PEER_TD does not hold the peer's CA"
nb_wait 20 "every replica at the same revision and bundle digests" nb_converged
# The local domain too: the same bytes from every replica's https_web endpoint.
home() { nb_in rt curl -sf --max-time 5 --cacert "$NB_WORK/pki/web-ca.pem" "https://${NB_IP[$1]}:$NB_WEB_PORT/"; }
nb_expect_eq "r2's local bundle is r1's" "$(home r1)" "$(home r2)"
nb_expect_eq "r3's local bundle is r1's" "$(home r1)" "$(home r3)"
holder=$(nb_holder) || nb_fail "exactly one replica should hold the polling lease of $NB_PEER_TD: $holder"
nb_measure "the relationship reached every replica ${t_listed} ms after the create (r2 ${seen[r2]} ms, r3 across the link ${seen[r3]} ms); served identically by all three after $(nb_secs "$t_served"); lease held by $holder"
nb_log "PASS replicated"

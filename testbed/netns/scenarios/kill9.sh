#!/usr/bin/env bash
# kill9: SIGKILL the replica holding the polling lease of the peer's trust domain
# (fedgw_leases_held 1): another replica takes the lease and polls the peer (seen in
# the peer's own access log, by client address, and in that replica's log) within a
# deadline; every survivor keeps serving the same bytes. Prints the measured take-over.
set -euo pipefail
# shellcheck source=testbed/netns/lib.sh
source "$(dirname "$0")/../lib.sh"
nb_up
nb_federate r1
nb_wait 30 "all three replicas serve the same /relay/$NB_PEER_TD" nb_serving_same "$NB_PEER_TD"
nb_wait 20 "exactly one lease holder" nb_holder
holder=$(nb_holder)
before=$(nb_relay r1 "$NB_PEER_TD")
access="$NB_WORK/peer/access.log"
# The holder is the one polling: the peer's recent requests come from its address.
polled_by() {
    local ip=$1 since=$2
    awk -v ip="$ip" -v since="$since" '$3 == ip && $2 * 1000 >= since { found = 1 } END { exit !found }' "$access" ||
        { echo "no request from $ip in the peer's access log since then"; return 1; }
}
nb_wait 10 "the holder $holder polls the peer" polled_by "${NB_IP[$holder]}" "$(nb_now_ms)"

nb_log "kill -9 the lease holder $holder"
t0=$(nb_now_ms)
nb_stop "$holder" KILL
survivors=()
for h in "${NB_REPLICAS[@]}"; do [[ "$h" == "$holder" ]] || survivors+=("$h"); done
# A survivor takes the lease (fedgw_leases_held 1) and polls the peer.
taken() {
    local h
    h=$(nb_holder) || { echo "$h"; return 1; }
    echo "$h"
}
nb_wait $((NB_LEASE * 5 + 10)) "a survivor holds the lease of $NB_PEER_TD" taken
successor=$(taken)
t_lease=$(($(nb_now_ms) - t0))
polled_since_kill() { polled_by "${NB_IP[$successor]}" "$t0"; }
nb_wait 15 "the successor $successor polls the peer" polled_since_kill
t_poll=$(awk -v ip="${NB_IP[$successor]}" -v since="$t0" '$3 == ip && $2 * 1000 >= since { printf "%.0f\n", $2 * 1000; exit }' "$access")
t_poll=$((t_poll - t0))
# Its own log says it fetched the domain.
fetched() {
    grep -q "bundle fetched.*trust_domain=$NB_PEER_TD\|trust_domain=$NB_PEER_TD.*bundle fetched" "$NB_WORK/$successor/fedgw.log" ||
        { echo "no 'bundle fetched' line for $NB_PEER_TD in $successor's log"; return 1; }
}
nb_wait 10 "$successor logs 'bundle fetched' for $NB_PEER_TD" fetched
for h in "${survivors[@]}"; do
    nb_expect_eq "$h's /relay/$NB_PEER_TD after the kill" "$before" "$(nb_relay "$h" "$NB_PEER_TD")"
done
# The others see one replica less.
replicas_two() {
    local v
    v=$(nb_metric "$successor" fedgw_replicas)
    [[ "$v" == 2 ]] || { echo "fedgw_replicas on $successor is $v"; return 1; }
}
nb_wait $((NB_LEASE * 5 + 10)) "fedgw_replicas 2 on $successor" replicas_two
nb_measure "lease holder $holder killed; $successor held the lease after $(nb_secs "$t_lease") and polled the peer $(nb_secs "$t_poll") after the kill (lease_time ${NB_LEASE}s)"
nb_log "PASS kill9"

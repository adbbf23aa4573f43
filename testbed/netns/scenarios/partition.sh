#!/usr/bin/env bash
# partition: cut dc2 (r3) off the database for NETNS_CUT_SECONDS (default 60) while
# two downstream clients read /relay/peer.test alternately from r1, r2 and r3: a
# downstream fedgw polling the replicas' Service address (its fetches spread over the
# three by DNAT, its default sequence policy refusing any rollback) and curl reading
# each replica in turn. During the cut every replica keeps serving the same bytes it
# had, r3's status says store "away", its /readyz says degraded, its admin writes
# answer 503 store_unavailable, while dc1 keeps taking writes. After the cut all
# converge (same revision, same bundles) and r3 takes writes again. The downstream
# fedgw's rollback check never fired (it followed the peer from sequence 1 to 2 and
# refused nothing) and no read by curl saw a lower spiffe_sequence than an earlier one.
set -euo pipefail
# shellcheck source=testbed/netns/lib.sh
source "$(dirname "$0")/../lib.sh"
cut=${NETNS_CUT_SECONDS:-60}
nb_up
reads="$NB_WORK/reads.log"
nb_federate r1
nb_wait 30 "all three replicas serve the same /relay/$NB_PEER_TD" nb_serving_same "$NB_PEER_TD"
nb_downstream_up
ds_seq() { [[ "$(nb_ds_seq)" == "$1" ]] || { echo "the downstream holds sequence $(nb_ds_seq)"; return 1; }; }
nb_wait 20 "the downstream fedgw holds sequence 1 of $NB_PEER_TD" ds_seq 1
# A change while the downstream fedgw polls: sequence 2, both CAs.
nb_peer_bundle 2 "$NB_WORK/peer/ca1.pem" "$NB_WORK/peer/ca2.pem"
want=$(cat "$NB_WORK/peer/www/bundle.json")
seq2() { nb_serving_same "$NB_PEER_TD" && [[ "$(nb_relay r3 "$NB_PEER_TD" | nb_seq)" == 2 ]]; }
nb_wait 30 "all three replicas serve sequence 2 of $NB_PEER_TD" seq2
nb_wait 20 "the downstream fedgw holds sequence 2 of $NB_PEER_TD" ds_seq 2
# curl reads from here on: a replica serves a change once it has learned of it, so
# while one crosses the link (a few round trips) a client switching replicas every
# few milliseconds could see it and then not; the downstream fedgw, polling every
# second or two, saw the change above.
nb_reader_start "$reads"
nb_wait 20 "all three replicas converged before the cut" nb_converged
before=$(nb_relay r1 "$NB_PEER_TD")
# The relayed document carries the peer's CAs.
for i in 0 1; do
    x5c=$(nb_json "d[\"keys\"][$i][\"x5c\"][0]" <<<"$want")
    grep -qF "$x5c" <<<"$before" || nb_fail "the relayed bundle lacks the peer's CA $((i + 1))"
done
rev_before=$(nb_revision r1)

nb_log "cutting dc2 off the database for ${cut}s"
nb_cut
t0=$(nb_now_ms)
away() {
    local s
    s=$(nb_store_state r3) || { echo "r3's status did not answer"; return 1; }
    [[ "$s" == away ]] || { echo "r3's store.state is $s"; return 1; }
}
nb_wait 40 "r3's status shows store.state away" away
t_away=$(($(nb_now_ms) - t0))
nb_status r3 | nb_json 'd["store"]' | grep -q '"reason"' || nb_fail "r3's store status has no reason"
ready=$(nb_api r3 http://x/readyz)
[[ "$ready" == *"degraded: the shared store cannot be reached"* ]] || nb_fail "r3's /readyz during the cut: $ready"
nb_expect_eq "r3's fedgw_store_reachable during the cut" 0 "$(nb_metric r3 fedgw_store_reachable)"
nb_expect_eq "r1's store.state during the cut" ok "$(nb_store_state r1)"
nb_expect_eq "r2's store.state during the cut" ok "$(nb_store_state r2)"
# Writes: r3 refuses with 503 store_unavailable, r1 (dc1) accepts.
nb_ca "$NB_WORK/cut3.pem" "$NB_WORK/cut3.key" "cut-r3 CA" cut-r3.test
nb_ca "$NB_WORK/cut1.pem" "$NB_WORK/cut1.key" "cut-r1 CA" cut-r1.test
t_w=$(nb_now_ms)
answer=$(nb_put r3 cut-r3.test "$NB_WORK/cut3.pem")
t_w=$(($(nb_now_ms) - t_w))
[[ "${answer%% *}" == 503 && "$answer" == *'"store_unavailable"'* ]] ||
    nb_fail "r3's PUT during the cut: expected 503 store_unavailable, saw: $answer"
answer=$(nb_put r1 cut-r1.test "$NB_WORK/cut1.pem")
[[ "${answer%% *}" == 200 ]] || nb_fail "r1's PUT during the cut (dc1 reaches the database): $answer"
# Until the end of the cut: every replica serves the bytes it had.
checks=0
while (($(nb_now_ms) - t0 < cut * 1000)); do
    for h in "${NB_REPLICAS[@]}"; do
        body=$(nb_relay "$h" "$NB_PEER_TD") || nb_fail "$h's /relay/$NB_PEER_TD failed during the cut"
        [[ "$body" == "$before" ]] || nb_fail "$h serves other bytes during the cut (sequence $(nb_seq <<<"$body"))"
    done
    checks=$((checks + 1))
    sleep 2
done
nb_expect_eq "r3's store.state at the end of the cut" away "$(nb_store_state r3)"
nb_has_bundle r3 cut-r3.test && nb_fail "r3 holds cut-r3.test, whose PUT was refused"

nb_log "healing the cut"
# The deadline covers Linux's longest TCP retransmission backoff (120 s): connections
# that sent into the cut wait for their next retransmission (see docs/testbed-netns.md).
nb_heal_converged "the partition (${cut}s cut)" "all three replicas converged after the cut"
nb_has_bundle r3 cut-r1.test || nb_fail "r3 does not hold cut-r1.test (written through r1 during the cut)"
answer=$(nb_put r3 cut-r3.test "$NB_WORK/cut3.pem")
[[ "${answer%% *}" == 200 ]] || nb_fail "r3's PUT after the cut: $answer"
nb_wait 20 "all three replicas converged after r3's write" nb_converged
for h in r1 r2; do nb_has_bundle "$h" cut-r3.test || nb_fail "$h does not hold cut-r3.test"; done
rev_after=$(nb_revision r3)
((rev_after > rev_before)) || nb_fail "revision after ($rev_after) not above the one before the cut ($rev_before)"
nb_serving_same "$NB_PEER_TD" "$before" >/dev/null || nb_fail "after the cut: $(nb_serving_same "$NB_PEER_TD" "$before")"
nb_reader_stop
read -r n total first < <(nb_regressions "$reads")
errors=$(awk '$3 == "err"' "$reads" | wc -l)
((total > 0)) || nb_fail "the downstream client read nothing"
((n == 0)) || nb_fail "the client alternating between replicas saw $n sequence regressions in $total reads, first: $first"
# The downstream fedgw: fetched through every replica, refused nothing, holds sequence 2.
read -r to1 to2 to3 < <(nb_ds_spread)
for count in "$to1" "$to2" "$to3"; do
    ((count >= 5)) || nb_fail "the downstream's fetches did not alternate between the replicas (connections to r1 r2 r3: $to1 $to2 $to3)"
done
refused=$(nb_ds_metric fedgw_bundle_rejections_total "trust_domain=\"$NB_PEER_TD\"")
((refused == 0)) ||
    nb_fail "the downstream fedgw refused $refused fetched bundles of $NB_PEER_TD (sequence_regression: $(nb_ds_metric fedgw_bundle_rejections_total 'reason="sequence_regression"'))"
nb_expect_eq "the downstream's sequence of $NB_PEER_TD after the cut" 2 "$(nb_ds_seq)"
ds_ok=$(nb_ds_metric fedgw_fetches_total 'outcome="unchanged"')
ds_failed=$(nb_ds_metric fedgw_fetches_total 'outcome="failed"')
nb_measure "r3 store away $(nb_secs "$t_away") after the cut; r3's refused write answered in $(nb_secs $((t_w)) ); $checks rounds of identical bytes during the ${cut}s cut; converged $(nb_secs "$NB_CONVERGE_MS") after the heal; curl: $total reads, $errors failed, 0 regressions; downstream fedgw: connections to r1/r2/r3 $to1/$to2/$to3, $ds_ok unchanged fetches, $ds_failed failed, 0 refused"
nb_log "PASS partition"

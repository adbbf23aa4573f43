#!/usr/bin/env bash
# fencing: a partitioned lease holder that comes back cannot write. r3 (dc2) creates
# the relationship while it runs alone, so it holds the polling lease; r1 and r2 join.
# dc2 is cut off the database; from then on the peer shows r3 (by its address) a rogue
# bundle, sequence 3 with CA 3, and everyone else sequence 2 with CA 2. Past the lease
# time a dc1 replica takes the lease and stores sequence 2. After the heal every
# replica serves sequence 2, byte for byte; CA 3 is nowhere (not served, not in the
# history): nothing r3 fetched after losing its lease was written. No replica's
# revision or served sequence ever went backwards.
set -euo pipefail
# shellcheck source=testbed/netns/lib.sh
source "$(dirname "$0")/../lib.sh"
cut=${NETNS_FENCING_CUT_SECONDS:-15}
nb_up r3
peer="$NB_WORK/peer"
nb_federate r3
r3_holds() { [[ "$(nb_metric r3 fedgw_leases_held)" == 1 ]] || { echo "r3 holds $(nb_metric r3 fedgw_leases_held) leases"; return 1; }; }
nb_wait 20 "r3 (alone) holds the lease of $NB_PEER_TD" r3_holds
nb_wait 20 "r3 serves /relay/$NB_PEER_TD" nb_relay r3 "$NB_PEER_TD"
nb_start r1
nb_start r2
nb_wait 30 "all three replicas serve the same /relay/$NB_PEER_TD" nb_serving_same "$NB_PEER_TD"
sleep $((NB_LEASE + 1))
holder=$(nb_holder) || nb_fail "exactly one lease holder expected after r1 and r2 joined: $holder"
nb_expect_eq "the lease holder once r1 and r2 joined (precondition)" r3 "$holder"
seq1=$(nb_relay r1 "$NB_PEER_TD")
reads="$NB_WORK/reads.log"
revs="$NB_WORK/revisions.log"
nb_reader_start "$reads"
nb_revisions_start "$revs"

# What the peer will serve: sequence 2 (CA 2) to everyone, sequence 3 (CA 3) to r3.
nb_ca "$peer/ca3.pem" "$peer/ca3.key" "$NB_PEER_TD rogue CA 3" "$NB_PEER_TD"
ca3=$(openssl x509 -in "$peer/ca3.pem" -outform DER | base64 -w0)
mkdir -p "$peer/rogue" "$peer/www/by-client"
nb_bundle_json "$peer/rogue/bundle.json" --sequence 3 --refresh-hint 2 "$peer/ca3.pem"
nb_log "cutting dc2 off the database"
nb_cut
t0=$(nb_now_ms)
mv "$peer/rogue" "$peer/www/by-client/${NB_IP[r3]}"
nb_peer_bundle 2 "$peer/ca2.pem"
seq2=$(cat "$peer/www/bundle.json")
# (r3's own fedgw_leases_held is not looked at: it cannot reach the database.)
dc1_holds() {
    local a b
    a=$(nb_metric r1 fedgw_leases_held)
    b=$(nb_metric r2 fedgw_leases_held)
    case "$a $b" in
    "1 0") echo r1 ;;
    "0 1") echo r2 ;;
    *) echo "fedgw_leases_held: r1 $a, r2 $b"; return 1 ;;
    esac
}
nb_wait $((NB_LEASE * 5 + 15)) "a dc1 replica holds the lease of $NB_PEER_TD" dc1_holds
successor=$(dc1_holds)
t_take=$(($(nb_now_ms) - t0))
r3_gauge=$(nb_metric r3 fedgw_leases_held)
r3_last=$(awk -v ip="${NB_IP[r3]}" -v since="$t0" '$3 == ip && $2 * 1000 >= since { t = $2 } END { printf "%.0f\n", t * 1000 }' "$peer/access.log")
dc1_new() {
    local h body
    for h in r1 r2; do
        body=$(nb_relay "$h" "$NB_PEER_TD") || return 1
        [[ "$(nb_seq <<<"$body")" == 2 ]] || { echo "$h serves sequence $(nb_seq <<<"$body")"; return 1; }
    done
}
nb_wait 30 "r1 and r2 serve sequence 2" dc1_new
t_seq2=$(($(nb_now_ms) - t0))
r3_during=$(nb_relay r3 "$NB_PEER_TD" | nb_seq)
# Keep the cut long enough for r3 to have polled the rogue bundle, if it still polled.
while (($(nb_now_ms) - t0 < cut * 1000)); do sleep 0.5; done
r3_fetches=$(awk -v ip="${NB_IP[r3]}" -v since="$t0" '$3 == ip && $2 * 1000 >= since' "$peer/access.log" | wc -l)

nb_log "healing the cut (the peer still shows r3 the rogue bundle)"
nb_heal_converged "fencing (${cut}s cut)" "all three replicas converged after the heal"
# A few more lease rounds with the rogue bundle on offer to r3.
sleep $((NB_LEASE * 2))
nb_wait 20 "all three replicas converged" nb_converged
r3_after=$(awk -v ip="${NB_IP[r3]}" -v since="$NB_HEALED_AT" '$3 == ip && $2 * 1000 >= since' "$peer/access.log" | wc -l)
for h in "${NB_REPLICAS[@]}"; do
    body=$(nb_relay "$h" "$NB_PEER_TD") || nb_fail "$h's /relay/$NB_PEER_TD after the heal"
    [[ "$body" != *"$ca3"* ]] || nb_fail "$h serves the rogue CA 3 that only r3 could fetch after losing its lease"
    nb_expect_eq "$h's sequence of $NB_PEER_TD after the heal" 2 "$(nb_seq <<<"$body")"
    nb_expect_eq "$h's /relay/$NB_PEER_TD after the heal is r1's" "$(nb_relay r1 "$NB_PEER_TD")" "$body"
done
x5c2=$(nb_json 'd["keys"][0]["x5c"][0]' <<<"$seq2")
nb_relay r3 "$NB_PEER_TD" | grep -qF "$x5c2" || nb_fail "r3 does not serve the peer's CA 2"
history=$(nb_api r1 -f "http://x/v1/bundles/$NB_PEER_TD/history") || nb_fail "no history of $NB_PEER_TD"
seqs=$(nb_json '" ".join(str(v["sequence"]) for v in reversed(d["history"]))' <<<"$history")
nb_expect_eq "the sequences in $NB_PEER_TD's history, oldest first" "1 2" "$seqs"
[[ "$(nb_api r1 -f "http://x/v1/bundles/$NB_PEER_TD")" != *"$ca3"* ]] || nb_fail "the stored bundle holds CA 3"
rm -rf "$peer/www/by-client"
nb_reader_stop
nb_revisions_stop
read -r n_rev total_rev first_rev < <(nb_regressions "$revs" per-replica)
((n_rev == 0)) || nb_fail "a replica's global revision went backwards ($n_rev times in $total_rev reads), first: $first_rev"
read -r n_own total own_first < <(nb_regressions "$reads" per-replica)
((n_own == 0)) || nb_fail "a replica's served sequence went backwards ($n_own times), first: $own_first"
read -r n_all _ all_first < <(nb_regressions "$reads")
[[ "$seq1" != "" ]] || nb_fail "no sequence 1 bundle before the cut"
lost=$((r3_last > t0 ? r3_last - t0 : 0))
# Its leases ran out by its own clock: it polls no more than a lease time (plus a
# fetch) after the cut.
((lost <= NB_LEASE * 1000 + 2500)) ||
    nb_fail "r3 still polled the peer $(nb_secs "$lost") after it was cut off the database (lease_time ${NB_LEASE}s)"
grep -c 'lease_lost' "$NB_WORK/r3/fedgw.log" >"$NB_WORK/r3-lease-lost" || true
nb_measure "dc1 ($successor) took the lease $(nb_secs "$t_take") after the cut, served sequence 2 after $(nb_secs "$t_seq2"); r3 served sequence $r3_during meanwhile; r3 polled the peer $r3_fetches times during the ${cut}s cut (last $(nb_secs "$lost") after it) and $r3_after times after the heal; converged $(nb_secs "$NB_CONVERGE_MS") after the heal; lease_lost lines in r3's log: $(cat "$NB_WORK/r3-lease-lost"); r3's own fedgw_leases_held once dc1 held the lease: $r3_gauge"
nb_measure "client alternating between replicas: $total reads, per-replica regressions 0, cross-replica inversions $n_all${all_first:+ (first: $all_first)}; revisions: $total_rev reads, never backwards"
nb_log "PASS fencing"

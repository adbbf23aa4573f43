#!/usr/bin/env bash
# pg-restart: restart PostgreSQL (pg_ctl restart -m fast) while a stream of 100 admin
# PUTs of distinct operator bundles (op-N.test, each a CA made by openssl) runs against
# r1. Every PUT acknowledged with 200 is afterwards held, with its own CA, by every
# replica; refused ones (503 store_unavailable) may be absent; no other answer is
# allowed. All replicas converge to the same revision and bundles.
set -euo pipefail
# shellcheck source=testbed/netns/lib.sh
source "$(dirname "$0")/../lib.sh"
count=${NETNS_PUTS:-100}
restart_at=${NETNS_RESTART_AT:-20}
nb_up
ops="$NB_WORK/ops"
mkdir -p "$ops"
for ((i = 1; i <= count; i++)); do
    nb_ca "$ops/op-$i.pem" "$ops/op-$i.key" "op-$i CA" "op-$i.test"
done
nb_wait 20 "all three replicas converged before the stream" nb_converged

results="$NB_WORK/puts.log"
: >"$results"
t0=$(nb_now_ms)
restart_pid=""
for ((i = 1; i <= count; i++)); do
    if ((i == restart_at)); then
        nb_log "pg_ctl restart -m fast during the stream (after $((i - 1)) PUTs)"
        t_restart=$(nb_now_ms)
        (
            nb_pg_ctl restart -m fast -w -t 60 >"$NB_WORK/pg-restart.out" 2>&1
            nb_now_ms >"$NB_WORK/pg-restarted"
        ) &
        restart_pid=$!
    fi
    answer=$(nb_put r1 "op-$i.test" "$ops/op-$i.pem")
    printf '%s %s %s\n' "$i" "$(nb_now_ms)" "$answer" >>"$results"
    sleep 0.05
done
t_stream=$(($(nb_now_ms) - t0))
wait "$restart_pid" || nb_fail "pg_ctl restart failed: $(cat "$NB_WORK/pg-restart.out")"
t_pg=$(($(cat "$NB_WORK/pg-restarted") - t_restart))

acked=$(awk '$3 == 200 { print $1 }' "$results" | tr '\n' ' ')
refused=$(awk '$3 == 503 { print $1 }' "$results" | tr '\n' ' ')
others=$(awk '$3 != 200 && $3 != 503' "$results")
[[ -z "$others" ]] || nb_fail "PUT answers other than 200 and 503: $(head -n 3 <<<"$others")"
grep ' 503 ' "$results" | grep -v '"store_unavailable"' | head -n 1 | grep -q . &&
    nb_fail "a 503 without code store_unavailable: $(grep ' 503 ' "$results" | grep -v '"store_unavailable"' | head -n 1)"
n_acked=$(wc -w <<<"$acked")
n_refused=$(wc -w <<<"$refused")
((n_acked > 0)) || nb_fail "no PUT was acknowledged"
nb_wait 40 "all three replicas converged after the restart" nb_converged
t_conv=$(($(nb_now_ms) - t0))

# Each acknowledged op-N.test, on every replica, with its own CA.
for h in "${NB_REPLICAS[@]}"; do
    nb_api "$h" -f http://x/v1/bundles >"$NB_WORK/bundles-$h.json" || nb_fail "$h's /v1/bundles"
    missing=$("$NB_PYTHON" - "$NB_WORK/bundles-$h.json" "$ops" "$acked" <<'PY'
import base64, json, sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
held = {b["trust_domain"]: b["bundle"] for b in json.load(open(sys.argv[1]))["bundles"]}
bad = []
for n in sys.argv[3].split():
    td = f"op-{n}.test"
    with open(f"{sys.argv[2]}/op-{n}.pem", "rb") as f:
        der = base64.b64encode(x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)).decode()
    if td not in held:
        bad.append(f"{td} missing")
    elif [k.get("x5c", [None])[0] for k in held[td]["keys"]] != [der]:
        bad.append(f"{td} holds other keys")
print(" ".join(bad))
PY
) || nb_fail "checking $h's bundles failed"
    [[ -z "$missing" ]] || nb_fail "$h lost acknowledged PUTs: $missing"
done
present_refused=0
for i in $refused; do
    if nb_has_bundle r1 "op-$i.test"; then present_refused=$((present_refused + 1)); fi
done
nb_measure "$count PUTs in $(nb_secs "$t_stream"), PostgreSQL restarted after PUT $((restart_at - 1)) (pg_ctl restart took $(nb_secs "$t_pg")); $n_acked acknowledged (all present on r1, r2, r3), $n_refused refused with 503 store_unavailable ($present_refused of them present anyway); converged $(nb_secs "$t_conv") after the stream began"
nb_log "PASS pg-restart"

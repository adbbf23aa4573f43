#!/usr/bin/env bash
# X.509 CA rotation across a federation of real SPIRE servers: how long after
# `spire-server localauthority x509 activate` in trust domain A a workload of trust
# domain B accepts an X509-SVID of A's new CA, and how long A's prepared CA takes to
# reach B before that, with the SPIRE servers federating directly (each polls the
# other's bundle endpoint) and through fedgw (each polls its own fedgw's
# /relay/<td>, the fedgws poll each other), with the same refresh hint on every
# bundle endpoint. Both set-ups run side by side in one run (SPIRE servers, agents,
# fedgws and go-spiffe workloads from testbed/spire/lib.sh) and take turns rotating.
# Called by bench/run.sh; prints a markdown section on standard output, progress on
# standard error. See docs/benchmarks.md.
#
#   bench/spire_rotation.sh
#
# Environment: FEDGW (the fedgw binary; lib.sh builds a debug one when unset),
# ROTATIONS (per set-up, 8; about 8 minutes in all), ROTATION_HINT (the refresh hint
# every bundle endpoint serves, 1m: SPIRE raises shorter hints to 1 minute, and polls
# at a quarter of the hint), SP_KEEP=1 (keep the work directory: configurations, logs
# and every rotation's timestamps).
#
# One rotation, A -> B:
#   1. A random pause of up to one SPIRE poll period (15 s at 1m), so that rotations
#      paced by the polls do not all start at the same point of the pollers'
#      schedules; then `localauthority x509 prepare` in A. Background probes, each
#      every 0.2 s, note when A's new CA is first seen: served by A's bundle
#      endpoint (SPIRE's own, or A's fedgw's local bundle), relayed by B's fedgw
#      (through fedgw only), held by B's SPIRE server (`bundle list`), and handed by
#      B's agent to B's workloads (`spire-agent api fetch x509` as B's workload, its
#      federated bundle).
#   2. Once B's SPIRE server holds it: `localauthority x509 activate` of the new CA
#      and `taint` of the old one in A (the clock starts before activate), so that
#      A's agent replaces its SVIDs on its next sync instead of at their half-life.
#      Every 0.2 s a probe fetches A's workload SVID from A's agent and, once it is
#      signed by the new CA (its authority key ID is the new authority's ID), presents
#      it with openssl to a go-spiffe mTLS server of B that has run all along (its
#      SVID and bundles streamed from B's agent, authorising exactly A's workload ID).
#      "Accepted" is that server completing the handshake and answering.
#   3. Once A's bundle endpoint serves with an SVID of the new CA, the old CA is
#      revoked, so that each rotation starts from one CA.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/spire/lib.sh
source "$here/../testbed/spire/lib.sh"

runs=${ROTATIONS:-8}
hint=${ROTATION_HINT:-1m}
# Longest wait for any one event of a rotation, in seconds.
deadline=120
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "ROTATIONS must be a positive integer, not '$runs'" >&2; exit 2; }
# The hint in seconds, as SPIRE stores it with a fetched bundle.
hint_s=$(python3 -c 'import re, sys
m = re.fullmatch(r"([1-9][0-9]*)(s|m|h)", sys.argv[1])
print(int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]] if m else "")' "$hint")
[[ -n "$hint_s" ]] || { echo "ROTATION_HINT must be a whole number of s, m or h (such as 1m), not '$hint'" >&2; exit 2; }
# SPIRE's poll period in microseconds: a quarter of the hint, never below 1 minute.
spire_poll_us=$(((hint_s > 60 ? hint_s : 60) * 250000))

# Standard output is the markdown section only; lib.sh's progress goes to stderr.
exec 3>&1 1>&2

# Domains (lib.sh's indices): through fedgw, west -> east; directly, north -> south.
setups=(fedgw direct)
watchers=()
declare -A setup_a=([fedgw]=0 [direct]=2) setup_b=([fedgw]=1 [direct]=3) server_addr=()

# bench_now: microseconds since the epoch.
bench_now() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# bench_secs6 MICROSECONDS: seconds with six decimals (for sleep).
bench_secs6() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

# bench_pace START: sleep until 0.2 s after START (microseconds), at once if past.
bench_pace() {
    local left=$((200000 - ($(bench_now) - $1)))
    ((left <= 0)) || sleep "$(bench_secs6 "$left")"
}

# bench_key_id subject|authority: the subject or authority key identifier of the
# certificate on stdin (PEM), lower-case hex without colons: SPIRE's authority IDs.
bench_key_id() {
    local ext
    case "$1" in
    subject) ext=subjectKeyIdentifier ;;
    authority) ext=authorityKeyIdentifier ;;
    esac
    openssl x509 -noout -ext "$ext" 2>/dev/null |
        awk 'NR == 2 { sub(/^[ \t]*(keyid:)?/, ""); gsub(/:/, ""); print tolower($0); exit }'
}

# bench_x509_authorities I: the x5c (base64 DER) of each X.509 authority in domain
# i's own bundle, one a line.
bench_x509_authorities() {
    sp_spire_server "$1" bundle show -format spiffe |
        python3 -c 'import json, sys
for k in json.load(sys.stdin)["keys"]:
    if k.get("use") == "x509-svid":
        print(k["x5c"][0])'
}

# bench_authority I SLOT: the ID of domain i's X.509 authority in SLOT (active,
# prepared, old).
bench_authority() {
    sp_spire_server "$1" localauthority x509 show -output json |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], {}).get("authority_id", ""))' "$2"
}

# --- what the probes look at; each takes the new CA's x5c as its last argument ------

# bench_served_has URL X5C: the bundle served at URL lists X5C.
bench_served_has() {
    local out
    out=$(curl -sk --max-time 2 "$1") && [[ "$out" == *"$2"* ]]
}

# bench_spire_has I TD X5C: SPIRE server i holds a bundle of TD that lists X5C.
bench_spire_has() {
    local out
    out=$(sp_spire_server "$1" bundle list -id "spiffe://$2" -format spiffe 2>/dev/null) && [[ "$out" == *"$3"* ]]
}

# bench_agent_has I DIR X5C: domain i's agent hands its workload (the spire-agent
# CLI, registered as one) a federated bundle that lists X5C.
bench_agent_has() {
    local out
    rm -rf "$2" && mkdir -p "$2"
    "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$(sp_agent_sock "$1")" -write "$2" >/dev/null 2>&1 || return 1
    out=$(cat "$2"/federated_bundle.0.*.pem 2>/dev/null) || return 1
    out=${out//$'\n'/}
    [[ "$out" == *"$3"* ]]
}

# bench_watch DIR NAME CHECK...: in the background, once DIR/needle exists, run CHECK
# with its content every 0.2 s until it succeeds, then write the time (microseconds)
# to DIR/NAME; give up after $deadline seconds.
bench_watch() {
    local dir=$1 name=$2
    shift 2
    (
        end=$((SECONDS + deadline))
        until [[ -s "$dir/needle" ]]; do
            ((SECONDS < end)) || exit 1
            sleep 0.05
        done
        needle=$(<"$dir/needle")
        while ((SECONDS < end)); do
            start=$(bench_now)
            if "$@" "$needle"; then
                bench_now >"$dir/$name"
                exit 0
            fi
            bench_pace "$start"
        done
        exit 1
    ) &
    watchers+=("$!:$name")
}

# bench_stop_watchers: stop the current rotation's probes (on a failure).
bench_stop_watchers() {
    local w
    for w in "${watchers[@]}"; do
        kill "${w%%:*}" 2>/dev/null || true
    done
}

# bench_endpoint_svid_by I AUTHORITY: domain i's bundle endpoint (SPIRE's or fedgw's
# https_spiffe listener) serves with an X509-SVID signed by AUTHORITY.
bench_endpoint_svid_by() {
    local pem
    pem=$(openssl s_client -connect "127.0.0.1:${SP_SPIFFE_PORT[$1]}" </dev/null 2>/dev/null) || return 1
    [[ "$(bench_key_id authority <<<"$pem")" == "$2" ]]
}

# bench_accepted A B ADDR DIR: the X509-SVID domain a's agent issues its workload
# (fetched into DIR) is presented to the mTLS server of domain b at ADDR, which answers.
bench_accepted() {
    local out
    out=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -quiet -connect "$3" \
        -cert "$4/svid.0.pem" -key "$4/svid.0.key" 2>/dev/null) || return 1
    [[ "$out" == *"hello spiffe://${SP_TD[$1]}/workload from spiffe://${SP_TD[$2]}/workload"* ]]
}

# bench_fetch_svid I DIR: domain i's agent's X509-SVID for its workload, into DIR.
bench_fetch_svid() {
    rm -rf "$2" && mkdir -p "$2"
    "$SPIRE_BIN/spire-agent" api fetch x509 -socketPath "$(sp_agent_sock "$1")" -write "$2" >/dev/null 2>&1
}

# --- set-up ------------------------------------------------------------------------

# bench_direct_conf I: domain i's server.conf (lib.sh's, which federates with nobody
# past the fedgw domains) with a bundle endpoint (https_spiffe: served with the
# server's own SVID, spiffe://<td>/spire/server) on SP_SPIFFE_PORT[i], no fedgw there.
bench_direct_conf() {
    local i=$1 conf=${SP_DIR[$1]}/server/server.conf
    sp_write_server_conf "$i"
    python3 - "$conf" "${SP_SPIFFE_PORT[i]}" "$hint" <<'PY' || sp_fail "no empty federation block in $conf to add a bundle endpoint to"
import sys
path, port, hint = sys.argv[1:]
text = open(path).read()
anchor = "    federation {\n    }\n"
if text.count(anchor) != 1:
    sys.exit(1)
endpoint = f"""    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {port}
            refresh_hint = "{hint}"
            profile "https_spiffe" {{}}
        }}
    }}
"""
open(path, "w").write(text.replace(anchor, endpoint))
PY
}

# bench_federate_direct I J: SPIRE server i polls SPIRE server j's bundle endpoint
# (https_spiffe), bootstrapped with j's bundle. Created through the API rather than in
# server.conf: the relationship and its bootstrap bundle are stored together, so the
# first fetch succeeds at once (a configured relationship without its bundle fails,
# and SPIRE retries it only after its 1-minute floor).
bench_federate_direct() {
    local i=$1 j=$2 file=$SP_WORK/bootstrap-${sp_names[$2]}-for-${sp_names[$1]}.json
    sp_spire_server "$j" bundle show -format spiffe >"$file" || sp_fail "bundle show of ${SP_TD[j]}"
    sp_spire_server "$i" federation create -trustDomain "${SP_TD[j]}" \
        -bundleEndpointURL "https://127.0.0.1:${SP_SPIFFE_PORT[j]}" -bundleEndpointProfile https_spiffe \
        -endpointSpiffeID "spiffe://${SP_TD[j]}/spire/server" \
        -trustDomainBundlePath "$file" -trustDomainBundleFormat spiffe >/dev/null ||
        sp_fail "federation create ${SP_TD[j]} on the SPIRE server of ${SP_TD[i]}"
}

# bench_federate_fedgw I J: fedgw i polls fedgw j over https_spiffe, bootstrapped with
# SPIRE j's bundle.
bench_federate_fedgw() {
    local i=$1 j=$2 file=${SP_DIR[$1]}/fedgw/bootstrap-${sp_names[$2]}.json
    sp_spire_server "$j" bundle show -format spiffe >"$file" || sp_fail "bundle show of ${SP_TD[j]}"
    sp_fedgw "$i" federation create "${SP_TD[j]}" \
        --bundle-endpoint-url "https://127.0.0.1:${SP_SPIFFE_PORT[j]}/" --bundle-endpoint-profile https_spiffe \
        --endpoint-spiffe-id "spiffe://${SP_TD[j]}/fedgw" --trust-domain-bundle-path "$file" >/dev/null ||
        sp_fail "federation create ${SP_TD[j]} on the fedgw of ${SP_TD[i]}"
}

# bench_stored_hint I TD: the refresh hint (seconds) of the bundle of TD that SPIRE
# server i holds, as it fetched it.
bench_stored_hint() {
    sp_spire_server "$1" bundle list -id "spiffe://$2" -format spiffe |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get("spiffe_refresh_hint", ""))'
}

bench_up() {
    local i setup a b
    SP_FEDERATED=2
    export SP_HINT=$hint
    sp_init 4
    trap 'bench_stop_watchers; sp_cleanup' EXIT
    sp_web_pki
    bench_direct_conf 2
    bench_direct_conf 3
    sp_log "starting SPIRE: 4 servers and agents in $SP_WORK"
    for ((i = 0; i < 4; i++)); do
        sp_start_server "$i"
        sp_start_agent "$i"
    done
    sp_log "federating ${SP_TD[2]} and ${SP_TD[3]} directly (SPIRE bundle endpoints, https_spiffe)"
    bench_federate_direct 2 3
    bench_federate_direct 3 2
    sp_log "federating ${SP_TD[0]} and ${SP_TD[1]} through fedgw (SPIRE -> own fedgw /relay, fedgw <-> fedgw https_spiffe)"
    sp_entry 0 "$FEDGW" fedgw
    sp_entry 1 "$FEDGW" fedgw
    sp_start_fedgw 0
    sp_start_fedgw 1
    bench_federate_fedgw 0 1
    bench_federate_fedgw 1 0
    # The fedgw set-up's SPIRE servers tried their relays as they started, in vain (no
    # fedgw yet), and try again after SPIRE's 1-minute floor; from the first fetch
    # that succeeds on, every SPIRE server polls at a quarter of the hint.
    for i in 0 1 2 3; do
        local j=$((i ^ 1))
        sp_wait 150 "SPIRE server of ${SP_TD[i]} holds the bundle of ${SP_TD[j]}" sp_spire_has "$i" "${SP_TD[j]}"
        [[ "$(bench_stored_hint "$i" "${SP_TD[j]}")" == "$hint_s" ]] ||
            sp_fail "SPIRE server of ${SP_TD[i]} holds the bundle of ${SP_TD[j]} with refresh hint '$(bench_stored_hint "$i" "${SP_TD[j]}")', not $hint_s s"
    done
    for setup in "${setups[@]}"; do
        a=${setup_a[$setup]}
        b=${setup_b[$setup]}
        # A's workload SVID comes to the probe through the spire-agent CLI; B's
        # workloads are the go-spiffe server and the CLI looking at B's bundles.
        sp_entry "$a" "$SPIRE_BIN/spire-agent" workload
        sp_entry "$b" "$SPIRE_BIN/spire-agent" workload "${SP_TD[a]}"
        sp_entry "$b" "$PEER_BIN/fedgw-peer" workload "${SP_TD[a]}"
        sp_mtls_server "$b" "spiffe://${SP_TD[a]}/workload"
        server_addr[$setup]=$SP_ADDR
        # Before any rotation: B's server accepts A's workload SVID of the current CA.
        sp_wait 60 "an SVID of ${SP_TD[a]} issued to its workload" bench_fetch_svid "$a" "$SP_WORK/svid-$setup"
        sp_wait 60 "the workload of ${SP_TD[b]} accepts the workload SVID of ${SP_TD[a]} ($setup)" \
            bench_accepted_now "$setup"
    done
}

# bench_accepted_now SETUP: B's server accepts the workload SVID A's agent issues now.
bench_accepted_now() {
    local a=${setup_a[$1]} b=${setup_b[$1]} dir=$SP_WORK/svid-$1
    bench_fetch_svid "$a" "$dir" && bench_accepted "$a" "$b" "${server_addr[$1]}" "$dir"
}

# --- one rotation ------------------------------------------------------------------

# bench_rotate SETUP RUN: one rotation A -> B; appends "SETUP RUN EVENT MICROSECONDS"
# lines to $SP_WORK/results (a_rotated and accepted from activate, the rest from
# prepare).
bench_rotate() {
    local setup=$1 run=$2 a=${setup_a[$1]} b=${setup_b[$1]} dir old new before
    local t_prepare t_needle t_activate t_rotated="" t_accepted="" start aki id x5c pause
    dir=$SP_WORK/$setup-$run
    mkdir -p "$dir"
    watchers=()
    old=$(bench_authority "$a" active)
    [[ -n "$old" ]] || sp_fail "no active X.509 authority in ${SP_TD[a]}"
    before=$(bench_x509_authorities "$a") || sp_fail "bundle show of ${SP_TD[a]}"

    # A random pause of up to one SPIRE poll period first: rotations paced by the
    # polls would otherwise start at the same point of the pollers' schedules each time.
    pause=$(((RANDOM * 32768 + RANDOM) % spire_poll_us))
    sleep "$(bench_secs6 "$pause")"

    bench_watch "$dir" a_served bench_served_has "https://127.0.0.1:${SP_SPIFFE_PORT[a]}/"
    if [[ "$setup" == fedgw ]]; then
        bench_watch "$dir" b_relay bench_served_has "https://127.0.0.1:${SP_SPIFFE_PORT[b]}/relay/${SP_TD[a]}"
    fi
    bench_watch "$dir" b_server bench_spire_has "$b" "${SP_TD[a]}"
    bench_watch "$dir" b_agent bench_agent_has "$b" "$dir/b-agent"

    t_prepare=$(bench_now)
    sp_spire_server "$a" localauthority x509 prepare >/dev/null || sp_fail "localauthority x509 prepare in ${SP_TD[a]}"
    # The new CA's x5c, for the probes (which start once they have it): the authority
    # in A's bundle that was not there before; checked below to be the prepared one.
    x5c=$(bench_x509_authorities "$a" | grep -vxF -f <(printf '%s\n' "$before") || true)
    [[ -n "$x5c" && "$x5c" != *$'\n'* ]] || sp_fail "the bundle of ${SP_TD[a]} gained not one CA at prepare: '$x5c'"
    printf '%s' "$x5c" >"$dir/needle"
    t_needle=$(bench_now)
    new=$(bench_authority "$a" prepared)
    [[ -n "$new" && "$new" != "$old" ]] || sp_fail "no prepared X.509 authority in ${SP_TD[a]}"
    id=$(base64 -d <<<"$x5c" | openssl x509 -inform DER | bench_key_id subject)
    [[ "$id" == "$new" ]] || sp_fail "the CA added to the bundle of ${SP_TD[a]} is $id, not the prepared $new"

    sp_wait "$deadline" "SPIRE server of ${SP_TD[b]} holds the prepared CA $new of ${SP_TD[a]} ($setup)" \
        test -s "$dir/b_server"

    t_activate=$(bench_now)
    sp_spire_server "$a" localauthority x509 activate -authorityID "$new" >/dev/null || sp_fail "activate $new in ${SP_TD[a]}"
    sp_spire_server "$a" localauthority x509 taint -authorityID "$old" >/dev/null || sp_fail "taint $old in ${SP_TD[a]}"
    while [[ -z "$t_accepted" ]]; do
        start=$(bench_now)
        (((start - t_activate) / 1000000 < deadline)) ||
            sp_fail "no SVID of the new CA $new of ${SP_TD[a]} accepted by ${SP_TD[b]} within ${deadline}s of activate ($setup; A's agent rotated: ${t_rotated:-no})"
        if bench_fetch_svid "$a" "$dir/a-svid"; then
            aki=$(bench_key_id authority <"$dir/a-svid/svid.0.pem")
            if [[ "$aki" == "$new" ]]; then
                [[ -n "$t_rotated" ]] || t_rotated=$(bench_now)
                if bench_accepted "$a" "$b" "${server_addr[$setup]}" "$dir/a-svid"; then
                    t_accepted=$(bench_now)
                    break
                fi
            fi
        fi
        bench_pace "$start"
    done

    local w pid name
    for w in "${watchers[@]}"; do
        pid=${w%%:*}
        name=${w#*:}
        wait "$pid" || sp_fail "$name: A's new CA not seen within ${deadline}s ($setup, run $run)"
    done
    {
        for name in a_served b_relay b_server b_agent; do
            [[ -f "$dir/$name" ]] || continue
            echo "$setup $run $name $(($(<"$dir/$name") - t_prepare))"
        done
        echo "$setup $run probes $((t_needle - t_prepare))"
        echo "$setup $run a_rotated $((t_rotated - t_activate))"
        echo "$setup $run accepted $((t_accepted - t_activate))"
        echo "$setup $run total $((t_accepted - t_prepare))"
    } >>"$SP_WORK/results"
    sp_log "$setup run $run: B's SPIRE server held the new CA $(bench_secs $(($(<"$dir/b_server") - t_prepare))) s after prepare; accepted $(bench_secs $((t_accepted - t_activate))) s after activate"

    # Back to one CA: once A's bundle endpoint serves an SVID of the new CA (its
    # SPIRE server's or fedgw's, rotated on the taint), the old CA is revoked.
    sp_wait 60 "the bundle endpoint of ${SP_TD[a]} serves an SVID of the new CA $new" bench_endpoint_svid_by "$a" "$new"
    sp_spire_server "$a" localauthority x509 revoke -authorityID "$old" >/dev/null || sp_fail "revoke $old in ${SP_TD[a]}"
}

# bench_secs MICROSECONDS: seconds with one decimal.
bench_secs() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }

# --- run ---------------------------------------------------------------------------

started=$SECONDS
sp_build
bench_up
setup_s=$((SECONDS - started))
sp_log "set-up took $setup_s s; $runs rotations per set-up, refresh hint $hint"
: >"$SP_WORK/results"
for ((r = 1; r <= runs; r++)); do
    for setup in "${setups[@]}"; do
        bench_rotate "$setup" "$r"
    done
done
total_s=$((SECONDS - started))
sp_log "done in $total_s s"

# SPIRE built from its module (scripts/peers.sh) calls itself 1.13.3-dev-unk.
spire_version=$("$SPIRE_BIN/spire-server" --version 2>&1 | head -n 1)
spire_version="SPIRE ${spire_version%-dev-unk}"
fedgw_version=$("$FEDGW" --version 2>&1 | head -n 1)
python3 - "$SP_WORK/results" "$runs" "$hint" "$hint_s" "$spire_version" "$fedgw_version" "$setup_s" "$total_s" >&3 <<'PY'
import statistics, sys
path, runs, hint, hint_s, spire, fedgw, setup_s, total_s = sys.argv[1:]
hint_s = int(hint_s)
rotations = {}
for line in open(path):
    setup, run, event, us = line.split()
    rotations.setdefault((setup, run), {})[event] = int(us) / 1e6

def hops(r, setup):
    """Each step's own share of one rotation, in seconds."""
    before_spire = r["b_relay"] if setup == "fedgw" else r["a_served"]
    out = {
        "publish": r["a_served"],
        "spire_poll": r["b_server"] - before_spire,
        "agent_sync": r["b_agent"] - r["b_server"],
        "accept": r["accepted"] - r["a_rotated"],
    }
    if setup == "fedgw":
        out["fedgw_poll"] = r["b_relay"] - r["a_served"]
    return out

values = {}
for (setup, _), r in rotations.items():
    for event, v in list(r.items()) + [("hop_" + k, v) for k, v in hops(r, setup).items()]:
        values.setdefault((setup, event), []).append(v)

def cell(setup, event):
    v = values.get((setup, event))
    if not v:
        return "—"
    return f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})"

def table(head, rows):
    print(f"| {head} | SPIRE ↔ SPIRE directly | SPIRE → fedgw → fedgw → SPIRE |")
    print("|---|---|---|")
    for event, label in rows:
        print(f"| {label} | {cell('direct', event)} | {cell('fedgw', event)} |")

spire_poll = max(hint_s, 60) / 4
fedgw_poll = hint_s / 4
probes = [r["probes"] for r in rotations.values()]
print(f"{runs} rotations per set-up, the set-ups taking turns; `refresh_hint` {hint} on every bundle "
      f"endpoint, so SPIRE polls every {spire_poll:g} s and fedgw every {fedgw_poll:g} s ± 10 % "
      f"({spire}, {fedgw}). Seconds, median (min–max); each event as first seen by a probe that "
      "runs every 0.2 s. The probes of a prepare start once the harness has read the new CA "
      f"from A's bundle, {statistics.median(probes):.1f} s after it ({min(probes):.1f}–"
      f"{max(probes):.1f}), which is the floor of every figure timed from prepare.")
print()
table("event", [
    ("accepted", "**activate → a workload of B accepts an SVID of A's new CA**"),
    ("a_rotated", "activate → A's agent issues SVIDs of the new CA"),
    ("a_served", "prepare → A's bundle endpoint serves the new CA (SPIRE's own; A's fedgw's)"),
    ("b_relay", "prepare → B's fedgw relays it (`/relay/<A>`)"),
    ("b_server", "prepare → B's SPIRE server holds it (`bundle list`); activate follows"),
    ("b_agent", "prepare → B's agent hands it to B's workloads"),
    ("total", "prepare → accepted (the whole rotation as run here)"),
])
print()
print("Each step's own share (the difference of two events above, per rotation):")
print()
table("step (what paces it)", [
    ("hop_publish", "A publishes the new CA (SPIRE: its datastore cache, 1 s; fedgw: A's agent's next sync, every 5 s ± 10 %, pushed over the Workload API)"),
    ("hop_fedgw_poll", f"B's fedgw fetches it from A's fedgw (fedgw's poll, every {fedgw_poll:g} s ± 10 %)"),
    ("hop_spire_poll", f"B's SPIRE server fetches it, from A's SPIRE server or from B's fedgw (SPIRE's poll, every {spire_poll:g} s)"),
    ("hop_agent_sync", "B's agent hands it to B's workloads (its next sync, every 5 s ± 10 %)"),
    ("a_rotated", "activate → A's agent rotates its SVIDs to the new CA (its next sync after the taint)"),
    ("hop_accept", "B's workload accepts one (an mTLS handshake, or B's agent's sync if still due)"),
])
print()
print(f"Set-up {setup_s} s, the whole run {total_s} s.")
PY

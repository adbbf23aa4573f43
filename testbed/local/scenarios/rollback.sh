#!/usr/bin/env bash
# Rolled-back sequence: a static HTTPS server that is not fedgw (Python's http.server
# with ssl) serves a foreign trust domain's bundle with spiffe_sequence 5, then one
# with sequence 4 and another CA. alpha refuses the second (its reason in `fedgw
# status`, sequence_regression in fedgw_bundle_rejections_total) and keeps serving
# the first.
set -euo pipefail
# shellcheck source=testbed/local/scenarios/helpers.sh
source "$(dirname "$0")/helpers.sh"
tb_need_tools
tb_up 1

foreign=static.testbed.localhost
site="$TB_WORK/static"
mkdir -p "$site/www"
# The static server's Web PKI, and two CAs of the foreign domain, all by openssl.
tb_openssl_ca "$site/web-ca.pem" "$site/web-ca.key" "static web CA"
tb_openssl_leaf "$site/server.pem" "$site/server.key" "$site/web-ca.pem" "$site/web-ca.key" \
    "DNS:localhost,IP:127.0.0.1"
tb_openssl_ca "$site/ca1.pem" "$site/ca1.key" "$foreign CA 1" "$foreign"
tb_openssl_ca "$site/ca2.pem" "$site/ca2.key" "$foreign CA 2" "$foreign"
tb_bundle_json "$site/www/bundle.json" --sequence 5 --refresh-hint 2 "$site/ca1.pem"

port=$(tb_free_port)
"$TB_PYTHON" "$tb_scenarios/https_server.py" "$port" "$site/server.pem" "$site/server.key" \
    "$site/www" 2>>"$site/server.log" &
TB_EXTRA_PIDS+=("$!")
tb_wait 10 "the static HTTPS server listening on 127.0.0.1:$port" tb_port_busy "$port"

out=$(tb_fedgw 0 federation create --trust-domain "$foreign" \
    --bundle-endpoint-url "https://localhost:$port/bundle.json" \
    --bundle-endpoint-profile https_web --extra-ca-roots "$site/web-ca.pem" --proxy off 2>&1) ||
    tb_fail "federation create $foreign failed: $out"

ca1=$(tb_pem_of "$site/ca1.pem")
sequence() { tb_status_line 0 "$foreign" | awk '{ print $4 }'; }
tb_wait 15 "alpha holds $foreign's CA 1" tb_holds 0 "$foreign" "$ca1"
tb_expect_eq "alpha's sequence of $foreign" 5 "$(sequence)"
tb_expect_eq "alpha's $foreign state" healthy "$(tb_state 0 "$foreign")"
relay_before=$(tb_relay 0 "$foreign") || tb_fail "alpha's /relay/$foreign"

tb_log "the static server now serves sequence 4 with another CA"
tb_bundle_json "$site/www/bundle.json" --sequence 4 --refresh-hint 2 "$site/ca2.pem"

rejected() {
    local line
    line=$(tb_metrics 0 | grep '^fedgw_bundle_rejections_total{' |
        grep "trust_domain=\"$foreign\"" | grep 'reason="sequence_regression"')
    [[ -n "$line" && "${line##* }" != 0 ]] || {
        echo "no fedgw_bundle_rejections_total sample for $foreign and sequence_regression above 0: ${line:-none}"
        return 1
    }
}
tb_wait 15 "fedgw_bundle_rejections_total{trust_domain=$foreign,reason=sequence_regression} > 0" rejected
# The status names the refusal by its code, as the metric's label does, then the message.
refused() {
    local line
    line=$(tb_status_line 0 "$foreign")
    [[ "$(awk '{ print $3 }' <<<"$line")" == failing && "$line" == *"sequence_regression: "*"spiffe_sequence went down from 5 to 4"* ]] || {
        echo "status row: ${line:-none}"
        return 1
    }
}
tb_wait 10 "alpha's status shows $foreign failing with 'sequence_regression: … spiffe_sequence went down from 5 to 4'" refused

# The stored bundle is unchanged.
tb_expect_eq "alpha's sequence of $foreign after the rollback" 5 "$(sequence)"
tb_holds 0 "$foreign" "$ca1" >/dev/null || tb_fail "after the rollback: $(tb_holds 0 "$foreign" "$ca1")"
tb_expect_eq "alpha's /relay/$foreign after the rollback" "$relay_before" "$(tb_relay 0 "$foreign")"
tb_scenario_done rollback

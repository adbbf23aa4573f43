# shellcheck shell=bash
# What the scenarios use besides testbed/local/lib.sh: independent clients and tools
# (curl, openssl, the Python venv that ./scripts/test.sh installs), which run.sh does
# not need.

# shellcheck source=testbed/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

tb_scenarios=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_PYTHON=${TB_PYTHON:-$tb_repo/.venv/bin/python}

tb_need_tools() {
    local tool
    for tool in curl openssl; do
        command -v "$tool" >/dev/null || tb_fail "$tool is needed by the scenarios (./scripts/test.sh installs it)"
    done
    [[ -x "$TB_PYTHON" ]] || tb_fail "$TB_PYTHON is needed (tests/interop/run.sh --setup-only makes it)"
}

# tb_relay_code I TD: the HTTP status of gateway I's https_web /relay/TD, fetched by
# curl trusting only I's development Web CA.
tb_relay_code() {
    curl --noproxy "*" -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --cacert "$(tb_pki "$1")/web-ca.pem" \
        "https://localhost:${TB_WEB[$1]}/relay/$2"
}

# tb_relay I TD: the body of gateway I's /relay/TD (fails unless 200).
tb_relay() {
    curl --noproxy "*" -sf --max-time 5 --cacert "$(tb_pki "$1")/web-ca.pem" \
        "https://localhost:${TB_WEB[$1]}/relay/$2"
}

# tb_metrics I: gateway I's Prometheus metrics, over its admin socket.
tb_metrics() {
    curl --noproxy "*" -sf --max-time 5 --unix-socket "${TB_DIR[$1]}/admin.sock" http://localhost/metrics
}

# tb_openssl_ca CERT KEY SUBJECT_CN SPIFFE_TD: a self-signed P-256 CA made by openssl;
# with SPIFFE_TD, it carries the trust domain's SPIFFE ID as URI SAN (openssl_ca).
tb_openssl_ca() { openssl_ca "$@" || tb_fail "openssl could not make the CA $1"; }

# tb_openssl_leaf CERT KEY CA_CERT CA_KEY SAN: a P-256 leaf (serverAuth, clientAuth)
# issued by CA with subjectAltName SAN (e.g. URI:spiffe://td/x or IP:127.0.0.1).
tb_openssl_leaf() {
    local cert=$1 key=$2 ca=$3 ca_key=$4 san=$5 ext
    ext=$(mktemp)
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$san" \
        "authorityKeyIdentifier=keyid" >"$ext"
    if ! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$key.new" -out "$cert.csr" -subj "/CN=testbed leaf" 2>/dev/null; then
        tb_fail "openssl could not make a key and request for $cert"
    fi
    if ! openssl x509 -req -in "$cert.csr" -CA "$ca" -CAkey "$ca_key" -CAcreateserial \
        -days 7 -extfile "$ext" -out "$cert.new" 2>/dev/null; then
        tb_fail "openssl could not issue $cert from $ca"
    fi
    rm -f "$ext" "$cert.csr"
    mv "$key.new" "$key"
    mv "$cert.new" "$cert"
}

# tb_bundle_json OUT [--sequence N] [--refresh-hint S] CA.pem...: a SPIFFE bundle
# written by Python's cryptography, replacing OUT atomically.
tb_bundle_json() {
    local out=$1
    shift
    "$TB_PYTHON" "$tb_scenarios/spiffe_bundle.py" "$@" >"$out.new" ||
        tb_fail "spiffe_bundle.py $* failed"
    mv "$out.new" "$out"
}

# tb_pem_of FILE...: the certificates of PEM files as tb_pem prints them.
tb_pem_of() {
    cat "$@" | awk '/-----BEGIN/ { cert = ""; next } /-----END/ { print cert; next } { cert = cert $0 }' | sort
}

# tb_holds I TD EXPECTED: succeed when gateway I holds for TD exactly the
# certificates EXPECTED (as tb_pem_of prints them); print what it holds otherwise.
tb_holds() {
    local held
    held=$(tb_pem "$1" "$2")
    [[ "$held" == "$3" ]] && return 0
    printf '%s holds %s certificate(s) for %s, not the %s expected\n' \
        "${TB_TD[$1]}" "$(grep -c . <<<"$held")" "$2" "$(grep -c . <<<"$3")"
    return 1
}

# tb_scenario_done NAME: the closing line of a passing scenario.
tb_scenario_done() { tb_log "PASS $1"; }

# shellcheck shell=bash
# Shared by testbed/local/lib.sh and testbed/netns/lib.sh: helpers that do not depend
# on either testbed's state. Each returns non-zero on failure; the testbed's own
# wrapper (tb_* or nb_*) turns that into its failure message.

# poll_until SECONDS INTERVAL COMMAND...: run COMMAND every INTERVAL seconds until it
# succeeds; after SECONDS, print COMMAND's last output (stdout and stderr) and fail.
poll_until() {
    local seconds=$1 interval=$2 deadline out
    shift 2
    deadline=$((SECONDS + seconds))
    while :; do
        if out=$("$@" 2>&1); then
            return 0
        fi
        ((SECONDS < deadline)) || {
            printf '%s' "$out"
            return 1
        }
        sleep "$interval"
    done
}

# openssl_ca CERT KEY SUBJECT_CN [SPIFFE_TD]: a self-signed P-256 CA made by openssl;
# with SPIFFE_TD, it carries the trust domain's SPIFFE ID as URI SAN.
openssl_ca() {
    local cert=$1 key=$2 cn=$3 td=${4:-} uri=()
    [[ -z "$td" ]] || uri=(-addext "subjectAltName=URI:spiffe://$td")
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$key" -out "$cert" -days 30 -subj "/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        "${uri[@]}" 2>/dev/null
}

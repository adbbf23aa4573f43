#!/usr/bin/env bash
# Bundle endpoint throughput: the release `fedgw serve` against nginx serving the same
# bundle bytes as a static file, with the same certificate and key, on loopback,
# driven by wrk. Called by bench/run.sh (which builds fedgw and installs nginx and
# wrk); prints a markdown section on standard output, progress on standard error.
#
#   bench/throughput.sh FEDGW_BINARY
#
# Environment: THREADS (wrk threads, 2), CONNECTIONS (64), DURATION (seconds per
# round, 10), ROUNDS (3).
set -euo pipefail

fedgw=${1:?usage: bench/throughput.sh FEDGW_BINARY}
threads=${THREADS:-2}
connections=${CONNECTIONS:-64}
duration=${DURATION:-10}
rounds=${ROUNDS:-3}
td=bench.fedgw.test

say() { printf '%s\n' "$*" >&2; }

tmp=$(mktemp -d)
fedgw_pid=
nginx_pid=
cleanup() {
    [[ -n $fedgw_pid ]] && kill "$fedgw_pid" 2>/dev/null && wait "$fedgw_pid" 2>/dev/null
    [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
# nginx's workers may run as an unprivileged user: they must read the static file.
chmod 755 "$tmp"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One certificate and key for both servers: an ECDSA P-256 leaf for localhost and
# 127.0.0.1, issued by a throwaway CA that only the clients trust. And a SPIFFE CA
# for the served bundle.
say "certificates"
(
    cd "$tmp"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj /CN=fedgw-bench-web-ca -days 2 \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        -out ca.pem 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out leaf.ec 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in leaf.ec -out tls.key
    openssl req -new -key tls.key -subj /CN=localhost -out leaf.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out tls.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out spiffe-ca.key 2>/dev/null
    openssl req -x509 -new -key spiffe-ca.key -subj /CN=bench-spiffe-ca -days 2 \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        -addext "subjectAltName=URI:spiffe://$td" -out bundle.pem 2>/dev/null
)

fedgw_port=$(free_port)
cat >"$tmp/fedgw.toml" <<EOF
data_dir = "$tmp/fedgw-data"

[admin]
listen = "unix:$tmp/admin.sock"

[[local]]
trust_domain = "$td"
source = { file = "$tmp/bundle.pem", format = "pem" }
path = "/bundle.json"

[endpoint.https_web]
listen = "127.0.0.1:$fedgw_port"
cert = "$tmp/tls.crt"
key = "$tmp/tls.key"
public_names = ["localhost"]
EOF

say "fedgw on 127.0.0.1:$fedgw_port"
"$fedgw" serve --config "$tmp/fedgw.toml" --log warn >"$tmp/fedgw.log" 2>&1 &
fedgw_pid=$!
fedgw_url="https://localhost:$fedgw_port/bundle.json"
mkdir -p "$tmp/www"
for _ in $(seq 100); do
    if curl -sf --cacert "$tmp/ca.pem" -o "$tmp/www/bundle.json" "$fedgw_url"; then break; fi
    sleep 0.1
done
[[ -s $tmp/www/bundle.json ]] || { cat "$tmp/fedgw.log" >&2; say "fedgw did not serve"; exit 1; }
chmod -R a+rX "$tmp/www"

# nginx: the same bundle bytes as a static file, the same certificate and key, TLS
# 1.2 and 1.3 with the cipher suites and groups fedgw allows (Mozilla intermediate
# minus the DHE suites rustls lacks), HTTP/1.1, one worker per CPU (as tokio's
# default runtime has one worker thread per CPU), no access log (fedgw logs no
# requests), no per-connection request cap (hyper has none).
nginx_port=$(free_port)
cat >"$tmp/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx-body;
    proxy_temp_path $tmp/nginx-proxy;
    fastcgi_temp_path $tmp/nginx-fastcgi;
    uwsgi_temp_path $tmp/nginx-uwsgi;
    scgi_temp_path $tmp/nginx-scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $tmp/tls.crt;
        ssl_certificate_key $tmp/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:bench:10m;
        ssl_session_tickets off;
        root $tmp/www;
        location = /bundle.json {
            types { }
            default_type application/json;
        }
    }
}
EOF
say "nginx on 127.0.0.1:$nginx_port"
nginx -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" &
nginx_pid=$!
nginx_url="https://localhost:$nginx_port/bundle.json"
for _ in $(seq 100); do
    if curl -sf --cacert "$tmp/ca.pem" -o "$tmp/nginx-bundle.json" "$nginx_url"; then break; fi
    sleep 0.1
done
cmp -s "$tmp/www/bundle.json" "$tmp/nginx-bundle.json" || { cat "$tmp/nginx-error.log" >&2; say "nginx does not serve the same bytes"; exit 1; }

# What each negotiates with an OpenSSL client (wrk uses OpenSSL too).
negotiated() {
    curl -sv --http1.1 --cacert "$tmp/ca.pem" -o /dev/null "$1" 2>&1 |
        sed -n 's/^\* SSL connection using \(.*\)$/\1/p' | head -n1
}
group() {
    openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null |
        sed -n 's/^\(Server\|Peer\) Temp Key: \([^,]*\).*$/\2/p' | head -n1
}
fedgw_tls="$(negotiated "$fedgw_url"), $(group "$fedgw_port")"
nginx_tls="$(negotiated "$nginx_url"), $(group "$nginx_port")"
fedgw_type=$(curl -s --cacert "$tmp/ca.pem" -o /dev/null -w '%{content_type}' "$fedgw_url")
nginx_type=$(curl -s --cacert "$tmp/ca.pem" -o /dev/null -w '%{content_type}' "$nginx_url")
bytes=$(wc -c <"$tmp/www/bundle.json")
say "fedgw: $fedgw_tls, $fedgw_type; nginx: $nginx_tls, $nginx_type; $bytes bytes"

# One wrk round: prints "req/s p50_ms p99_ms errors".
to_ms() {
    awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }'
}
round() {
    local url=$1 mode=$2 out
    if [[ $mode == close ]]; then
        out=$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -H 'Connection: close' "$url")
    else
        out=$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "$url")
    fi
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms)
    errors=$(awk '/Socket errors:|Non-2xx/ {found = 1} END {print found ? "yes" : "no"}' <<<"$out")
    if [[ $errors == yes ]]; then say "$out"; fi
    printf '%s %s %s %s\n' "$rps" "$p50" "$p99" "$errors"
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

declare -A results
for mode in keepalive close; do
    for r in $(seq "$rounds"); do
        # Alternate which server goes first, so drift in the machine's load is shared.
        if ((r % 2)); then order="fedgw nginx"; else order="nginx fedgw"; fi
        for server in $order; do
            url=$fedgw_url
            [[ $server == nginx ]] && url=$nginx_url
            line=$(round "$url" "$mode")
            say "$mode round $r $server: $line"
            results[$mode.$server]+="$line"$'\n'
        done
    done
done

column_median() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
any_errors() { printf '%s' "${results[$1]}" | awk '$4 == "yes" {e = 1} END {print e ? "yes" : "no"}'; }

# shellcheck disable=SC2016 # the backquotes are markdown
printf '%s rounds of %s s per server and mode, alternating which server goes first; wrk %s threads, %s connections, HTTP/1.1, `GET /bundle.json` (%s bytes, `%s` from both). Medians of the rounds.\n\n' \
    "$rounds" "$duration" "$threads" "$connections" "$bytes" "$fedgw_type"
printf '| mode | fedgw req/s | nginx req/s | fedgw / nginx | fedgw p50 / p99 ms | nginx p50 / p99 ms | errors |\n'
printf '|---|---|---|---|---|---|---|\n'
for mode in keepalive close; do
    f=$(column_median "$mode.fedgw" 1)
    n=$(column_median "$mode.nginx" 1)
    ratio=$(awk -v f="$f" -v n="$n" 'BEGIN {printf "%.2f", f / n}')
    label="keep-alive"
    # shellcheck disable=SC2016 # the backquotes are markdown
    [[ $mode == close ]] && label='new connection per request (`Connection: close`)'
    errors="none"
    if [[ $(any_errors "$mode.fedgw") == yes || $(any_errors "$mode.nginx") == yes ]]; then
        errors="socket errors or non-2xx (see the run's log)"
    fi
    printf '| %s | %.0f | %.0f | %s | %s / %s | %s / %s | %s |\n' "$label" "$f" "$n" "$ratio" \
        "$(column_median "$mode.fedgw" 2)" "$(column_median "$mode.fedgw" 3)" \
        "$(column_median "$mode.nginx" 2)" "$(column_median "$mode.nginx" 3)" "$errors"
done
printf '\nTLS negotiated with an OpenSSL client: fedgw %s, nginx %s. Versions: %s, %s.\n' \
    "$fedgw_tls" "$nginx_tls" "$("$fedgw" --version 2>/dev/null || echo fedgw)" \
    "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print "wrk " $2}')"

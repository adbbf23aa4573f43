"""Check a running https_spiffe bundle endpoint's X509-SVID with independent code.

Connects with Python's `ssl` (no verification: the point is to read what the server
presents), parses the leaf with `cryptography`, and checks it against the X509-SVID
standard and the trust domain's bundle:

- exactly one URI SAN, equal to the expected SPIFFE ID (X509-SVID §2, §5.2);
- basicConstraints cA false (§4.1, §5.2);
- keyUsage present with digitalSignature set, keyCertSign and cRLSign not set (§4.3);
- the leaf's signature verifies with the public key of a CA in the bundle (SPIFFE
  bundle JSON: `keys[].x5c[0]` of the `x509-svid` keys).

Used by tests/federation_e2e.rs (`srv_8_python_checks_the_spiffe_endpoint_svid`).
Exit status 0 when every check passes; otherwise 1 with the reason on stderr.

    check_spiffe_endpoint.py --host 127.0.0.1 --port 8444 \\
        --spiffe-id spiffe://dev.example/fedgw/bundle-endpoint --bundle bundle.json
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID


class CheckFailed(Exception):
    """A check did not pass; the message says which and why."""


def fetch_leaf(host: str, port: int, timeout: float) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=None) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise CheckFailed("the server presented no certificate")
    return x509.load_der_x509_certificate(der)


def bundle_cas(path: str) -> list[x509.Certificate]:
    with open(path, "rb") as handle:
        document = json.load(handle)
    cas = []
    for key in document.get("keys", []):
        if key.get("use") != "x509-svid":
            continue
        chain = key.get("x5c") or []
        if len(chain) != 1:
            raise CheckFailed(f"bundle key {key.get('kid')!r}: x5c must hold one certificate")
        cas.append(x509.load_der_x509_certificate(base64.b64decode(chain[0])))
    if not cas:
        raise CheckFailed(f"{path}: no x509-svid authority in the bundle")
    return cas


def check(leaf: x509.Certificate, spiffe_id: str, cas: list[x509.Certificate]) -> None:
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound as err:
        raise CheckFailed("no subjectAltName extension") from err
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [spiffe_id]:
        raise CheckFailed(f"URI SANs are {uris!r}, expected exactly [{spiffe_id!r}]")

    try:
        basic = leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        if basic.ca:
            raise CheckFailed("basicConstraints cA is true on the leaf")
    except x509.ExtensionNotFound:
        pass  # absent means cA false

    try:
        usage = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound as err:
        raise CheckFailed("no keyUsage extension") from err
    if not usage.digital_signature:
        raise CheckFailed("keyUsage lacks digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise CheckFailed("keyUsage has keyCertSign or cRLSign on the leaf")

    errors = []
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            return
        except (ValueError, TypeError, InvalidSignature) as err:
            errors.append(f"{ca.subject.rfc4514_string()}: {err!r}")
    raise CheckFailed("the leaf is not signed by any bundle CA: " + "; ".join(errors))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spiffe-id", required=True)
    parser.add_argument("--bundle", required=True, help="SPIFFE bundle JSON of the trust domain")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        leaf = fetch_leaf(args.host, args.port, args.timeout)
        check(leaf, args.spiffe_id, bundle_cas(args.bundle))
    except CheckFailed as err:
        print(f"check_spiffe_endpoint: FAILED: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"check_spiffe_endpoint: FAILED: {err!r}", file=sys.stderr)
        return 1
    print(f"check_spiffe_endpoint: ok: {args.spiffe_id} at {args.host}:{args.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

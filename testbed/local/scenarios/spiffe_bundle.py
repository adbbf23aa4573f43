"""Write a SPIFFE bundle (JWK Set, SPIFFE Trust Domain and Bundle §4) holding the
X.509 CA certificates of PEM files, with the Python `cryptography` package: an
implementation independent of fedgw's, used by the testbed scenarios.

    spiffe_bundle.py [--sequence N] [--refresh-hint SECONDS] CA.pem...
"""

import argparse
import base64
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(cert: x509.Certificate) -> dict:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        sys.exit("spiffe_bundle.py: only P-256 CA keys are supported")
    numbers = key.public_numbers()
    return {
        "use": "x509-svid",
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "x5c": [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequence", type=int)
    parser.add_argument("--refresh-hint", type=int)
    parser.add_argument("pem", nargs="+")
    args = parser.parse_args()
    keys = []
    for path in args.pem:
        with open(path, "rb") as f:
            keys.extend(jwk(c) for c in x509.load_pem_x509_certificates(f.read()))
    bundle: dict = {"keys": keys}
    if args.sequence is not None:
        bundle["spiffe_sequence"] = args.sequence
    if args.refresh_hint is not None:
        bundle["spiffe_refresh_hint"] = args.refresh_hint
    json.dump(bundle, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

"""Certificates, keys and SPIFFE bundle elements made with `cryptography` alone.

Nothing here uses the Rust crate: these helpers are the independent side of the
cross-checks. JWK members follow RFC 7518 §6 and RFC 8037 §2 as written:

- EC `x`/`y`: the coordinate as a big-endian octet string of the curve's full field
  size (RFC 7518 §6.2.1.2: "MUST be the full size of a coordinate"), base64url;
- RSA `n`/`e`: Base64urlUInt, the minimum number of octets (RFC 7518 §2, §6.3.1);
- OKP `x`: the raw public key (RFC 8037 §2);

all base64url without padding, while `x5c` holds standard base64 DER (RFC 7517 §4.7).
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

TRUST_DOMAIN = "example.org"

CURVES = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
CURVE_BY_NAME = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# Key kinds a bundle can carry; each name maps to a key generator.
KEY_KINDS = ("p256", "p384", "p521", "rsa2048", "rsa2048-e3", "ed25519")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64std(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def uint_bytes(value: int) -> bytes:
    """Big-endian, minimal length (RFC 7518 §2 Base64urlUInt)."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def generate_key(kind: str):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa2048-e3":
        return rsa.generate_private_key(public_exponent=3, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(kind)


def ec_key_with_leading_zero(curve: str = "P-256"):
    """An EC key whose x coordinate starts with a zero octet, so that a producer
    that strips leading zeros (wrong for EC, RFC 7518 §6.2.1.2) is caught."""
    cls, size = CURVES[curve]
    for _ in range(100_000):
        key = ec.generate_private_key(cls())
        if key.public_key().public_numbers().x.bit_length() <= 8 * (size - 1):
            return key
    raise RuntimeError("no key with a leading zero octet found")


def jwk_members(public_key) -> dict:
    """`kty` and the key members of a public key, computed from its numbers."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = CURVE_BY_NAME[public_key.curve.name]
        size = CURVES[crv][1]
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": b64url(uint_bytes(numbers.n)), "e": b64url(uint_bytes(numbers.e))}
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    if isinstance(public_key, ed448.Ed448PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed448", "x": b64url(raw)}
    raise TypeError(type(public_key))


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class Cert:
    cert: x509.Certificate
    key: object
    common_name: str

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _signature_hash(key):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp521r1":
        return hashes.SHA512()
    return hashes.SHA256()


def make_cert(
    common_name: str,
    key=None,
    *,
    kind: str = "p256",
    ca: bool | None = True,
    uris: tuple[str, ...] = (f"spiffe://{TRUST_DOMAIN}",),
    not_after: datetime.datetime | None = None,
) -> Cert:
    """A self-signed certificate. `ca=None` leaves basicConstraints out entirely;
    `ca=False` sets it with cA false."""
    key = key or generate_key(kind)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_after = not_after or (now + datetime.timedelta(days=365))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=bool(ca),
            crl_sign=bool(ca),
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    cert = builder.sign(key, _signature_hash(key))
    return Cert(cert=cert, key=key, common_name=common_name)


def x509_element(cert: Cert) -> dict:
    """An `x509-svid` JWK as X509-SVID §6.1 describes it (no `kid`)."""
    element = {"use": "x509-svid", **jwk_members(cert.cert.public_key()), "x5c": [b64std(cert.der)]}
    return element


def jwt_element(kid: str | None, public_key, use: str = "jwt-svid") -> dict:
    """A `jwt-svid` (or `wit-svid`) JWK as JWT-SVID §6.1 describes it."""
    element = {"use": use, **jwk_members(public_key)}
    if kid is not None:
        element["kid"] = kid
    return element


def document(elements: list, **top) -> bytes:
    """A bundle document. An element given as `str` is inserted as raw JSON text, so
    that documents JSON libraries cannot produce (duplicate members) can be built."""
    parts = [e if isinstance(e, str) else json.dumps(e) for e in elements]
    extra = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in top.items())
    return f'{{"keys":[{",".join(parts)}]{extra}}}'.encode()

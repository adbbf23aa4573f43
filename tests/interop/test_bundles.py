"""Bundle documents (conformance BUN-*, X5C-*, JWK-*, RFC-*), cross-checked with
`cryptography`, PyJWT and the PyPI `spiffe` JWT bundle parser.

Two directions:
- what we produce (`bundle-make`, rcgen CAs and keys through `Bundle::to_json`) is read
  by independent code and must match the certificates and keys it came from;
- what Python produces with `cryptography` alone is read by `bundle-parse` and must
  come back with the same certificates, dates, kids and key numbers, and broken
  elements must be left out one by one, never more and never less.
"""

from __future__ import annotations

import base64
import binascii
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.api_jwk import PyJWK, PyJWKSet
from spiffe import JwtBundle, TrustDomain

import pki
from pki import TRUST_DOMAIN

X509_MEMBERS = {"use", "kty", "x5c", "crv", "x", "y", "n", "e"}
KID_MEMBERS = {"use", "kty", "kid", "crv", "x", "y", "n", "e"}
KEY_MEMBERS = {"EC": {"crv", "x", "y"}, "RSA": {"n", "e"}, "OKP": {"crv", "x"}}
TOP_MEMBERS = {"keys", "spiffe_sequence", "spiffe_refresh_hint"}


def strict_b64decode(text: str) -> bytes:
    """Standard base64 only: base64url characters or missing padding raise."""
    return base64.b64decode(text, validate=True)


def describe(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {pki.CURVE_BY_NAME[public_key.curve.name]}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "OKP Ed25519"
    return type(public_key).__name__


def key_only(members: dict) -> dict:
    """`kty` and the key members of a JWK (or of a probe key report)."""
    return {k: v for k, v in members.items() if k == "kty" or k in KEY_MEMBERS.get(members["kty"], ())}


def is_p521(key: dict) -> bool:
    return key.get("crv") == "P-521"


# What `bundle-make` produces: rcgen CAs and keys serialised by Bundle::to_json.


@pytest.fixture(scope="module")
def made(probe, tmp_path_factory):
    raw, spki = probe.make_bundle(tmp_path_factory.mktemp("made"))
    return raw, json.loads(raw), spki


def elements(document: dict, use: str) -> list[dict]:
    return [k for k in document["keys"] if k.get("use") == use]


def test_x5c_2_every_x509_entry_is_one_ca_certificate(made):
    _, document, _ = made
    entries = elements(document, "x509-svid")
    kinds = set()
    for entry in entries:
        assert len(entry["x5c"]) == 1, entry  # X5C-2: exactly one certificate
        cert = x509.load_der_x509_certificate(strict_b64decode(entry["x5c"][0]))
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is True
        cert.verify_directly_issued_by(cert)  # SHOULD be self-signed; raises if not
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TRUST_DOMAIN}"]
        kinds.add(describe(cert.public_key()))
    assert kinds == {"EC P-256", "EC P-384", "EC P-521", "RSA 2048", "OKP Ed25519"}


def test_rfc_1_x5c_members_match_certificate(made):
    """RFC 7517 §4.7: the key members equal the certificate's key, encoded per RFC 7518
    §6 (EC coordinates full length, RSA integers minimal) and RFC 8037 (OKP raw)."""
    _, document, _ = made
    entries = elements(document, "x509-svid")
    assert len(entries) == 5
    for entry in entries:
        cert = x509.load_der_x509_certificate(strict_b64decode(entry["x5c"][0]))
        assert key_only(entry) == pki.jwk_members(cert.public_key()), describe(cert.public_key())


def test_x5c_1_x509_entries_carry_no_kid(made):
    _, document, _ = made
    entries = elements(document, "x509-svid")
    assert entries and all("kid" not in entry for entry in entries)


def test_jwk_1_wit_1_jwt_and_wit_entries_carry_unique_kids(made):
    _, document, spki = made
    kids = [k["kid"] for k in document["keys"] if k["use"] in ("jwt-svid", "wit-svid")]
    assert all(isinstance(kid, str) and kid for kid in kids)
    assert len(kids) == len(set(kids))  # WIT-1: unique across the whole bundle
    assert {k["kid"] for k in elements(document, "jwt-svid")} == set(spki["jwt"])
    assert {k["kid"] for k in elements(document, "wit-svid")} == set(spki["wit"])


def test_bun_13_no_members_beyond_the_standard(made):
    _, document, _ = made
    assert set(document) <= TOP_MEMBERS
    assert document["spiffe_sequence"] == 42 and document["spiffe_refresh_hint"] == 300
    for key in document["keys"]:
        allowed = X509_MEMBERS if key["use"] == "x509-svid" else KID_MEMBERS
        assert set(key) <= allowed, key
        fixed = {"use", "kty", "x5c", "kid"}
        assert set(key) - fixed == KEY_MEMBERS[key["kty"]], key


def test_bun_1_every_key_is_a_usable_rfc_7517_jwk(made):
    """PyJWT reads every element as a JWK (it ignores `use`), so every member set we
    emit is a valid RFC 7518/8037 key."""
    _, document, _ = made
    jwks = PyJWKSet.from_dict(document)
    assert len(jwks.keys) == len(document["keys"]) == 11


def test_jwk_2_jwt_part_parses_with_py_spiffe_jwt_bundle(made):
    """The jwt-svid elements, extracted as JWT-SVID §6.2 says, load in py-spiffe's
    JwtBundle.parse; each key equals the key rcgen generated (compared as SPKI)."""
    _, document, spki = made
    jwt_only = {"keys": elements(document, "jwt-svid")}
    bundle = JwtBundle.parse(TrustDomain(TRUST_DOMAIN), json.dumps(jwt_only).encode())
    assert set(bundle.jwt_authorities) == set(spki["jwt"]) and len(spki["jwt"]) == 5
    for kid, expected in spki["jwt"].items():
        key = bundle.get_jwt_authority(kid)
        assert pki.spki_der(key) == base64.b64decode(expected), kid


def test_wit_1_wit_keys_match_generated_keys(made):
    _, document, spki = made
    entries = elements(document, "wit-svid")
    assert len(entries) == len(spki["wit"]) == 1
    for entry in entries:
        key = PyJWK(entry).key
        assert pki.spki_der(key) == base64.b64decode(spki["wit"][entry["kid"]])


def test_bun_our_output_reparses_unchanged(made, probe):
    """Our own document parses back with nothing ignored and no warnings, and
    serialises to the same bytes."""
    raw, document, _ = made
    report = probe.parse_bundle(raw)
    assert report["ok"], report
    assert report["ignored"] == []
    assert report["lints"] == []
    assert report["json"].encode() == raw
    assert len(report["x509"]) == 5 and len(report["jwt"]) == 5 and len(report["wit"]) == 1


# What Python produces, read by `bundle-parse`.


def python_bundle():
    """CAs of every key kind, one with a leading-zero EC coordinate; JWT keys of every
    kind, one with a leading-zero coordinate; one WIT key."""
    cas = [pki.make_cert(f"py {kind} CA", kind=kind) for kind in pki.KEY_KINDS]
    cas.append(pki.make_cert("py p256 leading zero CA", key=pki.ec_key_with_leading_zero()))
    jwt_keys = {f"py-jwt-{kind}": pki.generate_key(kind) for kind in pki.KEY_KINDS}
    jwt_keys["py-jwt-leading-zero"] = pki.ec_key_with_leading_zero("P-384")
    wit_keys = {"py-wit-ed25519": pki.generate_key("ed25519")}
    return cas, jwt_keys, wit_keys


@pytest.fixture(scope="module")
def py_made():
    return python_bundle()


def python_document(cas, jwt_keys, wit_keys, **top) -> bytes:
    keys = [pki.x509_element(ca) for ca in cas]
    keys += [pki.jwt_element(kid, key.public_key()) for kid, key in jwt_keys.items()]
    keys += [pki.jwt_element(kid, key.public_key(), use="wit-svid") for kid, key in wit_keys.items()]
    return pki.document(keys, **top)


def test_bun_1_python_bundle_parses_without_loss(probe, py_made):
    cas, jwt_keys, wit_keys = py_made
    # BUN-5: a sequence beyond 2^53 must survive exactly.
    document = python_document(cas, jwt_keys, wit_keys, spiffe_sequence=2**53 + 1, spiffe_refresh_hint=600)
    report = probe.parse_bundle(document)
    assert report["ok"], report
    assert report["ignored"] == []
    # Self-signed, URI SAN spiffe://example.org: no warnings.
    assert report["lints"] == []
    assert report["sequence"] == 2**53 + 1
    assert report["refresh_hint"] == 600

    by_der = {base64.b64decode(x["der_b64"]): x for x in report["x509"]}
    assert set(by_der) == {ca.der for ca in cas}
    for ca in cas:
        got = by_der[ca.der]
        assert got["subject"] == ca.cert.subject.rfc4514_string() == f"CN={ca.common_name}"
        assert got["not_after"] == int(ca.cert.not_valid_after_utc.timestamp())
        assert got["not_before"] == int(ca.cert.not_valid_before_utc.timestamp())
        assert got["spiffe_ids"] == [f"spiffe://{TRUST_DOMAIN}"]
        assert got["self_signed"] is True
        assert key_only(got["key"]) == pki.jwk_members(ca.cert.public_key()), ca.common_name

    for field, keys in (("jwt", jwt_keys), ("wit", wit_keys)):
        got = {k["kid"]: k for k in report[field]}
        assert set(got) == set(keys)
        for kid, key in keys.items():
            assert key_only(got[kid]) == pki.jwk_members(key.public_key()), kid


def test_x5c_2_p521_ca_is_recognised_as_self_signed(probe, made, py_made):
    """X5C-2: a self-signed P-521 CA (rcgen's and cryptography's) is self-signed, so
    no NotSelfSigned warning. (This once failed: x509-parser's signature check knows
    no P-521 or ecdsa-with-SHA512, so the crate now checks with aws-lc-rs.)"""
    raw, document, _ = made
    py_p521 = next(ca for ca in py_made[0] if ca.common_name == "py p521 CA")
    py_p521.cert.verify_directly_issued_by(py_p521.cert)  # really self-signed
    for doc in (raw, pki.document([pki.x509_element(py_p521)])):
        report = probe.parse_bundle(doc)
        p521 = [x for x in report["x509"] if is_p521(x["key"])]
        assert len(p521) == 1 and p521[0]["self_signed"] is True, p521
        assert [l for l in report["lints"] if l["kind"] == "NotSelfSigned"] == []


def test_x5c_2_p521_ca_is_otherwise_accepted(probe, py_made):
    """A P-521 CA is kept and its key read correctly."""
    py_p521 = next(ca for ca in py_made[0] if ca.common_name == "py p521 CA")
    report = probe.parse_bundle(pki.document([pki.x509_element(py_p521)]))
    assert report["ok"] and report["ignored"] == [], report
    assert [base64.b64decode(x["der_b64"]) for x in report["x509"]] == [py_p521.der]
    assert key_only(report["x509"][0]["key"]) == pki.jwk_members(py_p521.cert.public_key())
    assert {l["kind"] for l in report["lints"]} <= {"NotSelfSigned"}  # at most the bug


def test_rfc_1_leading_zero_coordinates_keep_full_length(probe, py_made):
    """RFC 7518 §6.2.1.2: a coordinate with a leading zero octet is still the full
    field size, both when we read it and when we write it back."""
    cas, jwt_keys, _ = py_made
    zero_ca = cas[-1]
    zero_jwt = jwt_keys["py-jwt-leading-zero"]
    report = probe.parse_bundle(
        pki.document([pki.x509_element(zero_ca), pki.jwt_element("z", zero_jwt.public_key())])
    )
    assert report["ok"] and report["ignored"] == [], report
    written = json.loads(report["json"])
    assert sorted(e["crv"] for e in written["keys"]) == ["P-256", "P-384"]
    for element in written["keys"]:
        x = pki.b64url_decode(element["x"])
        assert len(x) == {"P-256": 32, "P-384": 48}[element["crv"]] and x[0] == 0, element


def test_jwk_2_python_jwt_bundle_agrees_with_py_spiffe(probe, py_made):
    """Both parsers select the same jwt-svid kids from a Python-made bundle."""
    _, jwt_keys, _ = py_made
    document = pki.document([pki.jwt_element(kid, key.public_key()) for kid, key in jwt_keys.items()])
    theirs = JwtBundle.parse(TrustDomain(TRUST_DOMAIN), document)
    report = probe.parse_bundle(document)
    assert {k["kid"] for k in report["jwt"]} == set(theirs.jwt_authorities) == set(jwt_keys)
    for entry in report["jwt"]:
        rebuilt = PyJWK({**key_only(entry), "kid": entry["kid"]}).key
        assert pki.spki_der(rebuilt) == pki.spki_der(theirs.get_jwt_authority(entry["kid"]))


# Broken elements: each must be left out alone, with the documented reason.


def _other_key_members(kind: str) -> dict:
    return key_only(pki.jwk_members(pki.generate_key(kind).public_key()))


def broken_cases():
    """(name, conformance ID, element (dict or raw JSON text), expected ignore kind)."""
    good_ec = pki.make_cert("broken base p256", kind="p256")
    good_rsa = pki.make_cert("broken base rsa", kind="rsa2048")
    zero = pki.ec_key_with_leading_zero()

    def x509_with(cert, **changes):
        element = pki.x509_element(cert)
        for name, value in changes.items():
            if value is None:
                element.pop(name, None)
            else:
                element[name] = value
        return element

    def jwt_with(key, **changes):
        element = pki.jwt_element("k-broken", key.public_key())
        for name, value in changes.items():
            if value is None:
                element.pop(name, None)
            else:
                element[name] = value
        return element

    # base64url x5c must differ from base64, so pick a certificate whose encoding
    # contains '+' or '/'.
    url_cert = good_ec
    while not set(pki.b64std(url_cert.der)) & {"+", "/"}:
        url_cert = pki.make_cert("broken url p256", kind="p256")
    url_x5c = base64.urlsafe_b64encode(url_cert.der).decode().rstrip("=")
    assert url_x5c != pki.b64std(url_cert.der).rstrip("=")

    ec_element = pki.x509_element(good_ec)
    duplicate_use = json.dumps(ec_element)[:-1] + ', "use": "jwt-svid"}'
    stripped_x = pki.jwt_element("k-short-x", zero.public_key())
    stripped_x["x"] = pki.b64url(pki.b64url_decode(stripped_x["x"]).lstrip(b"\0"))
    ed = pki.generate_key("ed25519")
    short_ed = pki.jwt_element("k-short-ed", ed.public_key())
    short_ed["x"] = pki.b64url(pki.b64url_decode(short_ed["x"])[:31])

    return [
        ("x5c_base64url", "RFC-1", x509_with(url_cert, x5c=[url_x5c]), "X5cNotBase64"),
        ("x5c_not_a_string", "RFC-1", x509_with(good_ec, x5c=[1]), "X5cNotBase64"),
        ("ec_members_of_another_key", "RFC-1", x509_with(good_ec, **_other_key_members("p256")), "KeyMismatch"),
        ("rsa_members_of_another_key", "RFC-1", x509_with(good_rsa, **_other_key_members("rsa2048")), "KeyMismatch"),
        ("kty_disagrees_with_certificate", "RFC-1", x509_with(good_rsa, **_other_key_members("p256"), n=None, e=None), "KeyMismatch"),
        ("ca_false", "X5C-2", pki.x509_element(pki.make_cert("not a CA", ca=False)), "Certificate/NotCa"),
        ("no_basic_constraints", "X5C-2", pki.x509_element(pki.make_cert("no bc", ca=None)), "Certificate/NotCa"),
        ("ed448_certificate", "BUN-14", pki.x509_element(pki.make_cert("ed448 CA", kind="ed448")), "Certificate/UnsupportedKey"),
        ("x5c_missing", "X5C-3", x509_with(good_ec, x5c=None), "MissingX5c"),
        ("x5c_empty", "X5C-3", x509_with(good_ec, x5c=[]), "MissingX5c"),
        ("use_unknown", "BUN-15", x509_with(good_ec, use="sig"), "UnknownUse"),
        ("use_wrong_case", "BUN-15", x509_with(good_ec, use="X509-SVID"), "UnknownUse"),
        ("use_missing", "BUN-15", x509_with(good_ec, use=None), "MissingUse"),
        ("kty_unknown", "BUN-14", jwt_with(pki.generate_key("p256"), kty="FOO"), "UnknownKty"),
        ("kty_missing", "BUN-14", jwt_with(pki.generate_key("p256"), kty=None), "MissingKty"),
        ("jwt_kid_missing", "JWK-3", jwt_with(pki.generate_key("p256"), kid=None), "MissingKid"),
        ("jwt_kid_empty", "JWK-3", jwt_with(pki.generate_key("p256"), kid=""), "MissingKid"),
        ("ec_x_leading_zero_stripped", "RFC-2", stripped_x, "BadKeyMember"),
        ("ed25519_x_31_bytes", "RFC-2", short_ed, "BadKeyMember"),
        ("rsa_n_missing", "RFC-2", jwt_with(pki.generate_key("rsa2048"), n=None), "BadKeyMember"),
        ("okp_ed448", "BUN-14", jwt_with(pki.generate_key("ed448")), "UnsupportedCurve"),
        ("duplicate_use_member", "RFC-3", duplicate_use, "DuplicateMember"),
    ]


BROKEN = broken_cases()


@pytest.fixture(scope="module")
def anchor_elements(py_made):
    """Good elements that must survive next to each broken one."""
    cas, jwt_keys, _ = py_made
    return [pki.x509_element(cas[0]), pki.jwt_element("good-jwt", jwt_keys["py-jwt-p256"].public_key())]


@pytest.mark.parametrize(
    "name, conformance, element, kind",
    BROKEN,
    ids=[f"{cid.lower().replace('-', '_')}_{name}" for name, cid, _, _ in BROKEN],
)
def test_bun_10_rfc_2_broken_element_is_ignored_alone(probe, anchor_elements, name, conformance, element, kind):
    report = probe.parse_bundle(pki.document([anchor_elements[0], element, anchor_elements[1]]))
    assert report["ok"], report
    assert [(i["location"], i["kind"]) for i in report["ignored"]] == [("/keys/1", kind)], report["ignored"]
    assert len(report["x509"]) == 1
    assert [k["kid"] for k in report["jwt"]] == ["good-jwt"]


def test_bun_10_all_broken_elements_together(probe, py_made):
    """A document mixing every good and every broken element: exactly the broken
    ones are ignored (by index), every good one is kept."""
    cas, jwt_keys, wit_keys = py_made
    good = [pki.x509_element(ca) for ca in cas]
    good += [pki.jwt_element(kid, key.public_key()) for kid, key in jwt_keys.items()]
    good += [pki.jwt_element(kid, key.public_key(), use="wit-svid") for kid, key in wit_keys.items()]
    keys, expected = [], {}
    for i in range(max(len(good), len(BROKEN))):
        if i < len(good):
            keys.append(good[i])
        if i < len(BROKEN):
            expected[f"/keys/{len(keys)}"] = BROKEN[i][3]
            keys.append(BROKEN[i][2])
    report = probe.parse_bundle(pki.document(keys, spiffe_sequence=7))
    assert report["ok"], report
    assert {i["location"]: i["kind"] for i in report["ignored"]} == expected
    assert {base64.b64decode(x["der_b64"]) for x in report["x509"]} == {ca.der for ca in cas}
    assert {k["kid"] for k in report["jwt"]} == set(jwt_keys)
    assert {k["kid"] for k in report["wit"]} == set(wit_keys)


def test_x5c_6_kid_on_x509_entry_is_kept_with_a_warning(probe, py_made):
    cas, _, _ = py_made
    element = {**pki.x509_element(cas[0]), "kid": "should-not-be-here"}
    report = probe.parse_bundle(pki.document([element]))
    assert report["ignored"] == []
    assert [l["kind"] for l in report["lints"]] == ["KidOnX509"]
    assert "kid" not in json.loads(report["json"])["keys"][0]  # X5C-1 when re-served


def test_x5c_4_only_the_first_certificate_is_used(probe, py_made):
    cas, _, _ = py_made
    element = pki.x509_element(cas[0])
    element["x5c"].append(pki.b64std(cas[1].der))
    report = probe.parse_bundle(pki.document([element]))
    assert report["ignored"] == []
    assert [base64.b64decode(x["der_b64"]) for x in report["x509"]] == [cas[0].der]
    assert [l["kind"] for l in report["lints"]] == ["ExtraX5c"]


def test_id_16_ca_of_another_trust_domain_is_kept_with_a_warning(probe):
    """SPIFFE-ID §3.1 is a SHOULD for the CA's own ID: keep the CA, warn."""
    other = pki.make_cert("other td CA", uris=("spiffe://other.test",))
    report = probe.parse_bundle(pki.document([pki.x509_element(other)]))
    assert report["ignored"] == [] and len(report["x509"]) == 1
    assert [l["kind"] for l in report["lints"]] == ["CaIdMismatch"]


def test_strict_b64decode_rejects_base64url():
    """The helper the x5c checks rely on really refuses base64url."""
    with pytest.raises(binascii.Error):
        strict_b64decode("-_-_")

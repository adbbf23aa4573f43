"""The files sink's output (`[[sinks.files]]`), read by independent code.

A real `fedgw serve` (built with cargo, or FEDGW_BIN) serves two local trust domains
whose CAs and JWT key are made here with `cryptography`, and writes them through a
files sink. Its `bundle-map.json` is then checked with the `json` module and
`cryptography` only (MAP-1, MAP-3, MAP-5, MAP-7, FED-11, DIST-1, DIST-6), and also
handed to the project's own map parser (`fedgw bundle validate --format map`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pki
from conftest import cargo_executable

DEADLINE = 60.0
# SPIFFE-ID §2.1: lower-case letters, digits, dots, dashes and underscores.
TRUST_DOMAIN_NAME = re.compile(r"^[a-z0-9._-]+$")


def fedgw_binary() -> Path:
    """FEDGW_BIN, or the `fedgw` binary built now."""
    if os.environ.get("FEDGW_BIN"):
        return Path(os.environ["FEDGW_BIN"])
    return cargo_executable("fedgw", "-p", "fedgw", "--bin", "fedgw")


def der(cert: pki.Cert) -> bytes:
    return cert.cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    """Run a gateway until its files sink holds both domains; yield the directory and
    the certificates each domain was given."""
    root = tmp_path_factory.mktemp("files-sink")
    a_ca = pki.make_cert("a CA", uris=("spiffe://a.example",))
    b_cas = [pki.make_cert(f"b CA {i}", uris=("spiffe://b.example",)) for i in range(2)]
    jwt_key = pki.generate_key("p256")
    (root / "a.json").write_bytes(
        pki.document(
            [pki.x509_element(a_ca), pki.jwt_element("a-key", jwt_key.public_key())],
            spiffe_sequence=7,
        )
    )
    (root / "b.pem").write_bytes(
        b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in b_cas)
    )
    out = root / "out"
    config = root / "fedgw.toml"
    config.write_text(
        f"""
data_dir = {json.dumps(str(root / "data"))}

[[local]]
trust_domain = "a.example"
source = {{ file = {json.dumps(str(root / "a.json"))} }}

[[local]]
trust_domain = "b.example"
source = {{ file = {json.dumps(str(root / "b.pem"))}, format = "pem" }}

[[sinks.files]]
dir = {json.dumps(str(out))}
"""
    )
    binary = fedgw_binary()
    log = open(root / "fedgw.log", "wb")
    process = subprocess.Popen(
        [str(binary), "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        start = time.monotonic()
        while True:
            try:
                domains = json.loads((out / "bundle-map.json").read_text())["trust_domains"]
                if set(domains) == {"a.example", "b.example"}:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if process.poll() is not None or time.monotonic() - start > DEADLINE:
                raise AssertionError(
                    "the files sink did not write both domains:\n"
                    + (root / "fedgw.log").read_text(errors="replace")
                )
            time.sleep(0.05)
        yield {
            "dir": out,
            "binary": binary,
            "certs": {"a.example": {der(a_ca)}, "b.example": {der(c) for c in b_cas}},
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def read_map(sink) -> dict:
    return json.loads((sink["dir"] / "bundle-map.json").read_bytes())


def x509_ders(bundle: dict) -> set[bytes]:
    """The certificates of the `x509-svid` keys, each parsed by `cryptography`."""
    ders = set()
    for key in bundle["keys"]:
        if key["use"] != "x509-svid":
            continue
        assert len(key["x5c"]) == 1, key
        raw = base64.b64decode(key["x5c"][0], validate=True)
        cert = x509.load_der_x509_certificate(raw)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        ders.add(raw)
    return ders


def test_map_1_map_3_trust_domains_key_holds_exactly_the_trust_domains(sink):
    document = read_map(sink)
    assert list(document) == ["trust_domains"]
    domains = document["trust_domains"]
    assert set(domains) == {"a.example", "b.example"}
    for name in domains:
        assert TRUST_DOMAIN_NAME.match(name), name
        assert not name.startswith("spiffe:"), name


def test_map_5_no_refresh_hint_inside_the_map(sink):
    for name, bundle in read_map(sink)["trust_domains"].items():
        assert "spiffe_refresh_hint" not in bundle, name
        assert "refresh_hint" not in bundle, name
    # The per-domain JSON is the document as served, which carries the hint.
    served = json.loads((sink["dir"] / "a.example.json").read_bytes())
    assert isinstance(served["spiffe_refresh_hint"], int)


def test_map_7_each_bundle_keeps_its_own_sequence(sink):
    domains = read_map(sink)["trust_domains"]
    assert domains["a.example"]["spiffe_sequence"] == 7
    for name, bundle in domains.items():
        served = json.loads((sink["dir"] / f"{name}.json").read_bytes())
        assert isinstance(bundle["spiffe_sequence"], int), name
        assert bundle["spiffe_sequence"] == served["spiffe_sequence"], name


def test_fed_11_dist_1_every_x5c_parses_and_stays_with_its_domain(sink):
    domains = read_map(sink)["trust_domains"]
    for name, bundle in domains.items():
        assert x509_ders(bundle) == sink["certs"][name], name
    jwt = [k for k in domains["a.example"]["keys"] if k["use"] == "jwt-svid"]
    assert [k["kid"] for k in jwt] == ["a-key"]
    assert not [k for k in domains["b.example"]["keys"] if k["use"] != "x509-svid"]


def test_dist_6_pem_files_hold_only_their_domains_certificates(sink):
    for name, expected in sink["certs"].items():
        pem = (sink["dir"] / f"{name}.pem").read_bytes()
        assert b"PRIVATE KEY" not in pem and b"PUBLIC KEY" not in pem
        certs = x509.load_pem_x509_certificates(pem)
        assert {c.public_bytes(serialization.Encoding.DER) for c in certs} == expected, name


def test_map_3_the_projects_own_parser_reads_the_map(sink):
    result = subprocess.run(
        [str(sink["binary"]), "bundle", "validate", "--format", "map", "--json",
         str(sink["dir"] / "bundle-map.json")],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    assert report["valid"] is True, report

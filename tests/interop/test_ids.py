"""SPIFFE ID and trust domain syntax (conformance ID-1 … ID-15), cross-checked against
the PyPI `spiffe` package (py-spiffe 0.3.x, `spiffe.SpiffeId` / `spiffe.TrustDomain`).

Every candidate string goes through both parsers. They must agree on accept/reject,
and on the trust domain and path when both accept. A disagreement is allowed only if a
row of DIFFERENCES explains it: the row's predicate matches the input and our error is
one of the row's error kinds. Every row must be seen in the corpus and has a witness
test, so the table cannot go stale.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable

import pytest
from spiffe import SpiffeId, TrustDomain
from spiffe.errors import PySpiffeError

SCHEME = "spiffe://"


def authority(s: str) -> str:
    """The trust domain part of a `spiffe://` candidate (scheme matched in any case)."""
    if s[: len(SCHEME)].lower() != SCHEME:
        return ""
    return s[len(SCHEME) :].split("/", 1)[0]


def path_segments(s: str) -> list[str]:
    """The path segments of a `spiffe://` candidate (empty for none)."""
    if s[: len(SCHEME)].lower() != SCHEME:
        return []
    rest = s[len(SCHEME) :]
    return rest.split("/")[1:] if "/" in rest else []


def lower_scheme_and_td(s: str) -> str:
    """The input with scheme and trust domain in ASCII lower case, path untouched."""
    td = authority(s)
    path = s[len(SCHEME) + len(td) :]
    return SCHEME + td.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase)) + path


def has_ascii_upper(s: str) -> bool:
    return any(c in string.ascii_uppercase for c in s)


def lowers_into_ascii(s: str) -> bool:
    """A non-ASCII character that Python's str.lower() turns into ASCII (U+212A KELVIN
    SIGN becomes 'k')."""
    return any(not c.isascii() and c.lower().isascii() for c in s)


@dataclass(frozen=True)
class Difference:
    name: str
    conformance: str
    applies: Callable[[str], bool]
    rust_error_kinds: frozenset
    witness: str
    reason: str


# Inputs where we reject and py-spiffe 0.3.2 accepts, with why we are right.
ID_DIFFERENCES = [
    Difference(
        "upper-case-scheme",
        "ID-1, L-2",
        lambda s: s[: len(SCHEME)].lower() == SCHEME and s[: len(SCHEME)] != SCHEME,
        frozenset({"UpperCaseScheme"}),
        "SPIFFE://example.org/a",
        "py-spiffe matches the scheme case-insensitively (SID §2.4); we decided (L-2) to "
        "reject anything but lower case, with an error suggesting the lower-case form.",
    ),
    Difference(
        "upper-case-trust-domain",
        "ID-5, L-2",
        lambda s: has_ascii_upper(authority(s)),
        frozenset({"UpperCaseTrustDomain"}),
        "spiffe://Example.org/a",
        "py-spiffe lowercases the trust domain; SID §2.1 says it MUST be lower case and "
        "L-2 forbids silently lowering a security identifier.",
    ),
    Difference(
        "id-longer-than-2048-bytes",
        "ID-13",
        lambda s: len(s.encode()) > 2048,
        frozenset({"TooLong"}),
        "spiffe://example.org/" + "a" * 2048,
        "SID §2.3: support up to 2048 bytes; we reject longer IDs when parsing "
        "(decision on ID-13); py-spiffe has no limit.",
    ),
    Difference(
        "trust-domain-longer-than-255-bytes",
        "ID-14",
        lambda s: len(authority(s).encode()) > 255,
        frozenset({"TrustDomainTooLong"}),
        "spiffe://" + "a" * 256,
        "SID §2.3 derives a 255-byte maximum for trust domain names; py-spiffe has no limit.",
    ),
    Difference(
        "newline-ending-a-name-or-segment",
        "ID-6, ID-12",
        lambda s: authority(s).endswith("\n") or any(seg.endswith("\n") for seg in path_segments(s)),
        frozenset({"TrustDomainChar", "PathChar"}),
        "spiffe://example.org\n/a\n/b",
        "py-spiffe bug: it checks the trust domain and each path segment with "
        "re.match(r'^[...]+$'), and '$' also matches before a final newline, so a trust "
        "domain or segment may end with '\\n': 'spiffe://td\\n/a\\n/b' is accepted. "
        "A newline is outside [a-z0-9._-] and [a-zA-Z0-9._-].",
    ),
    Difference(
        "unicode-that-lowers-to-ascii",
        "ID-6",
        lambda s: lowers_into_ascii(authority(s)),
        frozenset({"TrustDomainChar"}),
        "spiffe://\u212a.example/a",
        "py-spiffe bug: it calls str.lower() before its ASCII check, and U+212A KELVIN "
        "SIGN lowers to 'k', so 'spiffe://\u212a.example' is accepted as 'k.example'. "
        "SID §2.1 allows only [a-z0-9._-]; a multi-byte UTF-8 name is never valid.",
    ),
]

# TrustDomain::new against py-spiffe's TrustDomain(...) on the same string.
TD_DIFFERENCES = [
    Difference(
        "upper-case",
        "ID-5, L-2",
        has_ascii_upper,
        frozenset({"UpperCaseTrustDomain"}),
        "Example.org",
        "As for SPIFFE IDs: py-spiffe lowercases, we reject and suggest the lower case.",
    ),
    Difference(
        "longer-than-255-bytes",
        "ID-14",
        lambda s: len(s.encode()) > 255,
        frozenset({"TrustDomainTooLong"}),
        "a" * 256,
        "SID §2.3; py-spiffe has no limit.",
    ),
    Difference(
        "trailing-newline",
        "ID-6",
        lambda s: s.endswith("\n"),
        frozenset({"TrustDomainChar"}),
        "example.org\n",
        "py-spiffe bug ('$' matches before a final newline), as for SPIFFE IDs.",
    ),
    Difference(
        "unicode-that-lowers-to-ascii",
        "ID-6",
        lowers_into_ascii,
        frozenset({"TrustDomainChar"}),
        "\u212a.example",
        "py-spiffe bug (str.lower() before the ASCII check), as for SPIFFE IDs.",
    ),
    Difference(
        "spiffe-id-given-as-trust-domain",
        "ID-1",
        lambda s: "://" in s,
        frozenset({"TrustDomainIsUri"}),
        "spiffe://example.org/a",
        "API difference, not syntax: py-spiffe's TrustDomain() also takes a SPIFFE ID "
        "and extracts its trust domain; our TrustDomain::new takes a bare name and says "
        "so (TrustDomain::from_spiffe_id takes the ID form).",
    ),
]


# Conformance cases (ID-1 … ID-15), with the result the standard requires of us.
CONFORMANCE_CASES = [
    ("ID-1", "spiffe://td/p", True),
    ("ID-1", "spiffe://domain.test/path/element", True),
    ("ID-1", "https://td/p", False),
    ("ID-1", "http://domain.test/path/element", False),
    ("ID-1", "spiffe:/td", False),
    ("ID-1", "spiffe:path/element", False),
    ("ID-1", "spiffe:///p", False),
    ("ID-1", "spiffe://", False),
    ("ID-1", "", False),
    ("ID-1", "spiffe", False),
    ("ID-1", "192.168.2.2:6688", False),
    ("ID-1", "SPIFFE://domain.test/path/element", False),
    ("ID-2", "spiffe://td/p?x", False),
    ("ID-2", "spiffe://td/p#f", False),
    ("ID-2", "spiffe://td?x", False),
    ("ID-2", "spiffe://td#f", False),
    ("ID-2", "spiffe://domain.test/path/element?#fragment-1", False),
    ("ID-3", "spiffe:///path/element", False),
    ("ID-4", "spiffe://u@td", False),
    ("ID-4", "spiffe://user:password@test.org/path/element", False),
    ("ID-4", "spiffe://td:443", False),
    ("ID-4", "spiffe://domain.test:/path/element", False),
    ("ID-5", "spiffe://Example.org", False),
    ("ID-5", "spiffe://example.ORG/p", False),
    ("ID-6", "spiffe://a-b_c.d0", True),
    ("ID-6", "spiffe://b\u00fccher.example", False),
    ("ID-6", "spiffe://xn--bcher-kva.example", True),
    ("ID-6", "spiffe://exa mple.org", False),
    ("ID-7", "spiffe://%62ad/p", False),
    ("ID-8", "spiffe://127.0.0.1/p", True),
    ("ID-8", "spiffe://127.000.000.001/p", True),
    ("ID-8", "spiffe://[::1]/p", False),
    ("ID-9", "spiffe://td/%41", False),
    ("ID-9", "spiffe://domain.test/path/elem%5uent", False),
    ("ID-10", "spiffe://td//p", False),
    ("ID-10", "spiffe://td/./p", False),
    ("ID-10", "spiffe://td/../p", False),
    ("ID-10", "spiffe://td/p/.", False),
    ("ID-10", "spiffe://td/p/..", False),
    ("ID-10", "spiffe://td/.a", True),
    ("ID-10", "spiffe://td/..a", True),
    ("ID-10", "spiffe://td/...", True),
    ("ID-11", "spiffe://td/", False),
    ("ID-11", "spiffe://td/p/", False),
    ("ID-12", "spiffe://td/A-Z_a.z-09", True),
    ("ID-12", "spiffe://domain.test/pa:th/element:", False),
    ("ID-12", "spiffe://domain.test/pa@th/element", False),
    ("ID-12", "spiffe://domain.test/p!a$t&h'/(e)l*e+m,e;n=t", False),
    ("ID-12", "spiffe://domain.test/path/elem[ent", False),
    ("ID-12", "spiffe://domain.test/spiffe://domain.test/path", False),
    ("ID-13", "spiffe://example.org/" + "a" * (2048 - len("spiffe://example.org/")), True),
    ("ID-13", "spiffe://example.org/" + "a" * (2049 - len("spiffe://example.org/")), False),
    ("ID-14", "spiffe://" + "a" * 255, True),
    ("ID-14", "spiffe://" + "a" * 256, False),
    ("ID-15", "spiffe://td/A", True),
    ("ID-15", "spiffe://td/a", True),
]


def py_id(s: str):
    """py-spiffe's reading: (ok, trust domain, path)."""
    try:
        sid = SpiffeId(s)
    except PySpiffeError:
        return (False, None, None)
    return (True, sid.trust_domain.name, sid.path)


def py_td(s: str):
    try:
        td = TrustDomain(s)
    except PySpiffeError:
        return (False, None, None)
    return (True, td.name, None)


def ours(report: dict):
    return (report["ok"], report["trust_domain"], report["path"])


def explain(report: dict, theirs, differences) -> Difference | None:
    """The table row that explains a disagreement, or None."""
    if ours(report) == theirs:
        raise AssertionError("explain() called on an agreement")
    if report["ok"] or not theirs[0]:
        return None  # every documented difference is "we reject, they accept"
    s = report["input"]
    for difference in differences:
        if difference.applies(s) and report["error_kind"] in difference.rust_error_kinds:
            return difference
    return None


def compare(reports: list[dict], py, differences) -> tuple[list, dict]:
    """Undocumented disagreements, and how often each documented row was used."""
    undocumented = []
    used = {d.name: 0 for d in differences}
    for report in reports:
        theirs = py(report["input"])
        if ours(report) == theirs:
            continue
        difference = explain(report, theirs, differences)
        if difference is None:
            undocumented.append((report["input"], ours(report), report["error_kind"], theirs))
        else:
            used[difference.name] += 1
    return undocumented, used


# Characters for the one-by-one loops: every code point 0..255 (the go-spiffe loop;
# 128..255 are the Latin-1 code points, two bytes in UTF-8), and some that Unicode
# case mapping or IDNA would turn into ASCII.
SPECIAL = ["\u212a", "\u212b", "\u0130", "\u0131", "\u017f", "\uff41", "\uff0e", "\u3002", "\u200b", "\U0001f600"]
CHARACTERS = [chr(cp) for cp in range(256)] + SPECIAL


def single_character_cases() -> list[str]:
    cases = []
    for ch in CHARACTERS:
        cases += [
            f"spiffe://trustdomain{ch}",
            f"spiffe://trust{ch}domain/path",
            f"spiffe://{ch}/path",
            f"spiffe://trustdomain/path{ch}",
            f"spiffe://trustdomain/pa{ch}th/x",
            f"spiffe://trustdomain/{ch}",
            f"{ch}spiffe://trustdomain/path",
        ]
    return cases


def random_cases(count: int = 20000, seed: int = 20260101) -> list[str]:
    """Random candidates, weighted towards the characters the rules look at."""
    rng = random.Random(seed)
    alphabet = (
        string.ascii_lowercase * 3
        + string.ascii_uppercase
        + string.digits * 2
        + "._-" * 6
        + "/" * 12
        + ":@%?#[] \t\n\x00"
        + "".join(SPECIAL)
        + "\u00e9\u00df"
    )
    prefixes = ["spiffe://"] * 12 + ["SPIFFE://", "Spiffe://", "spiffe:/", "spiffe:", "https://", ""]
    cases = []
    for _ in range(count):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        cases.append(rng.choice(prefixes) + body)
    # Near the length limits (ID-13, ID-14).
    for _ in range(200):
        td_len = rng.randint(250, 260)
        td = "".join(rng.choice(string.ascii_lowercase + ".-_") for _ in range(td_len))
        cases.append(SCHEME + td + "/p")
        # A path of random segments, cut to land near 2048 bytes in all.
        target = rng.randint(2040, 2056) - len("spiffe://example.org")
        path = ""
        while len(path) < target:
            path += "/" + "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 30)))
        cases.append("spiffe://example.org" + path[:target].rstrip("/"))
    return cases


def corpus() -> list[str]:
    cases = [c for _, c, _ in CONFORMANCE_CASES]
    cases += [d.witness for d in ID_DIFFERENCES]
    cases += single_character_cases()
    cases += random_cases()
    return list(dict.fromkeys(cases))


@pytest.fixture(scope="module")
def id_reports(probe):
    return probe.ids(corpus())


@pytest.mark.parametrize(
    "conformance, candidate, expected",
    CONFORMANCE_CASES,
    ids=[f"{cid}-{i}" for i, (cid, _, _) in enumerate(CONFORMANCE_CASES)],
)
def test_id_conformance_case(probe, conformance, candidate, expected):
    """ID-1 … ID-15: our result is the one the standard requires, and py-spiffe agrees
    unless a documented difference explains why not."""
    (report,) = probe.ids([candidate])
    assert report["ok"] is expected, (conformance, candidate, report)
    if expected:
        assert report["display"] == candidate  # no normalisation (ID-8)
    theirs = py_id(candidate)
    if ours(report) != theirs:
        assert explain(report, theirs, ID_DIFFERENCES), (candidate, report, theirs)


def test_id_corpus_agrees_with_py_spiffe(id_reports):
    """The whole corpus: every disagreement is in ID_DIFFERENCES, and every row of the
    table is exercised."""
    assert len(id_reports) > 20000
    accepted = sum(r["ok"] for r in id_reports)
    assert 1000 < accepted < len(id_reports) - 1000, "corpus is too one-sided to mean much"
    undocumented, used = compare(id_reports, py_id, ID_DIFFERENCES)
    assert not undocumented, f"{len(undocumented)} undocumented disagreements, e.g. {undocumented[:10]}"
    assert all(used.values()), f"documented differences never seen: {used}"


def test_id_6_every_character_as_trust_domain_suffix(probe):
    """ID-6: appended to a trust domain, only a-z, 0-9, '.', '-', '_' are accepted."""
    allowed = set(string.ascii_lowercase + string.digits + ".-_")
    reports = probe.ids([f"spiffe://trustdomain{ch}" for ch in CHARACTERS])
    for ch, report in zip(CHARACTERS, reports):
        # '/' starts the path, so "spiffe://trustdomain/" is a trailing slash (ID-11).
        assert report["ok"] is (ch in allowed), (repr(ch), report)
    undocumented, _ = compare(reports, py_id, ID_DIFFERENCES)
    assert not undocumented, undocumented


def test_id_12_every_character_in_path(probe):
    """ID-12: in a path segment, letters of both cases, digits, '.', '-', '_'."""
    allowed = set(string.ascii_letters + string.digits + ".-_")
    reports = probe.ids([f"spiffe://trustdomain/path{ch}" for ch in CHARACTERS])
    for ch, report in zip(CHARACTERS, reports):
        # '/' makes an empty last segment: a trailing slash (ID-11).
        assert report["ok"] is (ch in allowed), (repr(ch), report)
        if report["ok"]:
            assert (report["trust_domain"], report["path"]) == ("trustdomain", f"/path{ch}")
    undocumented, _ = compare(reports, py_id, ID_DIFFERENCES)
    assert not undocumented, undocumented


@pytest.mark.parametrize("difference", ID_DIFFERENCES, ids=lambda d: d.name)
def test_id_documented_difference_is_real(probe, difference):
    """Each row of ID_DIFFERENCES is a real, current difference: py-spiffe accepts the
    witness and we reject it with the documented error. If py-spiffe fixes its side,
    this fails and the row should go."""
    (report,) = probe.ids([difference.witness])
    assert py_id(difference.witness)[0], f"py-spiffe now rejects {difference.witness!r}"
    assert not report["ok"]
    assert report["error_kind"] in difference.rust_error_kinds, report


def test_id_5_upper_case_is_the_only_difference(id_reports, probe):
    """L-2: where py-spiffe accepts an upper-case scheme or trust domain, the lower-case
    spelling is accepted by us with exactly py-spiffe's trust domain and path."""
    upper = [
        r
        for r in id_reports
        if not r["ok"] and r["error_kind"] in ("UpperCaseScheme", "UpperCaseTrustDomain") and py_id(r["input"])[0]
    ]
    assert len(upper) > 100
    lowered = probe.ids([lower_scheme_and_td(r["input"]) for r in upper])
    mismatches = [
        (r["input"], ours(low), py_id(r["input"]))
        for r, low in zip(upper, lowered)
        # A lowered candidate can still break a rule the table documents (e.g. a
        # trailing newline), which must then be the reason.
        if ours(low) != py_id(r["input"]) and not explain(low, py_id(r["input"]), ID_DIFFERENCES)
    ]
    assert not mismatches, mismatches[:10]


# Trust domain names through TrustDomain::new and py-spiffe's TrustDomain().


def trust_domain_corpus() -> list[str]:
    rng = random.Random(7)
    alphabet = string.ascii_lowercase * 4 + string.ascii_uppercase + string.digits + "._-" * 4 + ":/@%\n \u212a\u00e9"
    cases = [f"trustdomain{ch}" for ch in CHARACTERS] + [f"{ch}trustdomain" for ch in CHARACTERS]
    cases += ["", "example.org", "127.0.0.1", "[::1]", "a" * 255, "a" * 256, "spiffe://example.org", "Example.org"]
    valid = string.ascii_lowercase + string.digits + "._-"
    cases += ["".join(rng.choice(valid) for _ in range(rng.randint(1, 30))) for _ in range(2500)]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    cases += [d.witness for d in TD_DIFFERENCES]
    return list(dict.fromkeys(cases))


def test_id_6_trust_domain_names_agree_with_py_spiffe(probe):
    reports = probe.trust_domains(trust_domain_corpus())
    assert sum(r["ok"] for r in reports) > 1000
    undocumented, used = compare(reports, py_td, TD_DIFFERENCES)
    assert not undocumented, f"{len(undocumented)} undocumented disagreements, e.g. {undocumented[:10]}"
    assert all(used.values()), f"documented differences never seen: {used}"


@pytest.mark.parametrize("difference", TD_DIFFERENCES, ids=lambda d: d.name)
def test_id_documented_trust_domain_difference_is_real(probe, difference):
    (report,) = probe.trust_domains([difference.witness])
    assert py_td(difference.witness)[0], f"py-spiffe now rejects {difference.witness!r}"
    assert not report["ok"]
    assert report["error_kind"] in difference.rust_error_kinds, report

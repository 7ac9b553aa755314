"""Schemathesis against a real tracker process: no operation of its OpenAPI schema answers 5xx.

The tracker is started as a subprocess with the integration tests' helper
(:class:`tests.integration.tracker.process.TrackerProcess`) and the schema is loaded from its
``/openapi.json``. Every operation then gets a bounded number of generated requests, valid
(positive) and invalid (negative) ones, sent three ways:

* unsigned, as anyone on the network would;
* signed (``Authorization: P2P-Ed25519 ...``) by a fuzz node the tracker has seen announce;
* signed, with the body's ``node_id`` / ``owner``, the path's node id and the ``node_id`` query
  set to that node and the path's file id set to a file it registered, so requests get past
  "you do not speak for this node" (403) and "no such file" (404) into the handlers.

Only ``not_a_server_error`` is checked: 4xx answers are all fine, a 5xx fails the test. The
run is derandomized, so a failure repeats; its curl reproducer is in the failure message.

The tracker serves what the helper starts (TLS by default, on 127.0.0.1): with an https URL
the requests skip certificate checks, as the helper's own clients do (it checks at start that
the certificate served is the one its ready line pins); a plain http URL is used as it is.

Record: with ``P2PSHARE_RECORD=1`` in the environment of pytest, a passing run rewrites
``tests/fuzz/records/tracker-schemathesis.txt`` (operations, requests, statuses seen). The
variable is taken out of the environment when this module is imported: the tracker refuses
unknown ``P2PSHARE_*`` variables, and a module fixture's process would inherit it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from p2pshare.security.keys import Identity, load_or_create_identity
from p2pshare.security.signing import body_sha256, sign_request
from tests.integration.tracker.process import TrackerProcess
from tests.integration.tracker.support import body as json_body
from tests.integration.tracker.support import manifest, node, registration

RECORD = os.environ.pop("P2PSHARE_RECORD", "") == "1"
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
RECORD_FILE = Path(__file__).parent / "records" / "tracker-schemathesis.txt"
EXAMPLES_PER_OPERATION = 36
"""Generated requests per operation (17 operations: about 550 requests, 25-40 s on 2 cores)."""
WAYS = ("unsigned", "signed", "as-signer")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SPEAKER_FIELDS = ("node_id", "owner", "requester")


class SignAs(requests.auth.AuthBase):
    """Sign each request that changes something as ``identity``: method, the path and query
    exactly as sent, and the SHA-256 of the body bytes (what the tracker checks)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the signature header to ``r``."""
        if r.method in CHANGES:
            raw = r.body or b""
            data = raw.encode("utf-8") if isinstance(raw, str) else raw
            r.headers.update(
                sign_request(
                    self.identity, r.method, r.path_url, body_sha256(data), now=time.time()
                )
            )
        return r


@dataclass
class Tally:
    """What a run sent and got: per operation, the statuses of each way of sending."""

    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)

    def add(self, label: str, way: str, status: int) -> None:
        """Count one answer."""
        self.statuses[label][f"{status} {way}"] += 1

    @property
    def requests(self) -> int:
        """Return how many requests were answered."""
        return sum(sum(c.values()) for c in self.statuses.values())

    def seen(self) -> Counter[int]:
        """Return how often each status was answered, over all operations."""
        total: Counter[int] = Counter()
        for counts in self.statuses.values():
            for key, n in counts.items():
                total[int(key.split()[0])] += n
        return total


@dataclass
class Target:
    """The running tracker as the fuzzer sees it."""

    base_url: str
    verify: bool
    identity: Identity
    tracker: TrackerProcess
    file_id: str = ""
    """A file the fuzz node registered (owner and only holder)."""


def signed_post(target: Target, path: str, doc: object) -> requests.Response:
    """POST ``doc`` as JSON to ``path``, signed by the fuzz node."""
    raw = json.dumps(doc).encode()
    signature = sign_request(target.identity, "POST", path, body_sha256(raw), now=time.time())
    return requests.post(
        f"{target.base_url}{path}",
        data=raw,
        headers={"content-type": "application/json", **signature},
        verify=target.verify,
        timeout=10,
    )


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Start a tracker process, announce the fuzz node, and stop the tracker afterwards."""
    root = tmp_path_factory.mktemp("schemathesis")
    identity = load_or_create_identity(root / "fuzz-node")
    tracker = TrackerProcess(data_dir=root / "data", log_dir=root)
    try:
        tracker.start()
        base_url, _, _fingerprint = tracker.url.partition("#")
        verify = not base_url.startswith("https://")
        t = Target(base_url, verify, identity, tracker)
        me = identity.node_id
        r = signed_post(t, "/v1/nodes/announce", json_body(node(me)))
        assert r.status_code == 200, r.text
        m = manifest(2, seed=21)
        r = signed_post(t, "/v1/files", json_body(registration(m, me, [me])))
        assert r.status_code == 201, r.text
        t.file_id = m.file_id
        yield t
    finally:
        tracker.stop()


def speak_as(case: Case, node_id: str, file_id: str) -> None:
    """Make ``case`` speak for ``node_id`` wherever it names a node, about ``file_id``."""
    if isinstance(case.body, dict):
        for name in SPEAKER_FIELDS:
            if name in case.body:
                case.body[name] = node_id
    if case.path_parameters and "node_id" in case.path_parameters:
        case.path_parameters["node_id"] = node_id
    if case.path_parameters and "file_id" in case.path_parameters:
        case.path_parameters["file_id"] = file_id
    if case.query and "node_id" in case.query:
        case.query["node_id"] = node_id


def fuzz_operation(
    operation: Any, target: Target, sessions: dict[str, requests.Session], tally: Tally
) -> None:
    """Send EXAMPLES_PER_OPERATION generated requests to ``operation``; raise on a 5xx."""
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, way=st.sampled_from(WAYS))
    def run(case: Case, way: str) -> None:
        if way == "as-signer":
            speak_as(case, target.identity.node_id, target.file_id)
        response = case.call(
            base_url=target.base_url,
            session=sessions[way],
            verify=target.verify,
            timeout=15,
        )
        tally.add(operation.label, way, response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()


def write_record(tally: Tally, operations: list[str], url: str, seconds: float) -> None:
    """Write the summary of a passing run to RECORD_FILE."""
    seen = tally.seen()
    lines = [
        "schemathesis against a real `p2pshare tracker` process "
        "(tests/fuzz/test_tracker_schemathesis.py)",
        f"run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, schemathesis {schemathesis.__version__}, "
        f"{seconds:.0f} s, tracker over {url.split(':')[0]}",
        "check: not_a_server_error only (any 5xx fails); derandomized; "
        f"{EXAMPLES_PER_OPERATION} generated cases per operation, positive and negative, "
        "each sent unsigned, signed by an announced fuzz node, or signed and speaking as it "
        "about a file it registered",
        "",
        f"operations covered: {len(tally.statuses)} of {len(operations)}",
    ]
    for label in operations:
        counts = tally.statuses.get(label, Counter())
        shown = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
        lines.append(f"  {label:<36} {sum(counts.values()):>4} requests  ({shown})")
    lines += [
        "",
        f"requests: {tally.requests}",
        "statuses seen: " + ", ".join(f"{s} x{n}" for s, n in sorted(seen.items())),
        "5xx: none" if not any(s >= 500 for s in seen) else "5xx: SEEN",
        "",
    ]
    RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    RECORD_FILE.write_text("\n".join(lines))


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_no_operation_answers_5xx(target: Target) -> None:
    """Every operation of /openapi.json, fuzzed unsigned and signed, answers below 500."""
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(
        f"{target.base_url}/openapi.json", verify=target.verify, timeout=10
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")  # the file is deleted last
    labels = [op.label for op in operations]
    assert len(labels) >= 10, labels
    assert any(label.startswith("POST ") for label in labels)
    sessions = {way: requests.Session() for way in WAYS}
    sessions["signed"].auth = SignAs(target.identity)
    sessions["as-signer"].auth = SignAs(target.identity)
    tally = Tally()
    try:
        for operation in operations:
            try:
                fuzz_operation(operation, target, sessions, tally)
            except Exception as exc:  # report every operation's failure, not only the first
                tally.failures.append(f"{operation.label}: {type(exc).__name__}: {exc}")
    finally:
        for session in sessions.values():
            session.close()
    assert not tally.failures, "\n\n".join(
        [*tally.failures, "tracker log (tail):", target.tracker.stderr()]
    )
    assert set(tally.statuses) == set(labels), "some operation was never called"
    seen = tally.seen()
    assert not [s for s in seen if s >= 500], seen
    assert tally.requests >= len(labels) * EXAMPLES_PER_OPERATION // 2
    assert {200, 401} <= set(seen), f"signing or the fuzz node did not work: {seen}"
    if RECORD:
        write_record(tally, labels, target.base_url, time.monotonic() - started)


# Known 5xx, found by the parser property tests (tests/unit/core/test_parsers_fuzz.py) and
# reproduced here over HTTP; they run after the fuzz run, on the same tracker.


def test_manifest_created_at_the_start_of_time_is_not_a_500(target: Target) -> None:
    """A creation time that cannot be moved to UTC is refused with a 4xx."""
    me = target.identity.node_id
    doc = json_body(registration(manifest(1, seed=11), me, [me]))
    doc["manifest"]["created"] = "0001-01-01T00:00:00+01:00"
    r = signed_post(target, "/v1/files", doc)
    assert r.status_code < 500, r.text


def test_a_file_with_an_early_year_is_refused_and_not_stored(target: Target) -> None:
    """An early creation year was once stored and then unreadable (500 on every read): it is
    refused with a 4xx, and the file id stays unknown."""
    me = target.identity.node_id
    m = manifest(2, seed=12)
    doc = json_body(registration(m, me, [me]))
    doc["manifest"]["created"] = "0999-01-01T00:00:00Z"
    r = signed_post(target, "/v1/files", doc)
    assert r.status_code == 422 and "1970" in r.text, r.text
    got = requests.get(f"{target.base_url}/v1/files/{m.file_id}", verify=target.verify, timeout=10)
    assert got.status_code == 404, got.text

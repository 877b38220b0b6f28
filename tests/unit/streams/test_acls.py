"""The permissions socialpulse needs (streams/acls.py), the docs that list them, and the messages."""

import re
from pathlib import Path

from aiokafka.errors import KafkaConnectionError

from streams import acls, clients
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
OPERATIONS_MD = ROOT / "docs" / "operations.md"


def _documented() -> set[tuple[str, str, bool, tuple[str, ...]]]:
    """The rows of the table under "ACLs the worker needs": (resource, name, prefixed, operations)."""
    text = OPERATIONS_MD.read_text()
    section = text[text.index("### ACLs the worker needs"):]
    table = section[section.index("| Resource"):]
    table = table[:table.index("\n\n")]
    rows = set()
    for line in table.splitlines()[2:]:
        resource, pattern, operations, _ = (c.strip() for c in line.strip("|").split("|"))
        kind = resource.split()[0].rstrip("s")
        ops = tuple(op.strip().upper() for op in operations.split(","))
        for name in re.findall(r"`([^`]+)`", resource):
            rows.add((kind, name.replace("<APP_ID>", "socialpulse"), pattern == "prefixed", ops))
    return rows


def test_the_documented_acls_are_exactly_what_the_check_asks_for():
    needed = {(n.resource, n.name, n.prefixed, n.operations) for n in acls.needs(Settings())}
    assert _documented() == needed


def test_the_needs_follow_the_topic_prefix_and_app_id():
    names = {n.name for n in acls.needs(Settings(topic_prefix="x.", app_id="x.sp"))}
    assert {"x.likes", "x.socialpulse.results", "x.socialpulse.by-", "x.sp-", "x.sp"} <= names
    assert {n.operations for n in acls.needs(Settings(), "generator")} == {("WRITE", "CREATE")}


def test_missing_reads_kafkas_authorized_operations_bits():
    need = acls.Need("topic", "t", ("READ", "WRITE", "CREATE"))
    bits = (1 << 3) | (1 << 8)  # READ, DESCRIBE
    assert acls.missing(need, bits) == ["WRITE", "CREATE"]
    assert acls.missing(need, bits, created=True) == ["WRITE"]  # an existing topic needs no Create
    assert acls.missing(need, -(2**31)) == []  # the broker did not say


def test_a_refusal_names_operation_resource_principal_and_the_docs():
    s = Settings(security_protocol="SASL_SSL", sasl_username="svc", topic_prefix="x.")
    need = acls.Need("topic", "x.socialpulse.by-", ("READ",), prefixed=True)
    msg = acls.refusal("READ", "topic", "x.socialpulse.by-account", s, need=need)
    assert "refused READ on topic x.socialpulse.by-account (TopicAuthorizationFailed) for SASL user 'svc'" in msg
    assert "grant READ on topics with the prefix x.socialpulse.by-" in msg and acls.DOCS in msg
    assert clients.explain(acls.Refused(msg), s) == msg


def test_a_scram_refusal_is_reported_as_refused_credentials_not_as_unreachable():
    s = Settings(security_protocol="SASL_SSL", sasl_username="u", sasl_mechanism="SCRAM-SHA-512")
    for exc in (KeyError("v"), ValueError("Server sent wrong signature!")):  # aiokafka's SCRAM client on "e=..."
        msg = clients.explain(exc, s)
        assert "refused the credentials" in msg and "cannot reach" not in msg
        for name in ("SOCIALPULSE_SASL_USERNAME", "SOCIALPULSE_SASL_PASSWORD", "SOCIALPULSE_SASL_MECHANISM"):
            assert name in msg
    assert not clients.refused_login(KeyError("x"))


def test_a_connection_closed_after_the_tls_handshake_suggests_a_client_certificate():
    msg = clients.explain(KafkaConnectionError("Connection at 127.0.0.1:9093 closed"), Settings(security_protocol="SSL"))
    assert "SOCIALPULSE_SSL_CERTFILE" in msg and "SOCIALPULSE_SSL_KEYFILE" in msg and "client certificate" in msg


def test_every_docs_section_a_message_points_at_exists():
    headings = {line.lstrip("#").strip() for line in OPERATIONS_MD.read_text().splitlines() if line.startswith("#")}
    cited = set()
    for path in (ROOT / "streams").rglob("*.py"):
        for quoted in re.findall(r"docs/operations\.md, ['\"]([^'\"]+)['\"]", path.read_text()):
            cited.add((path.name, " ".join(quoted.split())))  # a reference may wrap in a docstring
    cited |= {("acls.py", acls.DOCS.split("'")[1])}
    assert cited and {q for _, q in cited} <= headings, sorted(c for c in cited if c[1] not in headings)

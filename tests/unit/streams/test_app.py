"""The Faust app factory: consumer-group timing, security settings, quirks."""

import faust

from streams.app import create_app
from streams.settings import load_settings


def test_sasl_ssl_settings_reach_the_kafka_client(monkeypatch, tmp_path):
    monkeypatch.setenv("SOCIALPULSE_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SOCIALPULSE_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SOCIALPULSE_SASL_USERNAME", "svc-socialpulse")
    monkeypatch.setenv("SOCIALPULSE_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SOCIALPULSE_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("svc-socialpulse", "s3cret")
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.ssl_context is not None
    assert creds.protocol.value == "SASL_SSL"


def test_plaintext_by_default_and_fast_group_joins(tmp_path, monkeypatch):
    monkeypatch.setenv("SOCIALPULSE_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert app.conf.broker_credentials is None
    assert (app.conf.broker_session_timeout, app.conf.broker_heartbeat_interval) == (6.0, 1.0)
    # recovery reads changelogs to their true end (fetch high watermark) on every broker, with no setting
    assert app.conf.recovery_consistency_check is True and app.true_ends is True


def test_web_port_can_bind_to_loopback_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SOCIALPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SOCIALPULSE_WEB_HOST", "127.0.0.1")
    app = create_app(load_settings())
    assert app.conf.web_bind == "127.0.0.1" and str(app.conf.canonical_url) == "http://127.0.0.1:6066"


def test_start_up_creates_the_very_topics_faust_would_create_itself(tmp_path, monkeypatch):
    """Start-up creates the tables' changelogs and the assignor's leader topic before Faust
    subscribes (a topic Faust creates a moment before is missing from the metadata then, and its
    changelog is never read back): their names, partitions and compaction must be Faust's own."""
    from streams.families import STAGES
    from streams.pipeline import Pipeline
    from streams.topics import worker_internal_topics

    monkeypatch.setenv("SOCIALPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SOCIALPULSE_APP_ID", "acme.socialpulse")
    settings = load_settings()
    app = create_app(settings)
    pipeline = Pipeline(app, settings)
    names, compacted, single = worker_internal_topics(settings, (f"{stage}-state" for stage in STAGES))
    changelogs = {t.changelog_topic.get_topic_name(): t.changelog_topic for t in pipeline.tables.values()}
    assert set(compacted) == set(changelogs)
    for topic in changelogs.values():
        assert topic.partitions == settings.partitions and topic.compacting and not topic.deleting
    leader = app._leader_assignor._leader_topic  # type: ignore[attr-defined]
    assert single == [leader.get_topic_name()] and leader.partitions == 1
    assert set(names) == set(compacted) | set(single)

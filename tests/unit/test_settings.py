import pytest

from streams.settings import SettingsError, format_duration, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"), [("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("7d", 604_800_000), ("200ms", 200), ("15", 15_000)]
)
def test_durations_parse_to_milliseconds(text, ms):
    assert parse_duration(text) == ms


def test_duration_labels_are_the_shortest_exact_unit():
    assert [format_duration(v) for v in (60_000, 3_600_000, 86_400_000, 90_000, 1_500)] == ["1m", "1h", "1d", "90s", "1500ms"]


def test_defaults_match_the_contract():
    s = load_settings()
    assert s.broker == "kafka://localhost:9092"
    assert s.store == "rocksdb://"
    assert s.web_port == 6066 and s.partitions == 4
    assert s.bucket == 60_000
    assert s.trailing_windows == [300_000, 3_600_000]
    assert s.closed_windows == [60_000, 3_600_000, 86_400_000]
    assert (s.grace, s.idle, s.reply_slo, s.attribution_lookback) == (300_000, 5_000, 900_000, 604_800_000)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOCIALPULSE_GRACE", "30s")
    monkeypatch.setenv("SOCIALPULSE_TRAILING_WINDOWS", "1m,15m")
    monkeypatch.setenv("SOCIALPULSE_TOPIC_PREFIX", "acme.")
    s = load_settings()
    assert s.grace == 30_000 and s.trailing_windows == [60_000, 900_000]
    assert s.topic("likes") == "acme.likes"


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("SOCIALPULSE_GRACE", "soon", "SOCIALPULSE_GRACE"),
        ("SOCIALPULSE_WEB_PORT", "99999", "SOCIALPULSE_WEB_PORT"),
        ("SOCIALPULSE_PARTITIONS", "0", "SOCIALPULSE_PARTITIONS"),
        ("SOCIALPULSE_STORE", "redis://", "SOCIALPULSE_STORE"),
        ("SOCIALPULSE_BROKER", "localhost:9092", "SOCIALPULSE_BROKER"),
        ("SOCIALPULSE_TRAILING_WINDOWS", "90s", "SOCIALPULSE_TRAILING_WINDOWS"),
        ("SOCIALPULSE_DEDUP_HORIZON", "1m", "SOCIALPULSE_DEDUP_HORIZON"),
        ("SOCIALPULSE_SECURITY_PROTOCOL", "SASL_SSL", "SOCIALPULSE_SASL_USERNAME"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_setting(monkeypatch, var, value, named):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert named in str(exc.value)

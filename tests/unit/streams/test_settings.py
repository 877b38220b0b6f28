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
        ("SOCIALPULSE_DEDUP_HORIZON", "0s", "SOCIALPULSE_DEDUP_HORIZON"),
            ("SOCIALPULSE_ALLOWED_LATENESS", "soon", "SOCIALPULSE_ALLOWED_LATENESS"),
            ("SOCIALPULSE_BUCKET", "2m", "SOCIALPULSE_BUCKET"),
        ("SOCIALPULSE_SECURITY_PROTOCOL", "SASL_SSL", "SOCIALPULSE_SASL_USERNAME"),
        ("SOCIALPULSE_METRICS_ACCOUNTS", "instagram:acme", "SOCIALPULSE_METRICS_ACCOUNTS"),
        ("SOCIALPULSE_METRICS_ACCOUNTS", "myspace|acme", "SOCIALPULSE_METRICS_ACCOUNTS"),
        ("SOCIALPULSE_METRICS_ACCOUNTS", "x|", "SOCIALPULSE_METRICS_ACCOUNTS"),
        ("SOCIALPULSE_METRICS_TOP_ACCOUNTS", "-1", "SOCIALPULSE_METRICS_TOP_ACCOUNTS"),
        ("SOCIALPULSE_METRICS_TOP_ACCOUNTS", "many", "SOCIALPULSE_METRICS_TOP_ACCOUNTS"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_setting(monkeypatch, var, value, named):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert named in str(exc.value)


@pytest.mark.parametrize(
    ("env", "grace", "allowed"),
    [
        ({}, 300_000, 86_400_000),
        ({"SOCIALPULSE_GRACE": "10m"}, 600_000, 86_400_000),  # alone: nothing else to change
        ({"SOCIALPULSE_GRACE": "2d"}, 172_800_000, 172_800_000),  # the allowed lateness follows it
        ({"SOCIALPULSE_ALLOWED_LATENESS": "1m"}, 60_000, 60_000),  # and the grace follows that
        ({"SOCIALPULSE_DEDUP_HORIZON": "1m"}, 300_000, 86_400_000),  # of arrival time: no tie to the grace
    ],
)
def test_changing_one_setting_never_forces_another(monkeypatch, env, grace, allowed):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = load_settings()
    assert (settings.grace, settings.allowed_lateness) == (grace, allowed)


def test_a_truly_contradictory_pair_stops_start_up_naming_both(monkeypatch):
    monkeypatch.setenv("SOCIALPULSE_GRACE", "10m")
    monkeypatch.setenv("SOCIALPULSE_ALLOWED_LATENESS", "5m")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "SOCIALPULSE_ALLOWED_LATENESS" in str(exc.value) and "SOCIALPULSE_GRACE" in str(exc.value)


def test_a_familys_own_setting_stops_start_up_naming_it(monkeypatch):
    """Business hours are the replies family's to read (streams/families.py check_settings)."""
    from streams.families import check_settings

    monkeypatch.setenv("SOCIALPULSE_BUSINESS_HOURS", "instagram|acme=mon-fri 09:00-25:00")
    settings = load_settings()
    with pytest.raises(SettingsError) as exc:
        check_settings(settings)
    assert "SOCIALPULSE_BUSINESS_HOURS" in str(exc.value)
    monkeypatch.setenv("SOCIALPULSE_BUSINESS_HOURS", "instagram|acme=mon-fri 09:00-17:00")
    check_settings(load_settings())


def test_metrics_accounts_are_account_keys_in_the_order_given_and_top_accounts_default_to_100(monkeypatch):
    assert (load_settings().metrics_accounts, load_settings().metrics_top_accounts) == ((), 100)
    monkeypatch.setenv("SOCIALPULSE_METRICS_ACCOUNTS", " instagram|acme, x|acme-support ,instagram|acme,")
    monkeypatch.setenv("SOCIALPULSE_METRICS_TOP_ACCOUNTS", "0")
    s = load_settings()
    assert s.metrics_accounts == ("instagram|acme", "x|acme-support") and s.metrics_top_accounts == 0

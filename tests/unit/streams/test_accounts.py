"""Account settings as data (streams/accounts.py, streams/accounts_reader.py): the file, the
environment and the topic as three layers of one book, and what a bad source or record does."""

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streams.accounts import AccountBook, BookCollector, RecordRejected, book_for, decode_record, read_file
from streams.accounts_reader import AccountsReader
from streams.ingest import Raw
from streams.settings import SettingsError, load_settings

YAML = """
accounts:
  - platform: instagram
    account_id: shop
    timezone: Europe/Berlin
    business_hours:
      mon: ["09:00-12:00", "13:00-17:00"]
      sun: open
    sla_policies:
      - {name: dm, channels: [dm], first_reply: 15m, hours: business}
    currency: EUR
    benchmarks: {engagement_rate_by_followers: 0.01}
  - platform: x
    account_id: brand
    timezone: America/New_York
"""

TOML = """
[[accounts]]
platform = "instagram"
account_id = "shop"
timezone = "Europe/Berlin"
currency = "EUR"

[accounts.business_hours]
mon = ["09:00-12:00", "13:00-17:00"]
sun = "open"

[[accounts.sla_policies]]
name = "dm"
channels = ["dm"]
first_reply = "15m"
hours = "business"

[accounts.benchmarks]
engagement_rate_by_followers = 0.01

[[accounts]]
platform = "x"
account_id = "brand"
timezone = "America/New_York"
"""


def record(settings: dict) -> bytes:
    return json.dumps(settings).encode()


@pytest.mark.parametrize(("suffix", "text"), [(".yaml", YAML), (".yml", YAML), (".toml", TOML)])
def test_a_yaml_or_toml_file_gives_the_same_settings(tmp_path, suffix, text):
    path = tmp_path / f"accounts{suffix}"
    path.write_text(text)
    accounts = read_file(str(path))
    assert sorted(accounts) == ["instagram|shop", "x|brand"]
    shop = accounts["instagram|shop"]
    assert shop.timezone == "Europe/Berlin" and shop.currency == "EUR"
    assert shop.business_hours is not None and shop.business_hours.minutes(0) == [(540, 720), (780, 1020)]
    assert shop.business_hours.minutes(6) == [(0, 1440)] and shop.business_hours.minutes(2) == []
    assert shop.sla_policies[0].first_reply == 15 * 60_000 and shop.sla_policies[0].hours == "business"
    assert shop.benchmarks == {"engagement_rate_by_followers": 0.01}


@pytest.mark.parametrize(
    ("suffix", "text", "fragments"),
    [
        (".yaml", YAML.replace("first_reply: 15m", "first_reply: soon"),
         ["account instagram|shop", "sla_policies.0.first_reply"]),
        (".yaml", YAML.replace("America/New_York", "Mars/Olympus"), ["account x|brand", "timezone", "Mars/Olympus"]),
        (".toml", TOML.replace('currency = "EUR"', 'currency = "EURO"'), ["account instagram|shop", "currency"]),
        (".toml", TOML.replace('sun = "open"', 'sun = "always"'), ["account instagram|shop", "business_hours.sun"]),
        (".yaml", YAML + "    colour: red\n", ["account x|brand", "colour"]),
        (".yaml", YAML.replace("account_id: brand", "account_id: shop").replace("platform: x", "platform: instagram"),
         ["listed twice", "instagram|shop"]),
        (".yaml", "accounts: [\n", ["not YAML"]),
        (".toml", "[[accounts]\n", ["not TOML"]),
        (".json", "{}", ["use a .yaml, .yml or .toml file"]),
    ],
)
def test_a_bad_file_stops_start_up_naming_the_setting_the_account_and_the_field(tmp_path, suffix, text, fragments):
    path = tmp_path / f"accounts{suffix}"
    path.write_text(text)
    with pytest.raises(SettingsError) as exc:
        read_file(str(path))
    message = str(exc.value)
    assert "SOCIALPULSE_ACCOUNTS_FILE" in message
    for fragment in fragments:
        assert fragment in message, message
    # one line after the heading, as every bad setting
    assert message.count("\n") == 1


def test_a_missing_file_stops_start_up_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("SOCIALPULSE_ACCOUNTS_FILE", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "SOCIALPULSE_ACCOUNTS_FILE" in str(exc.value) and "no readable file" in str(exc.value)


def test_a_bad_file_stops_the_families_settings_check(monkeypatch, tmp_path):
    """The families read the book in ``from_settings``: ``check_settings`` (before Faust starts) stops."""
    from streams.families import check_settings

    path = tmp_path / "bad.yaml"
    path.write_text(YAML.replace("currency: EUR", "currency: EURO"))
    monkeypatch.setenv("SOCIALPULSE_ACCOUNTS_FILE", str(path))
    with pytest.raises(SettingsError) as exc:
        book_for(load_settings())
        check_settings(load_settings())
    assert "SOCIALPULSE_ACCOUNTS_FILE" in str(exc.value) and "account instagram|shop: currency" in str(exc.value)


def test_the_environment_becomes_settings_and_a_bad_entry_names_its_variable(tmp_path):
    settings = load_settings(account_timezones="instagram|shop=Europe/Paris,x|brand=Asia/Tokyo",
                             business_hours="instagram|shop=mon-fri 09:00-17:00")
    book = book_for(settings)
    shop = book.get("instagram|shop")
    assert shop is not None and shop.timezone == "Europe/Paris"
    assert shop.business_hours is not None and shop.business_hours.minutes(4) == [(540, 1020)]
    assert shop.business_hours.minutes(5) == []
    brand = book.get("x|brand")
    assert brand is not None and brand.timezone == "Asia/Tokyo" and brand.business_hours is None
    assert book_for(settings) is book  # one instance per process for these settings
    with pytest.raises(SettingsError) as exc:
        book_for(load_settings(business_hours="myspace|shop=mon-fri 09:00-17:00"))
    assert "SOCIALPULSE_BUSINESS_HOURS" in str(exc.value) and "myspace|shop" in str(exc.value)


def shop(**extra) -> dict:
    return {"platform": "instagram", "account_id": "shop", **extra}


def test_the_topic_wins_over_the_file_which_wins_over_the_environment(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(YAML)
    settings = load_settings(accounts_file=str(path), account_timezones="instagram|shop=Asia/Tokyo,tiktok|solo=UTC")
    book = AccountBook(read_file(str(path)), {k: v for k, v in book_for(settings).layers["environment"].items()})
    assert book.entry("tiktok|solo").source == "environment"
    assert book.entry("instagram|shop").source == "file" and book.get("instagram|shop").timezone == "Europe/Berlin"
    assert book.apply(b"instagram|shop", record(shop(timezone="America/Chicago"))) == "applied"
    found = book.entry("instagram|shop")
    assert found.source == "topic" and found.settings.timezone == "America/Chicago"
    # the layer wins whole: the topic's record has no currency, so the account has none
    assert found.settings.currency is None
    assert book.get("nobody|here") is None
    assert book.keys() == ["instagram|shop", "tiktok|solo", "x|brand"]


def test_a_tombstone_falls_back_to_the_file(tmp_path):
    path = tmp_path / "accounts.toml"
    path.write_text(TOML)
    book = AccountBook(read_file(str(path)))
    book.apply(b"instagram|shop", record(shop(timezone="UTC")))
    assert book.entry("instagram|shop").source == "topic"
    assert book.apply(b"instagram|shop", None) == "removed"
    assert book.entry("instagram|shop").source == "file" and book.get("instagram|shop").timezone == "Europe/Berlin"
    assert book.apply(b"tiktok|gone", b"") == "removed" and book.get("tiktok|gone") is None


def test_the_version_goes_up_on_every_change_and_only_then():
    book = AccountBook()
    assert book.version == 0
    book.apply(b"instagram|shop", record(shop(timezone="UTC")))
    assert book.version == 1
    book.apply(b"instagram|shop", record(shop(timezone="UTC")))  # the same again: nothing changed
    assert book.version == 1
    book.apply(b"instagram|shop", record(shop(timezone="Europe/Rome")))
    assert book.version == 2
    before = book.get("instagram|shop")
    book.apply(b"x|other", record({"platform": "x", "account_id": "other"}))
    assert book.version == 3 and book.get("instagram|shop") is before  # other accounts keep their object
    book.apply(b"instagram|shop", None)
    assert book.version == 4
    book.apply(b"instagram|shop", None)  # nothing left to remove
    assert book.version == 4


@pytest.mark.parametrize(
    ("key", "value", "reason", "fragment"),
    [
        (b"instagram|shop", b"{not json", "not_json", "account instagram|shop"),
        (b"instagram|shop", b"\xff\xfe", "not_json", "account instagram|shop"),
        (b"instagram|shop", record(shop(timezone="Mars/Olympus")), "invalid", "timezone"),
        (b"instagram|shop", record(shop(sla_policies=[{"name": "dm", "first_reply": "15m", "hours": "business"}])),
         "invalid", "business_hours"),
        (b"instagram|other", record(shop()), "invalid", "names another account"),
        (b"no-bar", record(shop()), "invalid", "not platform|account_id"),
        (None, record(shop()), "invalid", "not platform|account_id"),
        (b"\xff|x", record(shop()), "invalid", "not UTF-8"),
    ],
)
def test_a_bad_record_is_rejected_with_a_reason_and_changes_nothing(key, value, reason, fragment):
    book = AccountBook()
    book.apply(b"instagram|shop", record(shop(timezone="UTC")))
    before, version = book.get("instagram|shop"), book.version
    with pytest.raises(RecordRejected) as exc:
        book.apply(key, value)
    assert exc.value.reason == reason and fragment in exc.value.detail, exc.value.detail
    assert book.get("instagram|shop") is before and book.version == version
    assert book.keys() == ["instagram|shop"]


def test_decode_record_reads_a_tombstone_and_a_record():
    assert decode_record(b"x|a", None) == ("x|a", None)
    key, settings = decode_record(b"x|a", record({"platform": "x", "account_id": "a", "currency": "USD"}))
    assert key == "x|a" and settings is not None and settings.currency == "USD"


def test_the_reader_counts_outcomes_and_dead_letters_only_what_is_new():
    registry, rejected = CollectorRegistry(), []
    book = AccountBook()
    reader = AccountsReader(load_settings(topic_prefix="t-"), book, registry, rejected.append)
    assert reader.topic == "t-socialpulse.accounts"
    old = reader.started_ms - 60_000
    reader.handle(Raw(reader.topic, 0, 0, record(shop()), old), b"instagram|shop")
    reader.handle(Raw(reader.topic, 0, 1, b"{", old), b"instagram|shop")  # before this worker: its workers dead-lettered it
    assert rejected == []
    reader.handle(Raw(reader.topic, 1, 7, b"{", reader.started_ms + 5), b"x|a")  # written since this worker started
    reader.caught_up = True
    reader.handle(Raw(reader.topic, 0, 2, record(shop(currency="EUR")), old), b"x|other")
    reader.handle(Raw(reader.topic, 0, 3, None, old), b"instagram|shop")
    assert [(r.raw.partition, r.raw.offset, r.reason) for r in rejected] == [(1, 7, "not_json"), (0, 2, "invalid")]
    assert "names another account" in rejected[1].detail
    assert book.get("instagram|shop") is None and book.version == 2
    text = generate_latest(registry).decode()
    assert 'socialpulse_account_settings_total{outcome="applied"} 1.0' in text
    assert 'socialpulse_account_settings_total{outcome="invalid"} 3.0' in text
    assert 'socialpulse_account_settings_total{outcome="removed"} 1.0' in text


def test_benchmarks_and_the_version_are_exported(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(YAML)
    book = AccountBook(read_file(str(path)))
    registry = CollectorRegistry()
    registry.register(BookCollector(book))
    book.apply(b"x|brand", record({"platform": "x", "account_id": "brand", "benchmarks": {"click_through_rate": 0.02}}))
    text = generate_latest(registry).decode()
    assert ('socialpulse_account_benchmark{account="shop",metric="engagement_rate_by_followers",platform="instagram"} 0.01'
            in text)
    assert 'socialpulse_account_benchmark{account="brand",metric="click_through_rate",platform="x"} 0.02' in text
    assert "socialpulse_account_settings_version 1.0" in text


def test_the_settings_endpoint_names_the_layer(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from streams.app import create_app
    from streams.web import register_views

    from .test_web import Served

    path = tmp_path / "accounts.yaml"
    path.write_text(YAML)

    async def run():
        settings = load_settings(store="memory://", data_dir=str(tmp_path))
        app = create_app(settings)
        served = Served(app, settings)
        served.book = AccountBook(read_file(str(path)))
        served.book.apply(b"x|brand", record({"platform": "x", "account_id": "brand", "currency": "USD"}))
        register_views(app, served)
        client = TestClient(TestServer(app.web.web_app))
        await client.start_server()
        try:
            out = []
            for p in ("instagram/shop", "x/brand", "tiktok/nobody"):
                resp = await client.get(f"/api/v1/accounts/{p}/settings")
                out.append((resp.status, await resp.json()))
            return out
        finally:
            await client.close()

    (s1, shop_body), (s2, brand_body), (s3, _) = asyncio.run(run())
    assert s1 == 200 and shop_body["source"] == "file" and shop_body["timezone"] == "Europe/Berlin"
    assert shop_body["sla_policies"][0]["first_reply"] == 900_000 and shop_body["currency"] == "EUR"
    assert s2 == 200 and brand_body["source"] == "topic" and brand_body["currency"] == "USD" and brand_body["version"] == 1
    assert s3 == 404

"""Outputs (streams/outputs.py): results, records and dead letters reach their topics, and
tallies and counters add up, for every kind of output a family returns."""

from schemas.results import Result
from streams.exporter import Metrics
from streams.family import Forward, Gauge, Record, Tally
from streams.ingest import Raw, Rejection
from streams.outputs import Outputs
from streams.topics import BREACHES, DLQ, RESULTS


class Topic:
    def __init__(self, name):
        self.name, self.sent = name, []

    def send_soon(self, key=None, value=None, callback=None):
        self.sent.append((key, value))


class App:
    def __init__(self):
        self.made = {}

    def topic(self, name, **kwargs):
        return self.made.setdefault(name, Topic(name))


def sample(metrics, name, **labels):
    for fam in metrics.registry.collect():
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_every_output_goes_where_it_belongs_and_is_counted():
    app, metrics = App(), Metrics()
    metrics.add_counters([Gauge("socialpulse_reply_breaches_published", "breaches", (), "counter"),
                          Gauge("socialpulse_example_orders", "an example counter with a label", ("currency",), "counter")])
    out = Outputs(app, lambda name: f"p.{name}", {"p.likes": "likes"}, "p.", metrics)
    result = Result(family="engagement", metric="engagements", platform="x", account_id="a", window="1m",
                    window_start="2026-11-30T10:00:00Z", window_end="2026-11-30T10:01:00Z", value=3.0, key="k1")
    forward = Forward("account", "x|a", "credits", {"order_id": "o"}, "orders")
    forwards = out.publish([
        result, Record(BREACHES, "x|a|c1|t", b'{"b": 1}'), forward,
        Tally("socialpulse_reply_breaches_published", ()), Tally("socialpulse_example_orders", ("EUR",), 2.0),
    ])
    assert forwards == [forward]  # the pipeline routes these
    assert [k for k, _ in app.made[f"p.{RESULTS}"].sent] == [b"k1"]
    assert app.made[f"p.{BREACHES}"].sent == [(b"x|a|c1|t", b'{"b": 1}')]
    assert sample(metrics, "socialpulse_results_published_total", family="engagement") == 1.0
    assert sample(metrics, "socialpulse_reply_breaches_published_total") == 1.0  # a counter without labels
    assert sample(metrics, "socialpulse_example_orders_total", currency="EUR") == 2.0


def test_a_rejection_is_dead_lettered_and_counted_by_its_bare_topic():
    app, metrics = App(), Metrics()
    out = Outputs(app, lambda name: f"p.{name}", {"p.likes": "likes"}, "p.", metrics)
    out.reject([Rejection(Raw("p.likes", 0, 7, b"{bad", 0), "not_json", "not JSON")])
    (key, value), = app.made[f"p.{DLQ}"].sent
    assert b'"reason":"not_json"' in value and b'"offset":7' in value
    assert sample(metrics, "socialpulse_dead_letters_total", topic="likes", reason="not_json") == 1.0
    assert sample(metrics, "socialpulse_events_total", topic="likes", outcome="invalid") == 1.0

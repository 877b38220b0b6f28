"""Routing from the families' declared routes (streams/routing.py, streams/families.py)."""

import pytest

from schemas.events import INPUT_TOPICS, TOPIC_MODELS, of_account, of_shopper
from streams.families import ROUTER, STAGES
from streams.family import Route
from streams.routing import Router, RoutingError

T = 1_796_000_000_000


def event(topic, **fields):
    return TOPIC_MODELS[topic].model_validate({"event_id": "e", "ts": T} | fields)


def test_every_input_topic_has_one_primary_route_among_the_registered_families():
    for topic in INPUT_TOPICS:
        assert sum(primary for _, _, primary in ROUTER.table[topic]) == 1, topic


def test_a_click_counts_on_its_account_and_touches_its_shopper():
    click = event("clicks", platform="tiktok", account_id="b", actor_id="u1", click_id="k")
    assert ROUTER.routes("clicks", click) == [("account", "tiktok|b", True), ("actor", "u1", False)]
    order = event("orders", order_id="o", actor_id="u1", amount="5.00", currency="USD")
    assert ROUTER.routes("orders", order) == [("actor", "u1", True)]
    like = event("likes", platform="x", account_id="a", post_id="p", actor_id="u")
    assert ROUTER.routes("likes", like) == [("account", "x|a", True)]


class Fam:
    def __init__(self, *routes):
        self.routes = routes


def test_routes_that_contradict_each_other_stop_start_up():
    with pytest.raises(RoutingError, match="'likes' is routed to 'account' under two keys"):
        Router({"account": [Fam(Route("likes", of_account)), Fam(Route("likes", of_shopper))]}, topics=["likes"])
    with pytest.raises(RoutingError, match="'orders' needs exactly one primary route, has none"):
        Router({"actor": [Fam(Route("orders", of_shopper, primary=False))]}, topics=["orders"])
    with pytest.raises(RoutingError, match=r"has \['a', 'b'\]"):
        Router({"a": [Fam(Route("likes", of_account))], "b": [Fam(Route("likes", of_shopper))]}, topics=["likes"])


def test_a_family_is_registered_in_one_place():
    names = {cls.name for classes in STAGES.values() for cls in classes}
    assert names == {"engagement", "replies", "conversion", "funnel", "attribution", "sellers", "referrals"}


def test_posts_and_connections_count_on_their_account_and_a_referred_order_on_its_shopper():
    post = event("posts", platform="linkedin", account_id="a", post_id="p", author_id="ana")
    assert ROUTER.routes("posts", post) == [("account", "linkedin|a", True)]
    conn = event("connections", platform="linkedin", account_id="a", author_id="ana", actor_id="u", status="accepted")
    assert ROUTER.routes("connections", conn) == [("account", "linkedin|a", True)]
    order = event("orders", order_id="o", actor_id="u1", amount="5.00", currency="USD", referrer_id="ana")
    assert ROUTER.routes("orders", order) == [("actor", "u1", True)]  # joined to its referrer's account there

"""GET /api/v1/sellers/{platform}/{account_id}/{author_id} (streams/sellers/views.py) on a real
Faust web app, without a broker: one seller of the account's view, their rank in the team."""

import json

from tests.unit.streams.test_web import answers

SELLERS = {"window": "28d", "leaderboard": ["ben", "ana"], "targets": {},
           "sellers": {"ana": {"selling_index": "40.00", "posts": {"original": 2}},
                       "ben": {"selling_index": "55.50", "posts": {"original": 1}}}}


def with_sellers(served):
    served.view = lambda platform, account: {"watermark": "2026-12-07T10:00:00Z", "sellers": SELLERS} \
        if (platform, account) == ("linkedin", "acme") else None


def test_a_seller_with_their_rank_and_the_unknown_ones_answered_404_or_400(tmp_path):
    ana, nobody, no_account, bad = answers(
        tmp_path, with_sellers, "/api/v1/sellers/linkedin/acme/ana", "/api/v1/sellers/linkedin/acme/zoe",
        "/api/v1/sellers/linkedin/other/ana", "/api/v1/sellers/myspace/acme/ana")
    assert ana[0] == 200
    body = json.loads(ana[1])
    assert body | {"partition": None} == {
        "platform": "linkedin", "account_id": "acme", "author_id": "ana", "partition": None, "window": "28d",
        "watermark": "2026-12-07T10:00:00Z", "rank": 2, "team_size": 2, "selling_index": "40.00",
        "posts": {"original": 2}}
    assert nobody[0] == 404 and no_account[0] == 404 and bad[0] == 400

"""The generated Grafana boards: every query is PromQL, benchmarks sit only beside the
metric they measure, and the Funnel board's roll-ups give the right numbers on known
series (promtool evaluates them; the integration test runs them against a live worker)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.dashboards import (
    BOARDS,
    CTR_BENCHMARKS,
    ENGAGEMENT_BENCHMARKS,
    REPLY_OBJECTIVE,
    panel_queries,
    render_all,
)

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus is not installed")


def concrete(expr: str, window: str = "5m") -> str:
    """A panel query as Grafana sends it with 'All' selected."""
    return (
        expr.replace("$platform", ".*").replace("$account", ".*").replace("$window", window)
        .replace("$__rate_interval", "1m").replace("$model", "last_touch").replace("$channel", ".*")
        .replace("$policy", ".*").replace("$seller", ".*")
    )


def panels(board: str) -> list[dict[str, Any]]:
    return [p for p in json.loads(render_all()[f"{board}.json"])["panels"] if p["type"] != "row"]


def panel(board: str, title: str) -> dict[str, Any]:
    (found,) = [p for p in panels(board) if p["title"] == title]
    return found


def query(board: str, title: str, legend_part: str = "") -> str:
    (expr,) = [t["expr"] for t in panel(board, title)["targets"] if legend_part in t.get("legendFormat", "")]
    return concrete(expr)


def promtool_test(tmp_path: Path, series: dict[str, str], checks: list[tuple[str, list[tuple[dict[str, str], float]]]],
                  at: str = "10m") -> None:
    rules = tmp_path / "none.yml"
    rules.write_text("groups: []\n")
    spec = {
        "rule_files": [str(rules)], "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "promql_expr_test": [
                {"expr": expr, "eval_time": at, "exp_samples": [{"labels": _labels(lb), "value": v} for lb, v in want]}
                for expr, want in checks
            ],
        }],
    }
    path = tmp_path / "board_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_funnel_board_is_registered_with_its_uid_and_the_usual_variables():
    board = json.loads(render_all()["funnel.json"])
    assert "funnel" in BOARDS and board["uid"] == "socialpulse-funnel"
    assert [v["name"] for v in board["templating"]["list"]] == ["platform", "account", "window"]
    stages = [t["legendFormat"] for t in panel("funnel", "Funnel: $platform, trailing $window")["targets"]]
    assert stages == ["1 impressions", "2 engagements", "3 clicks", "4 sessions from social", "5 leads",
                      "6 checkouts started", "7 new customers"]
    titles = {p["title"] for p in panels("funnel")}
    assert {"Cost per 1000 impressions", "Cost per click", "Cost per lead", "Cost per acquisition",
            "Cart abandonment rate by source (last 1d)", "Social share of revenue"} <= titles


def test_every_benchmark_sits_beside_the_metric_it_measures_and_names_its_source():
    like = {  # benchmark source in the legend -> the live metric it may be drawn beside
        "Rival IQ": "socialpulse_post_engagement_rate_by_followers",
        "Chatdesk": "socialpulse_click_through_rate_by_type",
        "BigCommerce": "socialpulse_click_conversion_rate",
        "email pop-ups": "/ sum by (platform) (socialpulse_social_sessions",
    }
    seen = set()
    for board in BOARDS:
        for p in panels(board):
            legends = [t.get("legendFormat", "") for t in p.get("targets", [])]
            benchmarks = [lg for lg in legends if "benchmark" in lg]
            if not benchmarks:
                continue
            sources = {s for s in like if any(s in lg for lg in benchmarks)}
            assert len(sources) == 1, (board, p["title"], benchmarks)  # every benchmark line names its source
            (source,) = sources
            live = [t["expr"] for t in p["targets"] if "benchmark" not in t.get("legendFormat", "")]
            assert any(like[source] in e for e in live), (board, p["title"])
            assert not any("socialpulse_engagement_rate{" in e for e in live), (board, p["title"])
            assert p["fieldConfig"]["overrides"][0]["matcher"]["options"] == ".*benchmark.*"  # drawn dashed
            seen.add((board, source))
    assert seen == {("engagement", "Rival IQ"), ("engagement", "Chatdesk"), ("conversion", "BigCommerce"),
                    ("funnel", "Rival IQ"), ("funnel", "Chatdesk"), ("funnel", "BigCommerce"),
                    ("funnel", "email pop-ups")}


def test_benchmark_figures_are_the_published_ones():
    assert ENGAGEMENT_BENCHMARKS == {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035}
    assert CTR_BENCHMARKS == {("instagram", "organic"): 0.18, ("instagram", "paid"): 0.18,
                              ("tiktok", "organic"): 0.14, ("tiktok", "paid"): 0.023, ("facebook", "paid"): 0.09}


@needs_promtool
def test_every_panel_query_of_every_board_is_valid_promql(tmp_path):
    rules = [{"record": f"board:{board.removesuffix('.json')}:q{i}", "expr": concrete(expr)}
             for board, text in render_all().items() for i, (_, expr) in enumerate(panel_queries(text))]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_click_conversion_is_weighted_by_clicks_not_a_mean_of_accounts(tmp_path):
    w = 'window="5m"'
    series = {
        f'socialpulse_clicks{{platform="instagram", account="big", {w}}}': "1000x20",
        f'socialpulse_click_conversion_rate{{platform="instagram", account="big", {w}}}': "0.01x20",
        f'socialpulse_clicks{{platform="instagram", account="tiny", {w}}}': "1x20",
        f'socialpulse_click_conversion_rate{{platform="instagram", account="tiny", {w}}}': "1x20",
        # clicks but no conversion gauge (yet): left out of both sums
        f'socialpulse_clicks{{platform="instagram", account="new", {w}}}': "500x20",
    }
    expr = query("conversion", "Click conversion rate vs BigCommerce's 2-3%", "{{platform}}")
    promtool_test(tmp_path, series, [(expr, [({"platform": "instagram"}, 11 / 1001)])])


@needs_promtool
def test_benchmark_lines_show_only_for_platforms_and_types_on_the_board(tmp_path):
    series = {
        'socialpulse_engagements{platform="tiktok", account="a", window="5m"}': "5x20",
        'socialpulse_click_through_rate_by_type{platform="tiktok", account="a", window="5m", type="paid"}': "0.01x20",
        'socialpulse_click_through_rate_by_type{platform="facebook", account="b", window="5m", type="organic"}': "0.02x20",
    }
    rival = query("engagement", "Per-post engagement rate by followers vs Rival IQ", "benchmark")
    chatdesk = query("engagement", "Click-through rate, organic and paid, vs Chatdesk", "benchmark")
    promtool_test(tmp_path, series, [
        (rival, [({"platform": "tiktok"}, 0.0569)]),
        (chatdesk, [({"platform": "tiktok", "type": "paid"}, 0.023)]),  # no published figure for facebook organic
    ])


@needs_promtool
def test_funnel_costs_and_cart_abandonment_on_known_series(tmp_path):
    w = 'window="5m"'
    series = {
        f'socialpulse_spend{{platform="facebook", account="a", {w}, currency="USD"}}': "40x20",
        f'socialpulse_spend{{platform="facebook", account="b", {w}, currency="USD"}}': "20x20",
        f'socialpulse_impressions{{platform="facebook", account="a", {w}}}': "20000x20",
        f'socialpulse_impressions{{platform="facebook", account="b", {w}}}': "10000x20",
        f'socialpulse_new_customers{{platform="facebook", account="a", {w}}}': "2x20",
        # account b has no leads: its funnel series is absent, not 0
        f'socialpulse_leads{{platform="facebook", account="a", {w}}}': "10x20",
        'socialpulse_checkouts_total{source="facebook", outcome="started"}': "0+10x20",
        'socialpulse_checkouts_total{source="facebook", outcome="abandoned"}': "0+7x20",
        'socialpulse_checkouts_total{source="email", outcome="started"}': "0+5x20",  # none abandoned yet
    }
    f = "funnel"
    promtool_test(tmp_path, series, [
        (query(f, "Cost per 1000 impressions"), [({"platform": "facebook", "currency": "USD"}, 60 / 30000 * 1000)]),
        (query(f, "Cost per lead"), [({"platform": "facebook", "currency": "USD"}, 6.0)]),
        (query(f, "Cost per acquisition"), [({"platform": "facebook", "currency": "USD"}, 30.0)]),
        (query(f, "Cart abandonment rate by source (last 1d)"), [({"source": "email"}, 0.0), ({"source": "facebook"}, 0.7)]),
    ])


def test_replies_board_filters_by_channel_and_policy_and_has_the_new_views():
    board = json.loads(render_all()["replies.json"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["platform", "account", "window", "channel", "policy"]
    assert "socialpulse_reply_sla_total" in variables["policy"]["query"]
    titles = {p["title"] for p in panels("replies")}
    assert {"SLA met ratio by policy and channel (1h)", "SLA breaches by policy and channel (last 1h)",
            "First response vs follow-up reply time p50 / p90 by channel", "Bot-resolved share of waits by channel (1h)",
            "Outreach started (trailing window)", "Prospect response rate (trailing window)",
            "Time to prospect response p50 / p90 (1d)",
            "Median reply time per agent and team, hour by hour (last 7 days)"} <= titles
    for p in panels("replies"):  # every SLA query honours both filters (bot-resolved waits have no policy)
        for t in p.get("targets", []):
            if "socialpulse_reply_sla_total" in t["expr"] and "bot" not in t["expr"]:
                assert 'channel=~"$channel"' in t["expr"] and 'policy=~"$policy"' in t["expr"], p["title"]


def test_agent_hour_view_is_seven_days_of_hourly_cells_one_row_per_agent_and_the_team():
    p = panel("replies", "Median reply time per agent and team, hour by hour (last 7 days)")
    assert p["type"] == "heatmap" and p["options"]["calculate"] is False  # rows are the series, not computed buckets
    assert (p["timeFrom"], p["interval"], p["maxDataPoints"]) == ("7d", "1h", 168)
    legends = [t["legendFormat"] for t in p["targets"]]
    assert legends == ["{{agent}}", "team (all agents)"]
    for t in p["targets"]:  # each cell is exactly its hour: a [1h] rate evaluated every 1h
        assert "[1h]" in t["expr"] and "$__rate_interval" not in t["expr"]
        assert "socialpulse_agent_reply_latency_seconds_bucket" in t["expr"]
    assert "7 days" in p["description"] and "1h" in p["description"]


@needs_promtool
def test_sla_by_policy_and_channel_and_bot_share_on_known_series(tmp_path):
    a = 'platform="instagram", account="shop"'
    sla = "socialpulse_reply_sla_total"
    series = {  # per minute: dm 9 met 1 breached; comment (comments policy) 2 met 2 breached; dm bots 10
        f'{sla}{{{a}, channel="dm", policy="default", result="met"}}': "0+9x20",
        f'{sla}{{{a}, channel="dm", policy="default", result="breached"}}': "0+1x20",
        f'{sla}{{{a}, channel="comment", policy="comments", result="met"}}': "0+2x20",
        f'{sla}{{{a}, channel="comment", policy="comments", result="breached"}}': "0+2x20",
        f'socialpulse_bot_resolved_total{{{a}, channel="dm"}}': "0+10x20",
    }
    r = "replies"
    promtool_test(tmp_path, series, [
        (query(r, "SLA met ratio by policy and channel (1h)", "{{policy}}"),
         [({"policy": "comments", "channel": "comment"}, 0.5), ({"policy": "default", "channel": "dm"}, 0.9)]),
        (query(r, "SLA met ratio by policy and channel (1h)", "objective"), [({}, REPLY_OBJECTIVE)]),
        # comment has judged waits and no bot series: 0, not absent
        (query(r, "Bot-resolved share of waits by channel (1h)"), [({"channel": "comment"}, 0.0), ({"channel": "dm"}, 0.5)]),
    ], at="20m")


def test_sellers_board_has_its_leaderboards_pillars_network_and_referrals():
    board = json.loads(render_all()["sellers.json"])
    assert "sellers" in BOARDS and board["uid"] == "socialpulse-sellers"
    assert [v["name"] for v in board["templating"]["list"]] == ["platform", "account", "seller"]
    titles = {p["title"] for p in panels("sellers")}
    assert {"Leaderboard by selling index", "Leaderboard by attributed revenue", "Pillars over time", "Network size",
            "Referrals", "Referral revenue"} <= titles
    # the leaderboards never rank the folded sellers (seller="other" has no index of its own)
    assert 'seller!="other"' in query("sellers", "Leaderboard by selling index")


@needs_promtool
def test_sellers_acceptance_rate_is_a_ratio_of_sums(tmp_path):
    """Ana sent 4 requests (1 accepted), Ben 1 (accepted): 2 of 5, not the mean of 25% and 100%."""
    s = 'platform="linkedin", account="acme", window="28d"'
    series = {
        f'socialpulse_seller_connections{{{s}, seller="ana", status="requested"}}': "4x20",
        f'socialpulse_seller_connections{{{s}, seller="ana", status="accepted"}}': "1x20",
        f'socialpulse_seller_connections{{{s}, seller="ben", status="requested"}}': "1x20",
        f'socialpulse_seller_connections{{{s}, seller="ben", status="accepted"}}': "1x20",
    }
    promtool_test(tmp_path, series, [(query("sellers", "Acceptance rate"), [({"platform": "linkedin"}, 0.4)])])

"""Grafana boards, generated from code (grafana-foundation-sdk).

``python -m deploy.grafana.dashboards deploy/grafana/dashboards`` writes one JSON
file per board; ``tests/integration/test_observability.py`` checks them for drift
and runs every panel's query against a real Prometheus that scraped a real worker.
Never edit the JSON by hand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["BOARDS", "render_all", "panel_queries"]

DS = DataSourceRef(type_val="prometheus", uid="prometheus")
SEL = 'platform=~"$platform", account=~"$account"'
#: Published per-post engagement-rate benchmarks (METRICS.md), shown beside the live value.
ENGAGEMENT_BENCHMARKS = {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035}


def q(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    return query


def ts(title: str, unit: str, *queries: prometheus.Dataquery, desc: str = "", w: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).span(w).height(8)
    if desc:
        panel = panel.description(desc)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def st(title: str, unit: str, query: prometheus.Dataquery, w: int = 6) -> stat.Panel:
    return stat.Panel().title(title).unit(unit).datasource(DS).span(w).height(4).with_target(query)


def variable(name: str, query: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name).label(name).query(query).datasource(DS)
        .multi(True).include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title).uid(uid).description(description).tags(["socialpulse", "generated"])
        .refresh("10s").time("now-1h", "now").timezone("utc")
    )


def pipeline() -> db.Dashboard:
    return (
        base("socialpulse-pipeline", "socialpulse / Pipeline", "Is data flowing, and what is being rejected?")
        .with_row(db.Row("Flow"))
        .with_panel(st("Workers ready", "none", q("sum(socialpulse_ready)", instant=True)))
        .with_panel(st("Accepted events/s", "ops", q('sum(rate(socialpulse_events_total{outcome="accepted"}[$__rate_interval]))', instant=True)))
        .with_panel(st("Rejected share (5m)", "percentunit", q(
            'sum(rate(socialpulse_events_total{outcome!="accepted"}[5m])) / clamp_min(sum(rate(socialpulse_events_total[5m])), 1e-9)',
            instant=True)))
        .with_panel(st("Max consumer lag", "short", q("max(socialpulse_consumer_lag_messages)", instant=True)))
        .with_panel(ts("Events by topic and outcome", "ops", q(
            "sum by (topic, outcome) (rate(socialpulse_events_total[$__rate_interval]))", "{{topic}} {{outcome}}"), w=24))
        .with_row(db.Row("Rejections"))
        .with_panel(ts("Dead letters by reason", "ops", q(
            "sum by (reason) (rate(socialpulse_dead_letters_total[$__rate_interval]))", "{{reason}}")))
        .with_panel(ts("Dead letters by topic", "ops", q(
            "sum by (topic) (rate(socialpulse_dead_letters_total[$__rate_interval]))", "{{topic}}")))
        .with_row(db.Row("Time"))
        .with_panel(ts("Watermark lag (wall clock - watermark)", "s", q(
            "time() - socialpulse_watermark_timestamp_seconds", "{{stream}} p{{partition}}"),
            desc="How far event time trails the wall clock on each keyed partition."))
        .with_panel(ts("Event-time lag p50 / p99 (arrival - ts)", "s",
            q("histogram_quantile(0.5, sum by (le) (rate(socialpulse_event_time_lag_seconds_bucket[$__rate_interval])))", "p50"),
            q("histogram_quantile(0.99, sum by (le) (rate(socialpulse_event_time_lag_seconds_bucket[$__rate_interval])))", "p99")))
        .with_panel(ts("Consumer lag by partition", "short", q(
            "sum by (topic, partition) (socialpulse_consumer_lag_messages)", "{{topic}} p{{partition}}")))
        .with_panel(ts("Batch time p99 by stage", "s", q(
            "histogram_quantile(0.99, sum by (le, stage) (rate(socialpulse_batch_seconds_bucket[$__rate_interval])))", "{{stage}}")))
    )


def engagement() -> db.Dashboard:
    benchmark = " or ".join(
        f'label_replace(vector({v}), "platform", "{p}", "", "")' for p, v in sorted(ENGAGEMENT_BENCHMARKS.items())
    )
    return (
        base("socialpulse-engagement", "socialpulse / Engagement",
             "Engagement rate against the published benchmark, CTR, reach and follower growth.")
        .with_variable(variable("platform", "label_values(socialpulse_engagements, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_engagements{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_row(db.Row("Rates"))
        .with_panel(ts(
            "Engagement rate by platform vs benchmark", "percentunit",
            q(f'sum by (platform) (socialpulse_engagements{{{SEL}, window="$window"}}) / '
              f'sum by (platform) (socialpulse_impressions{{{SEL}, window="$window"}} > 0)', "{{platform}}"),
            q(f'({benchmark}) and on (platform) group by (platform) (socialpulse_engagements{{{SEL}}})',
              "{{platform}} benchmark"),
            desc="Engagements / impressions over the trailing window; dashed: Rival IQ per-post benchmark."))
        .with_panel(ts(
            "Click-through rate by platform", "percentunit",
            q(f'sum by (platform) (socialpulse_clicks{{{SEL}, window="$window"}}) / '
              f'sum by (platform) (socialpulse_impressions{{{SEL}, window="$window"}} > 0)', "{{platform}}")))
        .with_row(db.Row("Volume"))
        .with_panel(ts("Engagements", "short", q(
            f'sum by (platform, account) (socialpulse_engagements{{{SEL}, window="$window"}})', "{{platform}} {{account}}")))
        .with_panel(ts("Impressions", "short", q(
            f'sum by (platform, account) (socialpulse_impressions{{{SEL}, window="$window"}})', "{{platform}} {{account}}")))
        .with_row(db.Row("Audience"))
        .with_panel(ts("Followers", "short", q(
            f"sum by (platform, account) (socialpulse_followers{{{SEL}}})", "{{platform}} {{account}}")))
        .with_panel(ts("Follower growth in window", "short", q(
            f'sum by (platform, account) (socialpulse_follower_growth{{{SEL}, window="$window"}})', "{{platform}} {{account}}")))
        .with_panel(
            table.Panel().title("Accounts by engagement rate").datasource(DS).span(24).height(8).with_target(
                q(f'topk(20, socialpulse_engagement_rate{{{SEL}, window="$window"}})', instant=True)
            )
        )
    )


def window_variable() -> db.CustomVariable:
    return db.CustomVariable("window").label("window").values("5m,1h").current(
        VariableOption(selected=True, text="5m", value="5m")
    )


def replies() -> db.Dashboard:
    hist = "socialpulse_reply_latency_seconds_bucket"
    return (
        base("socialpulse-replies", "socialpulse / Replies",
             "How fast customers get an answer: latency, first response, SLA, backlog, agents.")
        .with_variable(variable("platform", "label_values(socialpulse_awaiting_reply, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_awaiting_reply{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_row(db.Row("Now"))
        .with_panel(st("Waiting for a reply", "none", q(f"sum(socialpulse_awaiting_reply{{{SEL}}})", instant=True)))
        .with_panel(st("Oldest wait", "s", q(
            f"time() - min(socialpulse_oldest_awaiting_reply_timestamp_seconds{{{SEL}}})", instant=True)))
        .with_panel(st("SLA met (1h)", "percentunit", q(
            f'sum(rate(socialpulse_reply_sla_total{{{SEL}, result="met"}}[1h])) / sum(rate(socialpulse_reply_sla_total{{{SEL}}}[1h]))',
            instant=True)))
        .with_panel(st("Breaches (1h)", "none", q(
            f'sum(increase(socialpulse_reply_sla_total{{{SEL}, result="breached"}}[1h]))', instant=True)))
        .with_row(db.Row("Speed"))
        .with_panel(ts("Reply latency quantiles (trailing window)", "s", q(
            f'max by (quantile) (socialpulse_reply_latency_window_seconds{{{SEL}, window="$window"}})', "p{{quantile}}"),
            desc="Exact quantiles of replies whose reply time lies in the trailing window."))
        .with_panel(ts("Reply latency p50 / p90 (histogram)", "s",
            q(f"histogram_quantile(0.5, sum by (le) (rate({hist}{{{SEL}}}[$__rate_interval])))", "p50"),
            q(f"histogram_quantile(0.9, sum by (le) (rate({hist}{{{SEL}}}[$__rate_interval])))", "p90")))
        .with_panel(ts("First response time p50 / p90", "s",
            q(f"histogram_quantile(0.5, sum by (le) (rate(socialpulse_first_response_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p50"),
            q(f"histogram_quantile(0.9, sum by (le) (rate(socialpulse_first_response_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p90")))
        .with_panel(ts("Response rate", "percentunit", q(
            f'socialpulse_response_rate{{{SEL}, window="$window"}}', "{{platform}} {{account}}")))
        .with_row(db.Row("SLA and backlog"))
        .with_panel(ts("SLA attainment (met / all, 1h)", "percentunit", q(
            f'sum by (platform, account) (rate(socialpulse_reply_sla_total{{{SEL}, result="met"}}[1h])) '
            f'/ sum by (platform, account) (rate(socialpulse_reply_sla_total{{{SEL}}}[1h]))', "{{platform}} {{account}}")))
        .with_panel(ts("Waiting now and oldest wait", "short",
            q(f"sum by (platform, account) (socialpulse_awaiting_reply{{{SEL}}})", "{{platform}} {{account}} waiting"),
            q(f"time() - min by (platform, account) (socialpulse_oldest_awaiting_reply_timestamp_seconds{{{SEL}}})",
              "{{platform}} {{account}} oldest (s)")))
        .with_row(db.Row("Team"))
        .with_panel(
            table.Panel().title("Median reply time per agent (1h)").datasource(DS).span(12).height(8).unit("s").with_target(
                q(f"histogram_quantile(0.5, sum by (agent, le) (rate(socialpulse_agent_reply_latency_seconds_bucket{{{SEL}}}[1h])))",
                  instant=True)
            )
        )
        .with_panel(
            heatmap.Panel().title("Replies by latency, hour by hour (set the range to 7 days for the week)")
            .datasource(DS).span(12).height(8).with_target(
                q(f"sum by (le) (increase({hist}{{{SEL}}}[1h]))", "{{le}}").format(PromQueryFormat.HEATMAP).interval("1h")
            )
        )
    )


def conversion() -> db.Dashboard:
    w = f'{SEL}, window="$window"'
    return (
        base("socialpulse-conversion", "socialpulse / Conversion",
             "Clicks joined to orders: conversion rate, attributed revenue by model, AOV, CPA and ROI.")
        .with_variable(variable("platform", "label_values(socialpulse_attributed_orders, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_attributed_orders{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_variable(
            db.CustomVariable("model").label("model").values("last_touch,first_touch,linear,time_decay,position_based")
            .current(VariableOption(selected=True, text="last_touch", value="last_touch"))
        )
        .with_row(db.Row("Conversion"))
        .with_panel(ts(
            "Conversion rate by platform vs the 2-3% e-commerce benchmark", "percentunit",
            q(f"sum by (platform) (socialpulse_attributed_orders{{{w}}}) / sum by (platform) (socialpulse_clicks{{{w}}} > 0)",
              "{{platform}}"),
            q("vector(0.02)", "benchmark low (2%)"), q("vector(0.03)", "benchmark high (3%)"),
            desc="Attributed (last-touch) orders / clicks in the trailing window. BigCommerce calls 2-3% good."))
        .with_panel(ts("Attributed orders", "short", q(
            f"sum by (platform, account) (socialpulse_attributed_orders{{{w}}})", "{{platform}} {{account}}")))
        .with_row(db.Row("Revenue"))
        .with_panel(ts("Revenue by platform ($model)", "short", q(
            f'sum by (platform, currency) (socialpulse_attributed_revenue{{{w}, model="$model"}})', "{{platform}} {{currency}}")))
        .with_panel(ts("Revenue by attribution model", "short", q(
            f"sum by (model, currency) (socialpulse_attributed_revenue{{{w}}})", "{{model}} {{currency}}"),
            desc="The same orders credited five ways; compare how each model shares them across platforms."))
        .with_panel(ts("Average order value", "short", q(
            f"avg by (platform, currency) (socialpulse_average_order_value{{{w}}})", "{{platform}} {{currency}}")))
        .with_panel(ts("Spend", "short", q(
            f"sum by (platform, currency) (socialpulse_spend{{{w}}})", "{{platform}} {{currency}}")))
        .with_row(db.Row("Campaigns"))
        .with_panel(
            table.Panel().title("CPA by campaign").datasource(DS).span(12).height(8).with_target(
                q(f"topk(20, socialpulse_campaign_cost_per_acquisition{{{w}}})", instant=True))
        )
        .with_panel(
            table.Panel().title("ROI by campaign").datasource(DS).span(12).height(8).unit("percentunit").with_target(
                q(f"topk(20, socialpulse_campaign_return_on_investment{{{w}}})", instant=True))
        )
        .with_panel(ts("CPA and ROI by account", "short",
            q(f"socialpulse_cost_per_acquisition{{{w}}}", "CPA {{platform}} {{account}} {{currency}}"),
            q(f"socialpulse_return_on_investment{{{w}}}", "ROI {{platform}} {{account}} {{currency}}"), w=24))
    )


BOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "pipeline": pipeline, "engagement": engagement, "replies": replies, "conversion": conversion,
}


def render(board: db.Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(board.build()) + "\n"


def render_all() -> dict[str, str]:
    return {f"{name}.json": render(fn()) for name, fn in BOARDS.items()}


def panel_queries(board_json: str) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    data: dict[str, Any] = json.loads(board_json)
    for panel in data.get("panels", []):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                yield panel["title"], target["expr"]


def main(directory: str) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "deploy/grafana/dashboards")

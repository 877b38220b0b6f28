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

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, VisibilityMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DynamicConfigValue, VariableOption, VariableRefresh
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["BOARDS", "render_all", "panel_queries"]

DS = DataSourceRef(type_val="prometheus", uid="prometheus")
SEL = 'platform=~"$platform", account=~"$account"'
# Published benchmarks (METRICS.md), each drawn only beside the live value it is like:
#: Rival IQ (via Bazaarvoice): engagement rate per post, by followers.
ENGAGEMENT_BENCHMARKS = {"facebook": 0.0006, "instagram": 0.0047, "tiktok": 0.0569, "x": 0.00035}
#: Chatdesk: click-through rate by platform and type (organic | paid); no figure where none is published.
CTR_BENCHMARKS = {
    ("facebook", "paid"): 0.09, ("instagram", "organic"): 0.18, ("instagram", "paid"): 0.18,
    ("tiktok", "organic"): 0.14, ("tiktok", "paid"): 0.023,
}
#: BigCommerce: an e-commerce conversion rate of 2-3% is good (a click cohort's orders / clicks).
CONVERSION_BENCHMARK = (0.02, 0.03)
#: Email pop-ups turn about 3.8% of visitors into leads (so: leads / sessions, not / clicks).
LEAD_BENCHMARK = 0.038
#: checkout sources that are not a social platform (socialpulse_checkouts_total{source})
NOT_SOCIAL = "direct|search|email|other|none"
#: attribution models (socialpulse_attributed_revenue{model})
MODELS = "last_touch,last_non_direct,first_touch,linear,time_decay,position_based"
#: benchmark series get a dashed line
DASHED = [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]


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
    if any("benchmark" in (query.build().legend_format or "") for query in queries):
        panel = panel.override_by_regexp(".*benchmark.*", DASHED)
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


def constant(value: float, **labels: str) -> str:
    """``vector(value)`` carrying ``labels`` (a benchmark line)."""
    expr = f"vector({value})"
    for name, label in labels.items():
        expr = f'label_replace({expr}, "{name}", "{label}", "", "")'
    return expr


def weighted(rate: str, weight: str, sel: str, by: str = "platform") -> str:
    """A per-account ratio gauge rolled up ``by`` as a ratio of sums: each account's
    ``rate`` weighted by its denominator ``weight`` (a mean of ratios lets a one-click
    account with one order read 100%)."""
    return (f"sum by ({by}) ({rate}{{{sel}}} * on (platform, account, window) {weight}{{{sel}}}) "
            f"/ sum by ({by}) ({weight}{{{sel}}} > 0 and on (platform, account, window) {rate}{{{sel}}})")


def post_engagement_vs_rival_iq(w: int = 12) -> timeseries.Panel:
    """Like for like: the per-post engagement rate by followers, as Rival IQ measures it."""
    bench = " or ".join(constant(v, platform=p) for p, v in sorted(ENGAGEMENT_BENCHMARKS.items()))
    return ts(
        "Per-post engagement rate by followers vs Rival IQ", "percentunit",
        q(f'avg by (platform) (socialpulse_post_engagement_rate_by_followers{{{SEL}, window="$window"}})', "{{platform}}"),
        q(f"({bench}) and on (platform) group by (platform) (socialpulse_engagements{{{SEL}}})",
          "{{platform}} benchmark (Rival IQ per post)"),
        desc="Mean over the window's posts of post engagements / followers (averaged over the selected accounts). "
             "Dashed: Rival IQ's per-post, by-followers benchmark (via Bazaarvoice): Facebook 0.06%, Instagram "
             "0.47%, TikTok 5.69%, X 0.035%. Engagements / impressions over a window is a different ratio: "
             "never compare it with these.", w=w)


def ctr_vs_chatdesk(w: int = 12) -> timeseries.Panel:
    """Organic and paid CTR apart, each beside Chatdesk's figure for that type."""
    bench = " or ".join(constant(v, platform=p, type=t) for (p, t), v in sorted(CTR_BENCHMARKS.items()))
    return ts(
        "Click-through rate, organic and paid, vs Chatdesk", "percentunit",
        q(f'sum by (platform) (socialpulse_clicks{{{SEL}, window="$window"}}) / '
          f'sum by (platform) (socialpulse_impressions{{{SEL}, window="$window"}} > 0)', "{{platform}} all"),
        q(f'avg by (platform, type) (socialpulse_click_through_rate_by_type{{{SEL}, window="$window"}})',
          "{{platform}} {{type}}"),
        q(f"({bench}) and on (platform, type) group by (platform, type) "
          f"(socialpulse_click_through_rate_by_type{{{SEL}}})", "{{platform}} {{type}} benchmark (Chatdesk)"),
        desc="Clicks / impressions over the trailing window, all and split organic / paid (averaged over the "
             "selected accounts). Dashed: Chatdesk's benchmarks for the same type: Instagram 18% organic and "
             "ads, TikTok 14% organic and 2.3% ads, Facebook 9% ads.", w=w)


def click_conversion_vs_bigcommerce(w: int = 12) -> timeseries.Panel:
    low, high = CONVERSION_BENCHMARK
    return ts(
        "Click conversion rate vs BigCommerce's 2-3%", "percentunit",
        q(weighted("socialpulse_click_conversion_rate", "socialpulse_clicks", f'{SEL}, window="$window"'),
          "{{platform}}"),
        q(f"vector({low})", "benchmark low 2% (BigCommerce)"), q(f"vector({high})", "benchmark high 3% (BigCommerce)"),
        desc="Of the window's clicks, the share that are the last non-direct touch of an order (never above 1), "
             "weighted by each account's clicks. BigCommerce calls a 2-3% e-commerce conversion rate good. "
             "Leads that became customers are a different ratio (lead-to-customer rate, Funnel board).", w=w)


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
    return (
        base("socialpulse-engagement", "socialpulse / Engagement",
             "Engagement rate and CTR, each beside the published benchmark it is like; reach and follower growth.")
        .with_variable(variable("platform", "label_values(socialpulse_engagements, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_engagements{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_row(db.Row("Rates"))
        .with_panel(ts(
            "Engagement rate by platform (engagements / impressions)", "percentunit",
            q(f'sum by (platform) (socialpulse_engagements{{{SEL}, window="$window"}}) / '
              f'sum by (platform) (socialpulse_impressions{{{SEL}, window="$window"}} > 0)', "{{platform}}"),
            desc="Engagements / impressions over the trailing window. No published benchmark measures this: "
                 "Rival IQ's figures are per post and by followers (next panel).", w=8))
        .with_panel(post_engagement_vs_rival_iq(w=8))
        .with_panel(ctr_vs_chatdesk(w=8))
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


#: the SLO every reply policy is held to (deploy/prometheus/rules/replies.yml): 95% of spells met
REPLY_OBJECTIVE = 0.95


def quantiles(metric: str, sel: str, by: str, legend: str, rng: str = "$__rate_interval") -> list[prometheus.Dataquery]:
    """p50 and p90 of a histogram, ``by`` labels (besides ``le``)."""
    return [q(f"histogram_quantile({p}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{rng}])))", f"{legend} p{n}")
            for p, n in ((0.5, 50), (0.9, 90))]


def agent_week(sel: str) -> heatmap.Panel:
    """Weekday x hour of reply time per agent and for the team: a heatmap whose rows are the
    agents (and the team) and whose columns are the hours of the last 7 days."""
    hist = "socialpulse_agent_reply_latency_seconds_bucket"
    return (
        heatmap.Panel().title("Median reply time per agent and team, hour by hour (last 7 days)")
        .datasource(DS).span(24).height(9).time_from("7d").interval("1h").max_data_points(7 * 24)
        .calculate(False).show_value(VisibilityMode.AUTO)
        .color(heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("RdYlGn").reverse(True)
               .scale(HeatmapColorScale.EXPONENTIAL).exponent(0.5))
        .cell_values(heatmap.CellValues().unit("s"))
        .description(
            "One row per agent (the MAX_AGENTS most recently active; the rest as 'other') and one for the team, "
            "one cell per hour of the last 7 days (the panel's own range, 1h resolution): the median of the "
            "replies made in that hour, from socialpulse_agent_reply_latency_seconds (rate over [1h], evaluated "
            "every 1h, so each cell is exactly its hour; the x axis reads Mon 00:00 ... Sun 23:00 in UTC). "
            "An empty cell: no reply that hour. Bounded: 168 columns x (MAX_AGENTS + 2) rows. Not split by "
            "channel (the agent histogram has no channel label).")
        .with_target(q(f"histogram_quantile(0.5, sum by (le, agent) (rate({hist}{{{sel}}}[1h])))", "{{agent}}"))
        .with_target(q(f"histogram_quantile(0.5, sum by (le) (rate({hist}{{{sel}}}[1h])))", "team (all agents)"))
    )


def replies() -> db.Dashboard:
    hist = "socialpulse_reply_latency_seconds_bucket"
    ch = f'{SEL}, channel=~"$channel"'  # series that carry a channel
    pol = f'{ch}, policy=~"$policy"'  # socialpulse_reply_sla_total
    sla = "socialpulse_reply_sla_total"
    bots = f"sum by (channel) (rate(socialpulse_bot_resolved_total{{{ch}}}[1h]))"
    judged = f"sum by (channel) (rate({sla}{{{ch}}}[1h]))"
    w = f'{SEL}, window="$window"'
    return (
        base("socialpulse-replies", "socialpulse / Replies",
             "How fast customers get an answer: latency, first response and follow-ups, SLA per policy and "
             "channel, bots, backlog, agents by hour, and how prospects answer outreach.")
        .with_variable(variable("platform", "label_values(socialpulse_awaiting_reply, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_awaiting_reply{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_variable(variable(
            "channel", 'label_values(socialpulse_reply_latency_seconds_count{platform=~"$platform", '
                       'account=~"$account"}, channel)'))
        .with_variable(variable(
            "policy", f'label_values({sla}{{platform=~"$platform", account=~"$account"}}, policy)'))
        .with_row(db.Row("Now"))
        .with_panel(st("Waiting for a reply", "none", q(f"sum(socialpulse_awaiting_reply{{{SEL}}})", instant=True)))
        .with_panel(st("Oldest wait", "s", q(
            f"time() - min(socialpulse_oldest_awaiting_reply_timestamp_seconds{{{SEL}}})", instant=True)))
        .with_panel(st("SLA met (1h)", "percentunit", q(
            f'sum(rate({sla}{{{pol}, result="met"}}[1h])) / sum(rate({sla}{{{pol}}}[1h]))', instant=True)))
        .with_panel(st("Breaches (1h)", "none", q(
            f'sum(increase({sla}{{{pol}, result="breached"}}[1h]))', instant=True)))
        .with_row(db.Row("Speed"))
        .with_panel(ts("Reply latency quantiles (trailing window)", "s", q(
            f'max by (quantile) (socialpulse_reply_latency_window_seconds{{{w}}})', "p{{quantile}}"),
            desc="Exact quantiles of replies whose reply time lies in the trailing window (every channel)."))
        .with_panel(ts("Reply latency p50 / p90 (histogram)", "s",
            q(f"histogram_quantile(0.5, sum by (le) (rate({hist}{{{ch}}}[$__rate_interval])))", "p50"),
            q(f"histogram_quantile(0.9, sum by (le) (rate({hist}{{{ch}}}[$__rate_interval])))", "p90"),
            desc="Every human reply, first and follow-up, of the selected channels."))
        .with_panel(ts("First response vs follow-up reply time p50 / p90 by channel", "s",
            *quantiles("socialpulse_first_response_seconds", ch, "channel", "first {{channel}}"),
            *quantiles("socialpulse_followup_reply_seconds", ch, "channel", "follow-up {{channel}}"),
            desc="First response: the customer's first message to the conversation's first human reply. "
                 "Follow-up: a later message (after the first response, or after a bot's hand-off) to the next "
                 "human reply. Calendar time."))
        .with_panel(ts("First response vs follow-up in business hours p50 / p90 by channel", "s",
            *quantiles("socialpulse_first_response_business_seconds", ch, "channel", "first {{channel}}"),
            *quantiles("socialpulse_followup_reply_business_seconds", ch, "channel", "follow-up {{channel}}"),
            desc="The same waits counted in the account's business hours (accounts that have business hours "
                 "only: the others have no series here)."))
        .with_panel(ts("Response rate", "percentunit", q(
            f'socialpulse_response_rate{{{w}}}', "{{platform}} {{account}}")))
        .with_panel(ts("Bot-resolved share of waits by channel (1h)", "percentunit", q(
            f"({bots} or 0 * {judged}) / ((({bots} or 0 * {judged}) + ({judged} or 0 * {bots})) > 0)",
            "{{channel}}"),
            desc="Of the waits that ended in the last hour, the share a bot ended without a human reply: "
                 "bot-resolved / (bot-resolved + met + breached). A channel with judged waits and no bot-resolved "
                 "series reads 0. A wait that breached before the bot answered counts in both."))
        .with_row(db.Row("SLA by policy and channel"))
        .with_panel(ts("SLA met ratio by policy and channel (1h)", "percentunit",
            q(f'sum by (policy, channel) (rate({sla}{{{pol}, result="met"}}[1h])) '
              f'/ (sum by (policy, channel) (rate({sla}{{{pol}}}[1h])) > 0)', "{{policy}} {{channel}}"),
            q(f"vector({REPLY_OBJECTIVE})", "objective 95% (every policy)"),
            desc="Waits judged in the last hour against their policy's target (the account's first SLA policy "
                 "that matches the platform and channel; 'default' = SOCIALPULSE_REPLY_SLO): met / (met + "
                 "breached). Every policy's objective is 95% met; the burn-rate alerts page per policy."))
        .with_panel(ts("SLA breaches by policy and channel (last 1h)", "short", q(
            f'sum by (policy, channel) (increase({sla}{{{pol}, result="breached"}}[1h]))', "{{policy}} {{channel}}"),
            desc="Waits that breached their policy's target in the trailing hour."))
        .with_panel(ts("Error budget burn rate by policy (worst account, 1h)", "short", q(
            f'max by (policy) (socialpulse:reply_sla_error_ratio:rate1h{{{SEL}, policy=~"$policy"}}) '
            f"/ {1 - REPLY_OBJECTIVE:.2f}", "{{policy}}"),
            desc="Breached share over 1h / the 5% error budget (recording rule socialpulse:reply_sla_error_"
                 "ratio:rate1h), the worst account per policy. 1 uses the budget exactly in the SLO period; "
                 "14.4 (with 5m confirming) pages, 6 over 6h pages, 3 over 1d opens a ticket."))
        .with_panel(ts("SLA attainment by account (met / all, 1h)", "percentunit", q(
            f'sum by (platform, account) (rate({sla}{{{pol}, result="met"}}[1h])) '
            f'/ sum by (platform, account) (rate({sla}{{{pol}}}[1h]))', "{{platform}} {{account}}")))
        .with_row(db.Row("Backlog"))
        .with_panel(ts("Waiting now and oldest wait", "short",
            q(f"sum by (platform, account) (socialpulse_awaiting_reply{{{SEL}}})", "{{platform}} {{account}} waiting"),
            q(f"time() - min by (platform, account) (socialpulse_oldest_awaiting_reply_timestamp_seconds{{{SEL}}})",
              "{{platform}} {{account}} oldest (s)"), w=24))
        .with_row(db.Row("Team"))
        .with_panel(agent_week(SEL))
        .with_panel(
            table.Panel().title("Median reply time per agent (1h)").datasource(DS).span(12).height(8).unit("s").with_target(
                q(f"histogram_quantile(0.5, sum by (agent, le) (rate(socialpulse_agent_reply_latency_seconds_bucket{{{SEL}}}[1h])))",
                  instant=True)
            )
        )
        .with_panel(
            heatmap.Panel().title("Replies by latency, hour by hour (set the range to 7 days for the week)")
            .datasource(DS).span(12).height(8).with_target(
                q(f"sum by (le) (increase({hist}{{{ch}}}[1h]))", "{{le}}").format(PromQueryFormat.HEATMAP).interval("1h")
            )
        )
        .with_row(db.Row("Outreach (the seller wrote first)"))
        .with_panel(ts("Outreach started (trailing window)", "short", q(
            f"sum by (platform, account) (socialpulse_outreach_started{{{w}}})", "{{platform}} {{account}}"),
            desc="Outreach conversations (the seller's message came first) started in the trailing window; "
                 "counted once the watermark passes the first message plus grace.", w=8))
        .with_panel(ts("Prospect response rate (trailing window)", "percentunit", q(
            weighted("socialpulse_prospect_response_rate", "socialpulse_outreach_started", w), "{{platform}}"),
            desc="Of the outreach started in the trailing window, the share the prospect has answered so far "
                 "(within OUTREACH_WINDOW), weighted by each account's outreach. Recent outreach still has time "
                 "to be answered: the latest points rise later. Daily cohorts: the replies results topic.", w=8))
        .with_panel(ts("Time to prospect response p50 / p90 (1d)", "s",
            *quantiles("socialpulse_prospect_response_seconds", SEL, "platform", "{{platform}}", rng="1d"),
            desc="The seller's first message to the prospect's answer (answered outreach only), over the trailing "
                 "day: prospects answer in hours, so a short rate window would be mostly empty.", w=8))
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
            db.CustomVariable("model").label("model").values(MODELS)
            .current(VariableOption(selected=True, text="last_touch", value="last_touch"))
        )
        .with_row(db.Row("Conversion"))
        .with_panel(click_conversion_vs_bigcommerce())
        .with_panel(ts("Attributed orders", "short", q(
            f"sum by (platform, account) (socialpulse_attributed_orders{{{w}}})", "{{platform}} {{account}}")))
        .with_row(db.Row("Revenue"))
        .with_panel(ts("Revenue by platform ($model)", "short", q(
            f'sum by (platform, currency) (socialpulse_attributed_revenue{{{w}, model="$model"}})', "{{platform}} {{currency}}")))
        .with_panel(ts("Revenue by attribution model", "short", q(
            f"sum by (model, currency) (socialpulse_attributed_revenue{{{w}}})", "{{model}} {{currency}}"),
            desc="The same orders credited six ways; compare how each model shares them across platforms."))
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


def funnel() -> db.Dashboard:
    """Impressions to new customers per platform: the volume at each step, the rate from
    step to step, what each step costs, and the benchmarks that measure the same thing."""
    w = f'{SEL}, window="$window"'
    # checkouts are counted by the source of the shopper's last touch, not per account
    started = f'socialpulse_checkouts_total{{outcome="started", source=~"$platform", source!~"{NOT_SOCIAL}"}}'
    started_by_platform = (f'sum by (platform) (label_replace(increase({started}[$window]), '
                           f'"platform", "$1", "source", "(.*)"))')

    def per_platform(metric: str) -> str:
        return f"sum by (platform) ({metric}{{{w}}})"

    def cost(title: str, per: str, desc: str, scale: str = "") -> timeseries.Panel:
        return ts(title, "short", q(
            f"sum by (platform, currency) (socialpulse_spend{{{w}}}) / on (platform) group_left () "
            f"sum by (platform) ({per}{{{w}}} > 0){scale}", "{{platform}} {{currency}}"), desc=desc, w=6)

    stages = [
        ("1 impressions", f"sum(socialpulse_impressions{{{w}}})"),
        ("2 engagements", f"sum(socialpulse_engagements{{{w}}})"),
        ("3 clicks", f"sum(socialpulse_clicks{{{w}}})"),
        ("4 sessions from social", f"sum(socialpulse_social_sessions{{{w}}})"),
        ("5 leads", f"sum(socialpulse_leads{{{w}}})"),
        ("6 checkouts started", f"sum(increase({started}[$window]))"),
        ("7 new customers", f"sum(socialpulse_new_customers{{{w}}})"),
    ]
    volumes = (
        bargauge.Panel().title("Funnel: $platform, trailing $window").datasource(DS).span(24).height(8)
        .unit("short").orientation(VizOrientation.HORIZONTAL).display_mode(BarGaugeDisplayMode.GRADIENT)
        .repeat("platform").repeat_direction("h")
        .description("One funnel per selected platform: impressions, engagements, clicks, sessions its links "
                     "brought, leads, checkouts started by shoppers whose last touch was this platform (not per "
                     "account: the account filter does not apply), and new customers (first order attributed here).")
    )
    for legend, expr in stages:
        volumes = volumes.with_target(q(expr, legend, instant=True))
    abandoned = 'socialpulse_checkouts_total{outcome="abandoned"}'
    started_all = 'socialpulse_checkouts_total{outcome="started"}'
    return (
        base("socialpulse-funnel", "socialpulse / Funnel",
             "The selling funnel per platform: impressions to new customers, the rate at each step, the cost per "
             "step, and benchmarks drawn like for like.")
        .with_variable(variable("platform", "label_values(socialpulse_clicks, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_clicks{platform=~"$platform"}, account)'))
        .with_variable(window_variable())
        .with_row(db.Row("Funnel"))
        .with_panel(volumes)
        .with_row(db.Row("Rate at each step"))
        .with_panel(ts("Engagement rate (engagements / impressions)", "percentunit", q(
            f"{per_platform('socialpulse_engagements')} / sum by (platform) (socialpulse_impressions{{{w}}} > 0)",
            "{{platform}}"), w=8))
        .with_panel(ts("Click-through rate (clicks / impressions)", "percentunit", q(
            f"{per_platform('socialpulse_clicks')} / sum by (platform) (socialpulse_impressions{{{w}}} > 0)",
            "{{platform}}"), w=8))
        .with_panel(ts("Sessions from social per click", "percentunit", q(
            f"{per_platform('socialpulse_social_sessions')} / sum by (platform) (socialpulse_clicks{{{w}}} > 0)",
            "{{platform}}"), desc="Site sessions the platform's links brought / its clicks.", w=8))
        .with_panel(ts("Lead rate (leads / clicks, leads / sessions)", "percentunit",
            q(f"{per_platform('socialpulse_leads')} / sum by (platform) (socialpulse_clicks{{{w}}} > 0)",
              "{{platform}} per click"),
            q(f"{per_platform('socialpulse_leads')} / sum by (platform) (socialpulse_social_sessions{{{w}}} > 0)",
              "{{platform}} per session"),
            desc="An account with no leads and no sessions has no funnel series: it counts in neither sum.", w=8))
        .with_panel(ts("Checkouts started per session from social", "percentunit", q(
            f"{started_by_platform} / sum by (platform) (socialpulse_social_sessions{{{w}}} > 0)", "{{platform}}"),
            desc="Checkouts started by shoppers whose last touch was the platform (counted once judged, a grace "
                 "period after they start; all accounts) / sessions its links brought.", w=8))
        .with_panel(ts("New customers per checkout started; lead-to-customer rate", "percentunit",
            q(f"{per_platform('socialpulse_new_customers')} / ({started_by_platform} > 0)", "{{platform}} per checkout"),
            q(weighted("socialpulse_lead_to_customer_rate", "socialpulse_leads", w), "{{platform}} leads that bought"),
            desc="New customers (first order attributed to the platform) / checkouts started from it; and of the "
                 "window's leads, the share whose shopper became a customer within the lookback (weighted by "
                 "leads). Neither is a click conversion rate: never compare them with 2-3%.", w=8))
        .with_row(db.Row("Cost per step (spend in its currency)"))
        .with_panel(cost("Cost per 1000 impressions", "socialpulse_impressions", "Spend / impressions x 1000.",
                         " * 1000"))
        .with_panel(cost("Cost per click", "socialpulse_clicks", "Spend / clicks."))
        .with_panel(cost("Cost per lead", "socialpulse_leads", "Spend / leads (platform totals)."))
        .with_panel(cost("Cost per acquisition", "socialpulse_new_customers",
                         "Spend / new customers: a repeat order is not a second acquisition."))
        .with_row(db.Row("Benchmarks, like for like"))
        .with_panel(post_engagement_vs_rival_iq(w=8))
        .with_panel(ctr_vs_chatdesk(w=8))
        .with_panel(click_conversion_vs_bigcommerce(w=8))
        .with_panel(ts(
            "Lead rate by sessions vs email pop-ups' 3.8%", "percentunit",
            q(f"{per_platform('socialpulse_leads')} / sum by (platform) (socialpulse_social_sessions{{{w}}} > 0)",
              "{{platform}}"),
            q(f"vector({LEAD_BENCHMARK})", "benchmark 3.8% (email pop-ups)"),
            desc="Leads / sessions from social: the benchmark counts visitors, so sessions, not clicks, are the "
                 "denominator. Email pop-ups turn about 3.8% of visitors into leads; social should do at least "
                 "as well.", w=8))
        .with_panel(ts(
            "Cart abandonment rate by source (last 1d)", "percentunit",
            q(f"(sum by (source) (increase({abandoned}[1d])) or 0 * sum by (source) (increase({started_all}[1d]))) "
              f"/ sum by (source) (increase({started_all}[1d]) > 0)", "{{source}}"),
            desc="Checkouts abandoned (not completed within CHECKOUT_TIMEOUT) / checkouts started, by the source "
                 "of the shopper's last touch: is it higher for social visitors? Over a day, because a checkout is "
                 "judged abandoned only CHECKOUT_TIMEOUT after it started. All accounts.", w=8))
        .with_panel(ts(
            "Social share of revenue", "percentunit",
            q('max by (model, currency) (socialpulse_social_revenue_share{window="$window"})', "{{model}} {{currency}}"),
            desc="Revenue attributed to social touches / revenue of all orders, per model and currency "
                 "(direct touches are not social).", w=8))
        .with_row(db.Row("Before purchase"))
        .with_panel(ts("Sessions before purchase", "short", q(
            f"avg by (platform) (socialpulse_sessions_before_purchase{{{w}}})", "{{platform}}"),
            desc="Per attributed order, the shopper's site sessions in the lookback before it.", w=8))
        .with_panel(ts("Time on site before purchase", "s", q(
            f"avg by (platform) (socialpulse_time_on_site_before_purchase_seconds{{{w}}})", "{{platform}}"),
            desc="Per attributed order, the summed duration of those sessions.", w=8))
        .with_panel(
            table.Panel().title("Campaigns: attributed orders / clicks").datasource(DS).span(8).height(8)
            .unit("percentunit").with_target(q(
                f"topk(20, sum by (platform, account, campaign) (socialpulse_campaign_attributed_orders{{{w}}}) "
                f"/ sum by (platform, account, campaign) (socialpulse_campaign_clicks{{{w}}} > 0))", instant=True))
        )
    )


def sellers() -> db.Dashboard:
    """Sellers (streams/sellers/): who sells, how (the four pillars), what it brings. Gauges over the trailing
    SELLER_WINDOW (28d); /metrics keeps each account's top MAX_SELLERS by index, the rest under seller="other"."""
    sel = f'{SEL}, seller=~"$seller"'
    own = f'{sel}, seller!="other"'
    return (
        base("socialpulse-sellers", "socialpulse / Sellers",
             "People who post, connect and converse for the brand: a selling index of four 0-25 pillars (trailing "
             "28 days), influence, network growth, referrals and the revenue their posts brought.")
        .with_variable(variable("platform", "label_values(socialpulse_team_sellers, platform)"))
        .with_variable(variable("account", 'label_values(socialpulse_team_sellers{platform=~"$platform"}, account)'))
        .with_variable(variable("seller", 'label_values(socialpulse_selling_index{platform=~"$platform", '
                                          'account=~"$account"}, seller)'))
        .with_row(db.Row("Leaderboard"))
        .with_panel(
            table.Panel().title("Leaderboard by selling index").datasource(DS).span(8).height(8)
            .description("Each seller's index (0-100), trailing 28 days. The index weighs activity and its outcome "
                         "against targets (README, 'The index's rules'), not rank in the team.")
            .with_target(q(f"topk(20, max by (platform, account, seller) (socialpulse_selling_index{{{own}}}))",
                           instant=True)))
        .with_panel(
            table.Panel().title("Leaderboard by attributed revenue").datasource(DS).span(8).height(8)
            .description("Revenue attributed (last touch) to each seller's posts, trailing 28 days.")
            .with_target(q(f"topk(20, sum by (platform, account, seller, currency) "
                           f"(socialpulse_seller_attributed_revenue{{{own}}}))", instant=True)))
        .with_panel(
            table.Panel().title("Influence").datasource(DS).span(8).height(8)
            .description("1-100: distinct people reacting to the seller's posts and their reach, log scale.")
            .with_target(q(f"topk(20, max by (platform, account, seller) (socialpulse_seller_influence{{{own}}}))",
                           instant=True)))
        .with_panel(
            table.Panel().title("A seller across platforms").datasource(DS).span(24).height(6)
            .description("Each person's mean index over the accounts they sell for (each account's index is its own: "
                         "the same targets make them comparable) and the revenue their posts brought on all of them.")
            .with_target(q(f"avg by (seller) (socialpulse_selling_index{{{own}}})", instant=True))
            .with_target(q(f"sum by (seller, currency) (socialpulse_seller_attributed_revenue{{{own}}})", instant=True)))
        .with_row(db.Row("The index"))
        .with_panel(ts("Selling index over time", "short", q(
            f"max by (platform, account, seller) (socialpulse_selling_index{{{own}}})",
            "{{platform}} {{account}} {{seller}}"),
            q(f"max by (platform, account) (socialpulse_team_selling_index{{{SEL}}})", "team {{platform}} {{account}}")))
        .with_panel(ts("Pillars over time", "short", q(
            f"avg by (pillar) (socialpulse_selling_index_pillar{{{own}}})", "{{pillar}}"),
            desc="Mean of the selected sellers' pillars, each 0-25: brand, people, insights, relationships."))
        .with_row(db.Row("Network"))
        .with_panel(ts("Network size", "short", q(
            f"sum by (platform, account, seller) (socialpulse_seller_network_size{{{sel}}})",
            "{{platform}} {{account}} {{seller}}"),
            desc="Connections accepted minus removed, since the seller's first event kept."))
        .with_panel(ts("Connections accepted and decision makers", "short",
            q(f'sum by (platform) (socialpulse_seller_connections{{{sel}, status="accepted"}})', "accepted {{platform}}"),
            q(f"sum by (platform) (socialpulse_seller_decision_makers{{{sel}}})", "decision makers {{platform}}"),
            desc="Trailing 28 days."))
        .with_panel(ts("Acceptance rate", "percentunit", q(
            f'sum by (platform) (socialpulse_seller_connections{{{sel}, status="accepted"}}) / '
            f'sum by (platform) (socialpulse_seller_connections{{{sel}, status="requested"}} > 0)', "{{platform}}"),
            desc="Accepted / requests sent, summed over the sellers (a ratio of sums)."))
        .with_row(db.Row("Referrals and outcomes"))
        .with_panel(ts("Referrals", "short", q(
            f"sum by (platform, kind) (socialpulse_seller_referrals{{{sel}}})", "{{platform}} {{kind}}"),
            desc="Leads and orders carrying a referrer_id, trailing 28 days."))
        .with_panel(ts("Referral revenue", "short", q(
            f"sum by (platform, currency) (socialpulse_seller_referral_revenue{{{sel}}})", "{{platform}} {{currency}}"),
            desc="Referred orders, placed minus cancelled and refunded."))
        .with_panel(ts("Referred share of new customers", "percentunit", q(
            f"max by (platform, account, seller) (socialpulse_seller_referral_customer_share{{{own}}})",
            "{{platform}} {{account}} {{seller}}")))
        .with_panel(ts("Sellers' posts: clicks, leads, new customers", "short",
            q(f"sum by (platform) (socialpulse_seller_clicks{{{sel}}})", "clicks {{platform}}"),
            q(f"sum by (platform) (socialpulse_seller_leads{{{sel}}})", "leads {{platform}}"),
            q(f"sum by (platform) (socialpulse_seller_new_customers{{{sel}}})", "new customers {{platform}}")))
        .with_panel(ts("Team revenue (attributed plus referred)", "short", q(
            f"sum by (platform, account, currency) (socialpulse_team_seller_revenue{{{SEL}}})",
            "{{platform}} {{account}} {{currency}}")))
        .with_panel(ts("Posts by kind and earned engagement", "short",
            q(f"sum by (kind) (socialpulse_seller_posts{{{sel}}})", "posts {{kind}}"),
            q(f"sum by (platform) (socialpulse_seller_engagements{{{sel}}})", "engagements {{platform}}")))
    )


BOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "pipeline": pipeline, "engagement": engagement, "replies": replies, "conversion": conversion, "funnel": funnel,
    "sellers": sellers,
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

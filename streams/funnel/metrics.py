"""The funnel's window aggregate and its ratios (pure functions).

An aggregate (``Agg``) of one bucket or window of an account:

    {"leads": n, "kinds": {kind: n}, "clk": n, "soc": n,   # social sessions the account's links brought
     "spend": {currency: "decimal"}, "camp": {campaign: {"leads": n, "spend": {currency: "decimal"}}},
     "cclk": n, "lcust": n,          # (trailing buckets only) of the bucket's clicks / leads, converted so far
     "orev": {currency: "decimal"},  # (the shop's key ``all|all``) revenue of all orders
     "srev": {model: {currency: "decimal"}},  # (the shop's key) the part credited to social touches
     "co": {source: {outcome: n}}}   # (the shop's key) checkouts started in the bucket, by source and outcome

The shop's key also keeps cumulative totals, beside its windows (``Totals``, state ``tot``):

    {"ck": {"source|outcome": n},    # checkouts by source and outcome (``socialpulse_checkouts_total``)
     "un": {currency: n}}            # placed orders without any touch (``socialpulse_unattributed_orders_total``)

signed sums of the shopper's records (a retraction or a negated sale takes one back); an entry
back at 0 is dropped, so any arrival order of the same records ends with the same totals.

A cohort (``Cohort``) is one UTC day of an account's clicks and leads and how many of them
converted so far: ``[clicks, converted clicks, leads, converted leads, revision, changed]``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.events import CheckoutOutcome, Click, Event, Lead, Sale, Session, Spend

from ..windows import Agg

__all__ = ["empty", "fold", "merge", "lead_rate", "lead_rate_by_sessions", "cost_per_lead", "NO_CAMPAIGN",
           "converted_share", "social_share", "abandonment", "checkouts", "checkout_sign", "RETRACTED", "CLK", "CCLK", "LEADS", "LCUST", "COUNTS",
           "Totals", "count", "decode_totals", "checkout_totals"]

#: the counts of a funnel cohort (``streams.cohorts``: its revision and changed flag follow them)
CLK, CCLK, LEADS, LCUST = range(4)
COUNTS = 4

NO_CAMPAIGN = "(none)"
#: the shop's cumulative totals: {"ck": {"source|outcome": n}, "un": {currency: n}}
Totals = dict[str, dict[str, int]]

#: the end of a retracting checkout outcome's event id (``conversion.shopper.RETRACTED``: the same text)
RETRACTED = "~undo"


def empty() -> Agg:
    return {"leads": 0, "kinds": {}, "clk": 0, "soc": 0, "spend": {}, "camp": {}}


def _add(d: dict[str, str], cur: str, v: Decimal | str) -> None:
    d[cur] = str(Decimal(d.get(cur, "0")) + Decimal(v))


def _camp(agg: Agg, name: str | None) -> dict[str, Any]:
    return agg["camp"].setdefault(name or NO_CAMPAIGN, {"leads": 0, "spend": {}})  # type: ignore[no-any-return]


def fold(agg: Agg, event: Event) -> None:
    if isinstance(event, Lead):
        agg["leads"] += 1
        agg["kinds"][event.kind] = agg["kinds"].get(event.kind, 0) + 1
        _camp(agg, event.campaign_id)["leads"] += 1
    elif isinstance(event, Click):
        agg["clk"] += 1
    elif isinstance(event, Session):
        agg["soc"] += 1
    elif isinstance(event, Spend):
        _add(agg["spend"], event.currency, event.amount)
        _add(_camp(agg, event.campaign_id)["spend"], event.currency, event.amount)
    elif isinstance(event, CheckoutOutcome):
        by_src = agg.setdefault("co", {}).setdefault(event.source, {})
        by_src[event.outcome] = by_src.get(event.outcome, 0) + checkout_sign(event)
    elif isinstance(event, Sale):
        _add(agg.setdefault("orev", {}), event.currency, event.amount)
        srev = agg.setdefault("srev", {})
        for model, v in event.social.items():
            _add(srev.setdefault(model, {}), event.currency, v)


def merge(into: Agg, other: Agg) -> None:
    into["leads"] += other["leads"]
    into["clk"] += other["clk"]
    into["soc"] += other["soc"]
    for kind, n in other["kinds"].items():
        into["kinds"][kind] = into["kinds"].get(kind, 0) + n
    for cur, v in other["spend"].items():
        _add(into["spend"], cur, v)
    for name, c in other["camp"].items():
        mine = _camp(into, name)
        mine["leads"] += c["leads"]
        for cur, v in c["spend"].items():
            _add(mine["spend"], cur, v)
    for name in ("cclk", "lcust"):  # (absent before cohorts)
        if other.get(name):
            into[name] = into.get(name, 0) + other[name]
    for src, outcomes in other.get("co", {}).items():
        mine = into.setdefault("co", {}).setdefault(src, {})
        for outcome, n in outcomes.items():
            mine[outcome] = mine.get(outcome, 0) + n
    if other.get("orev"):
        for cur, v in other["orev"].items():
            _add(into.setdefault("orev", {}), cur, v)
    if other.get("srev"):
        srev = into.setdefault("srev", {})
        for model, by_cur in other["srev"].items():
            for cur, v in by_cur.items():
                _add(srev.setdefault(model, {}), cur, v)


def checkout_sign(event: CheckoutOutcome) -> int:
    """+1, or -1 for a record that takes an earlier one back (the shopper corrects a checkout's
    source or outcome: its event id ends with ``RETRACTED``, the record has no sign field)."""
    return -1 if event.event_id.endswith(RETRACTED) else 1


def count(tot: Totals, event: Event) -> None:
    """Add a shopper's record to the shop's totals: a checkout outcome (+1, or -1 retracted) under
    ``source|outcome``, a sale's ``unattributed`` (+1, -1 or 0) under its currency. An entry back
    at 0 goes (and a group left empty), so the totals depend on the records, not their order."""
    if isinstance(event, CheckoutOutcome):
        group, name, n = "ck", f"{event.source}|{event.outcome}", checkout_sign(event)
    elif isinstance(event, Sale) and event.unattributed:
        group, name, n = "un", event.currency, event.unattributed
    else:
        return
    counts = tot.setdefault(group, {})
    v = counts.get(name, 0) + n
    if v:
        counts[name] = v
    else:
        counts.pop(name, None)
        if not counts:
            del tot[group]


def decode_totals(raw: Any) -> Totals:
    """From the changelog's JSON (only the known groups, integer counts, no zeros)."""
    out: Totals = {}
    for group in ("ck", "un"):
        counts = {str(k): int(v) for k, v in (raw or {}).get(group, {}).items() if int(v)}
        if counts:
            out[group] = counts
    return out


def checkout_totals(tot: Totals) -> dict[str, dict[str, int]]:
    """The checkouts counted so far by source and outcome."""
    out: dict[str, dict[str, int]] = {}
    for name, n in sorted(tot.get("ck", {}).items()):
        src, _, outcome = name.rpartition("|")
        out.setdefault(src, {})[outcome] = n
    return out


def lead_rate(agg: Agg) -> float | None:
    """Leads / clicks (None without clicks)."""
    return agg["leads"] / agg["clk"] if agg["clk"] else None


def lead_rate_by_sessions(agg: Agg) -> float | None:
    """Leads / sessions from social the account's links brought (None without sessions)."""
    return agg["leads"] / agg["soc"] if agg["soc"] else None


def cost_per_lead(spend: dict[str, str], leads: int) -> dict[str, Decimal]:
    """Spend / leads, per spend currency (nothing without leads or spend)."""
    if leads <= 0:
        return {}
    return {cur: Decimal(v) / leads for cur, v in sorted(spend.items()) if Decimal(v) > 0}


def converted_share(converted: int, total: int) -> float | None:
    """Converted ÷ total, never above 1 (None without any): a conversion can reach the
    account a moment before the click or lead it converts is counted there."""
    return min(converted, total) / total if total > 0 else None


def social_share(agg: Agg) -> dict[tuple[str, str], Decimal]:
    """Revenue credited to social touches ÷ revenue of all orders, per (model, currency)
    (nothing for a currency without revenue)."""
    out: dict[tuple[str, str], Decimal] = {}
    for cur, total in sorted(agg.get("orev", {}).items()):
        whole = Decimal(total)
        if whole <= 0:
            continue
        for model, by_cur in sorted(agg.get("srev", {}).items()):
            out[(model, cur)] = Decimal(by_cur.get(cur, "0")) / whole
    return out


def checkouts(agg: Agg) -> dict[str, dict[str, int]]:
    """The window's checkouts by source and outcome, without what nets to zero (a checkout whose
    source was corrected leaves zeros under the old one: they are no checkouts)."""
    out: dict[str, dict[str, int]] = {}
    for src, outcomes in sorted(agg.get("co", {}).items()):
        kept = {outcome: n for outcome, n in sorted(outcomes.items()) if n}
        if kept:
            out[src] = kept
    return out


def abandonment(agg: Agg) -> dict[str, float]:
    """Checkouts abandoned ÷ started, by source, of the checkouts started in the window."""
    return {src: o.get("abandoned", 0) / o["started"] for src, o in checkouts(agg).items() if o.get("started", 0) > 0}

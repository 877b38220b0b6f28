"""The selling index and the influence score (pure functions): how a seller's trailing activity
and outcomes become four pillars of 0-25 and a score of 1-100.

**Scale: targets, not rank.** Each input is scored against a target, ``min(1, value / target)``,
and a pillar is 25 x the weighted sum of its inputs' scores (weights add up to 1). Targets are
absolute (per 28 days; ``TARGETS``, the documented defaults): a seller's index then depends on
their own numbers only, so it means the same in a team of one and a team of fifty, it does not
move when a teammate has a good week, and it is comparable across accounts and platforms. Rank
within the team would give the best of three weak sellers 25 and make every index a function of
the others' events.

Every pillar weighs what the seller *did* and what it *brought*:

- **brand**: original posts (activity) and the engagement they earned (outcome);
- **people**: connections accepted and decision makers among them (finding the right people),
  outreach conversations the prospect answered (outcome);
- **insights**: shares of and comments on others' content (activity) and the engagement those
  earned (outcome);
- **relationships**: reply speed (``min(1, target / mean reply latency)``), response rate and
  prospect response rate (ratios, 0 when there is nothing to answer; each earns in proportion to
  its cases until ``MIN_CASES``, 5) and repeat customers (referred orders of shoppers who had
  ordered before).

Arithmetic is decimal: each pillar is rounded to the cent (half up), the index is the sum of the
rounded pillars, so a worked example is reproduced exactly (README, "Sellers").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["Inputs", "TARGETS", "WEIGHTS", "PILLARS", "pillars", "index", "influence", "INFLUENCE"]

CENT = Decimal("0.01")
PILLARS = ("brand", "people", "insights", "relationships")

#: what each input counts as "full marks" over the trailing window (28 days by default)
TARGETS: dict[str, Decimal] = {
    "originals": Decimal(12),          # original posts: three a week
    "original_engagement": Decimal(100),  # engagements earned on them
    "accepted": Decimal(20),           # connections accepted
    "decision_makers": Decimal(5),     # accepted connections flagged decision makers
    "outreach_answered": Decimal(5),   # outreach conversations the prospect answered
    "insights": Decimal(12),           # shares of and comments on others' content
    "insight_engagement": Decimal(50),  # engagements earned on those
    "reply_seconds": Decimal(900),     # mean reply latency at or under 15 minutes: full marks
    "repeat_customers": Decimal(2),    # referred orders of returning shoppers
}
#: each pillar's inputs and their weights (adding up to 1)
WEIGHTS: dict[str, dict[str, Decimal]] = {
    "brand": {"originals": Decimal("0.5"), "original_engagement": Decimal("0.5")},
    "people": {"accepted": Decimal("0.4"), "decision_makers": Decimal("0.3"), "outreach_answered": Decimal("0.3")},
    "insights": {"insights": Decimal("0.5"), "insight_engagement": Decimal("0.5")},
    "relationships": {"reply_speed": Decimal("0.25"), "response_rate": Decimal("0.25"),
                      "prospect_response_rate": Decimal("0.25"), "repeat_customers": Decimal("0.25")},
}
#: a ratio (reply speed, response rate, prospect response rate) earns in proportion to its cases until
#: this many: one quick answer in a month is no relationship built
MIN_CASES = Decimal(5)
#: the influence score's two parts: distinct people reacting, and the reach of the seller's posts
INFLUENCE = {"engagers": (Decimal("0.7"), 500), "impressions": (Decimal("0.3"), 50_000)}


@dataclass(frozen=True, slots=True)
class Inputs:
    """A seller's numbers over the trailing window."""

    originals: int = 0
    original_engagement: int = 0
    accepted: int = 0
    decision_makers: int = 0
    outreach_answered: int = 0
    outreach: int = 0
    insights: int = 0
    insight_engagement: int = 0
    replies: int = 0
    reply_seconds: float = 0.0  # summed latency of the replies
    spells: int = 0  # customer waits in the seller's conversations
    answered: int = 0  # of those, answered
    repeat_customers: int = 0


def _score(value: Decimal | int | float, target: Decimal) -> Decimal:
    v = Decimal(str(value))
    return min(Decimal(1), max(Decimal(0), v / target))


def _ratio(num: int, den: int) -> Decimal:
    return min(Decimal(1), Decimal(num) / Decimal(den)) if den > 0 else Decimal(0)


def scores(x: Inputs, targets: Mapping[str, Decimal] = TARGETS) -> dict[str, Decimal]:
    """Each input's score, 0 to 1."""
    out = {name: _score(getattr(x, name), targets[name]) for name in (
        "originals", "original_engagement", "accepted", "decision_makers", "outreach_answered", "insights",
        "insight_engagement", "repeat_customers")}
    if x.replies > 0:
        mean = Decimal(str(x.reply_seconds)) / x.replies
        out["reply_speed"] = Decimal(1) if mean <= targets["reply_seconds"] else targets["reply_seconds"] / mean
    else:
        out["reply_speed"] = Decimal(0)
    out["response_rate"] = _ratio(x.answered, x.spells)
    out["prospect_response_rate"] = _ratio(x.outreach_answered, x.outreach)
    for name, cases in (("reply_speed", x.replies), ("response_rate", x.spells), ("prospect_response_rate", x.outreach)):
        out[name] *= min(Decimal(1), Decimal(cases) / MIN_CASES)
    return out


def pillars(x: Inputs, targets: Mapping[str, Decimal] = TARGETS) -> dict[str, Decimal]:
    """The four pillars, 0-25 each, rounded to the cent."""
    s = scores(x, targets)
    return {p: (25 * sum((w * s[name] for name, w in WEIGHTS[p].items()), Decimal(0))).quantize(CENT, ROUND_HALF_UP)
            for p in PILLARS}


def index(p: Mapping[str, Decimal]) -> Decimal:
    """The selling index, 0-100: the sum of the rounded pillars."""
    return sum((p[name] for name in PILLARS), Decimal(0))


def influence(engagers: int, impressions: int) -> int:
    """1-100 (Klout-style): distinct people reacting to the seller's content and the reach of their
    posts, each on a log scale against its target (log(1 + n) / log(1 + target), at most 1)."""
    total = Decimal(0)
    for value, (weight, target) in ((engagers, INFLUENCE["engagers"]), (impressions, INFLUENCE["impressions"])):
        part = min(1.0, math.log1p(max(value, 0)) / math.log1p(target))
        total += weight * Decimal(str(round(part, 6)))
    return 1 + int((99 * total).quantize(Decimal(1), ROUND_HALF_UP))

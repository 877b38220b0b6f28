"""The metric families, registered: the one place that says which families exist and
in which keyed stage each lives. Adding a family is its folder (``streams/<family>/``,
a class that meets ``streams.family.Family``) and one line here.

A stage is a keyed stream (``socialpulse.by-<stage>``): ``account`` keys are
``platform|account_id``, ``actor`` keys are shoppers. Each family's ``routes`` say
which input topics it needs and under which key (``streams.routing``).
"""

from __future__ import annotations

from typing import Any

from schemas.events import Event

from .conversion import Conversion, Shopper
from .engagement import Engagement
from .family import Family
from .funnel import Funnel
from .keyed import KeyedStage
from .replies import Replies
from .routing import Router
from .sellers import Referrals, Sellers
from .windows import WindowSpec

__all__ = ["STAGES", "COMPACT", "ROUTER", "check_settings", "make_stages", "routes"]

#: keyed stage -> its families (classes meeting ``Family``), in the order they see each key's events
STAGES: dict[str, tuple[Any, ...]] = {
    "account": (Engagement, Replies, Conversion, Funnel, Sellers),
    "actor": (Shopper, Referrals),
}
#: stages with many small keys (a key per shopper): kept at rest as bytes
COMPACT = frozenset({"actor"})


def _family(family: Family) -> Family:
    """(Each registered class builds a ``Family``: mypy checks it here.)"""
    return family


def check_settings(settings: Any) -> None:
    """Each family reads its own settings: a bad one stops start-up naming it (``SettingsError``)."""
    spec = WindowSpec.from_settings(settings)
    for classes in STAGES.values():
        for cls in classes:
            cls.from_settings(settings, spec)


def make_stages(settings: Any, spec: WindowSpec) -> dict[str, KeyedStage]:
    """The keyed stages and their families, as the settings configure them (Kafka-free)."""
    return {
        name: KeyedStage(name, spec, [_family(cls.from_settings(settings, spec)) for cls in classes],
                         settings.dedup_horizon, settings.idle, compact=name in COMPACT)
        for name, classes in STAGES.items()
    }


#: the routes of the registered families (``streams.routing``)
ROUTER = Router(STAGES)


def routes(topic: str, event: Event) -> list[tuple[str, str, bool]]:
    """(stream, key, primary) for each keyed stream that needs an event of input ``topic``."""
    return ROUTER.routes(topic, event)

"""Which keyed streams an input event goes to, under which key: from the families' routes.

Each family declares the input topics it needs and how their events are keyed
(``Family.routes``); a topic two families of one stage need goes there once. An
event is counted (accepted, duplicate, late) on its one *primary* route; on the
others it is a derived copy (a click is an engagement of its account and a touch
of its shopper, counted once, on the account).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from schemas.events import INPUT_TOPICS, Event

from .family import Route

__all__ = ["Router", "RoutingError"]

#: (keyed stream, key, primary)
Target = tuple[str, str, bool]


class RoutingError(ValueError):
    """The families' routes contradict each other, or an input topic has no primary route."""


class Router:
    def __init__(self, stages: Mapping[str, Iterable[object]], topics: Iterable[str] = INPUT_TOPICS) -> None:
        """``stages``: keyed stream -> its families (classes or instances with ``routes``)."""
        table: dict[str, dict[str, Route]] = {}
        for stream, families in stages.items():
            for family in families:
                for route in family.routes:  # type: ignore[attr-defined]
                    prior = table.setdefault(route.topic, {}).get(stream)
                    if prior is not None and (prior.key is not route.key or prior.primary != route.primary):
                        raise RoutingError(f"{route.topic!r} is routed to {stream!r} under two keys or primacies")
                    table[route.topic][stream] = route
        for topic in topics:
            primaries = [s for s, r in table.get(topic, {}).items() if r.primary]
            if len(primaries) != 1:
                raise RoutingError(f"input topic {topic!r} needs exactly one primary route, has {primaries or 'none'}")
        self.table: dict[str, tuple[tuple[str, Callable[[Event], str | None], bool], ...]] = {
            topic: tuple((stream, r.key, r.primary) for stream, r in sorted(by_stream.items(), key=lambda x: not x[1].primary))
            for topic, by_stream in table.items()
        }

        self.topics = tuple(topics)

    def routes(self, topic: str, event: Event) -> list[Target]:
        """(stream, key, primary) for each keyed stream that needs an event of input ``topic`` (bare name).
        A secondary route whose key function gives None does not apply to this event (a session
        without an account goes to its shopper only)."""
        out = []
        for stream, key_of, primary in self.table[topic]:
            key = key_of(event)
            if key is not None:
                out.append((stream, key, primary))
        return out

    def inputs(self, stream: str) -> tuple[str, ...]:
        """The input topics that feed ``stream`` (its watermark waits for all of them)."""
        return tuple(t for t in self.topics if any(s == stream for s, _, _ in self.table.get(t, ())))

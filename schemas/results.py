"""Output contracts: closed-window results, dead letters, reply-SLA breaches."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Result", "DeadLetter", "ReplyBreach", "RejectReason", "REJECT_REASONS", "OUTCOMES", "result_key"]

#: Why an input was rejected (the one list: the dead-letter schema, the counters and the
#: code all take it from here). ``outcome`` in ``socialpulse_events_total`` folds not_json,
#: not_utf8, too_large, bad_internal and unknown_format into ``invalid``.
RejectReason = Literal["invalid", "not_json", "not_utf8", "too_large", "duplicate", "late", "bad_internal", "unknown_format"]
REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)
#: ``socialpulse_events_total{outcome}``
OUTCOMES = ("accepted", "invalid", "duplicate", "late")


class Result(BaseModel):
    """One closed window of one metric for one key (``socialpulse.results``).

    Family-specific fields ride along as extra fields: ``kind`` (engagement by
    kind), ``campaign_id``, ``agent_id``, ``model``, ``currency``, ``top_posts``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    family: Literal["engagement", "replies", "conversion", "funnel", "sellers"]
    metric: str
    platform: str
    account_id: str
    window: str
    window_start: str
    window_end: str
    value: float | None
    key: str
    #: 0 when the window is first published (its end plus GRACE passed); one higher for each
    #: re-publication with the same ``key`` after late data (within ALLOWED_LATENESS) changed it.
    #: A consumer upserts by ``key`` and keeps the highest revision.
    revision: int = Field(0, ge=0, description=(
        "0 when the window is first published (the watermark passed its end plus GRACE); one higher each time "
        "late data (within ALLOWED_LATENESS) changed it and it was published again under the same key. "
        "Upsert by key and keep the highest revision."))


def result_key(metric: str, platform: str, account_id: str, window: str, window_start: str, *extra: str) -> str:
    """The stable message key a consumer upserts on (and compaction keeps)."""
    return "|".join((metric, platform, account_id, window, window_start, *extra))


class DeadLetter(BaseModel):
    """A rejected input (``socialpulse.dlq``), kept with its reason."""

    model_config = ConfigDict(frozen=True)

    source_topic: str
    partition: int
    offset: int
    raw: str
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    reason: RejectReason
    detail: str
    event_id: str | None = None
    rejected_at: str
    #: a dead letter stays within the bound on every record (64 KiB): a larger rejected value
    #: keeps only its first 16 KiB (or less) in ``raw``, with its length and digest
    raw_truncated: bool = Field(False, description=(
        "true when raw holds only the start of the rejected value (the whole would pass the 64 KiB bound "
        "on every record socialpulse writes); raw_bytes and raw_sha256 then describe the whole value"))
    raw_bytes: int | None = Field(None, ge=0, description="Length in bytes of the whole rejected value (when truncated).")
    raw_sha256: str | None = Field(None, description="SHA-256 (hex) of the whole rejected value (when truncated).")


class ReplyBreach(BaseModel):
    """A waiting spell that passed the reply SLO (``socialpulse.reply-breaches``)."""

    model_config = ConfigDict(frozen=True)

    platform: str
    account_id: str
    conversation_id: str
    waiting_since: str
    breached_at: str
    slo_seconds: float  # the target the spell missed (the policy's first- or next-reply target)
    policy: str = "default"  # the SLA policy (``default``: REPLY_SLO)
    target: Literal["first_reply", "next_reply"] = "first_reply"
    hours: Literal["calendar", "business"] = "calendar"  # how the target's time is counted
    channel: str = "dm"
    detail: dict[str, Any] = {}

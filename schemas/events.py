"""Input event contracts: one pydantic model per input topic (CONTRACT.md).

These models are the only way an event enters the code. Event time ``ts`` is
normalised to integer epoch milliseconds; it arrives as RFC 3339 with an offset
or as epoch milliseconds. Unknown extra fields are ignored.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_extra_types.currency_code import ISO4217

__all__ = [
    "Platform",
    "EngagementKind",
    "Direction",
    "OrderStatus",
    "Event",
    "Like",
    "Impression",
    "Audience",
    "Click",
    "Message",
    "Order",
    "Spend",
    "Lead",
    "Session",
    "Checkout",
    "Post",
    "Connection",
    "Referral",
    "ConversationSale",
    "TOPIC_MODELS",
    "INPUT_TOPICS",
    "MAX_FUTURE_MS",
    "Credit",
    "Converted",
    "Sale",
    "CheckoutOutcome",
    "STAGE_MODELS",
    "SHOP_KEY",
    "DIRECT_KEY",
    "PLATFORMS",
    "ChannelName",
    "CHANNELS",
    "derived_id",
    "account_key",
    "split_account_key",
    "of_account",
    "of_shopper",
]

#: An event stamped further ahead of the wall clock than this is rejected: one bad
#: clock must not drag a partition's watermark into the future and make all else late.
MAX_FUTURE_MS = 3_600_000
#: Events before 2000-01-01 are rejected as nonsense rather than merely late.
MIN_TS_MS = 946_684_800_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Platform(StrEnum):
    linkedin = "linkedin"
    x = "x"
    facebook = "facebook"
    instagram = "instagram"
    tiktok = "tiktok"
    youtube = "youtube"
    pinterest = "pinterest"
    other = "other"


class EngagementKind(StrEnum):
    like = "like"
    comment = "comment"
    share = "share"
    save = "save"
    reaction = "reaction"


class Direction(StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class OrderStatus(StrEnum):
    placed = "placed"
    cancelled = "cancelled"
    refunded = "refunded"


#: Field types: the same values as the enums above, as Literals, which pydantic-core
#: checks without a call into Python (an enum field costs about 3 us per event)
PlatformName = Literal["linkedin", "x", "facebook", "instagram", "tiktok", "youtube", "pinterest", "other"]
KindName = Literal["like", "comment", "share", "save", "reaction"]
DirectionName = Literal["inbound", "outbound"]
StatusName = Literal["placed", "cancelled", "refunded"]
LeadKindName = Literal["signup", "form", "dm"]
#: where a site session came from: a social platform, or another channel
SourceName = Literal["linkedin", "x", "facebook", "instagram", "tiktok", "youtube", "pinterest", "other",
                     "direct", "search", "email"]
CheckoutStatusName = Literal["started", "completed"]
#: a seller's post: their own, a share of someone else's, a comment on someone else's
PostKindName = Literal["original", "share", "comment"]
ConnectionStatusName = Literal["requested", "accepted", "removed"]
#: where a message was written: a direct message, a public comment (and the brand's answer),
#: a mention, a review
ChannelName = Literal["dm", "comment", "mention", "review"]
CHANNELS: tuple[str, ...] = ("dm", "comment", "mention", "review")
#: the platform names, as a set (a session's ``source`` is social when it is one of them)
PLATFORMS = frozenset(Platform.__members__)


def _event_time(value: Any) -> int:
    """RFC 3339 with offset, or epoch milliseconds -> epoch milliseconds."""
    kind = type(value)  # exact types first: this runs for every event, twice
    if kind is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("ts is not an RFC 3339 timestamp") from None
        if "T" not in value and "t" not in value and " " not in value:
            raise ValueError("ts must carry a time of day")
        if parsed.tzinfo is None:
            raise ValueError("ts has no UTC offset (add Z or +hh:mm)")
        ms = (parsed - _EPOCH) // _MS  # exact: int(timestamp() * 1000) is 1 ms low for some instants
    elif kind is int:
        ms = value
    elif isinstance(value, bool):
        raise ValueError("ts must be RFC 3339 text or epoch milliseconds, not a boolean")
    elif isinstance(value, int):
        ms = int(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("ts is not a finite number")
        ms = int(value)
    else:
        raise ValueError("ts must be RFC 3339 text or epoch milliseconds")
    if ms < MIN_TS_MS:
        raise ValueError("ts is before 2000-01-01 (epoch seconds instead of milliseconds?)")
    if ms > time.time() * 1000 + MAX_FUTURE_MS:
        raise ValueError("ts is more than 1h in the future")
    return ms


EventTime = Annotated[int, BeforeValidator(_event_time)]
Id = Annotated[str, Field(min_length=1, max_length=256, strict=True)]
# No control characters in ids that become state keys: socialpulse's own table keys start
# with one (\x00) and it joins key and event id with \x1f, so no id can collide with those.
KeyId = Annotated[str, Field(min_length=1, max_length=256, strict=True, pattern=r"^[^\x00-\x1f\x7f]+$")]
EventId = Annotated[str, Field(min_length=1, max_length=128, strict=True, pattern=r"^[^\x00-\x1f\x7f]+$")]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), allow_inf_nan=False, max_digits=24)]


class Event(BaseModel):
    """Fields every input event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    event_id: EventId
    ts: EventTime


class Like(Event):
    """An interaction with a post (``likes`` topic)."""

    platform: PlatformName
    account_id: KeyId
    post_id: Id
    actor_id: KeyId
    kind: KindName = "like"


class Impression(Event):
    """Views of a post (``impressions`` topic); ``count`` views in one record."""

    platform: PlatformName
    account_id: KeyId
    post_id: Id
    count: int = Field(ge=1, le=1_000_000_000, strict=True)
    paid: bool = Field(False, strict=True)  # an ad impression (organic otherwise)


class Audience(Event):
    """A follower-count snapshot of an account (``audience`` topic)."""

    platform: PlatformName
    account_id: KeyId
    followers: int = Field(ge=0, le=10_000_000_000, strict=True)


class Click(Event):
    """A click on a link of an account's post or ad (``clicks`` topic)."""

    platform: PlatformName
    account_id: KeyId
    actor_id: KeyId
    post_id: Id | None = None
    campaign_id: Id | None = None
    click_id: Id | None = None
    paid: bool = Field(False, strict=True)  # an ad click (organic otherwise)


class Lead(Event):
    """A lead an account's content or outreach brought (``leads`` topic): a sign-up, a form, a DM lead."""

    platform: PlatformName
    account_id: KeyId
    actor_id: KeyId
    kind: LeadKindName = "signup"
    campaign_id: Id | None = None
    post_id: Id | None = None
    click_id: Id | None = None
    referrer_id: KeyId | None = None  # the seller who referred the shopper (``streams.sellers``)


class Session(Event):
    """A visit to the shop's site (``sessions`` topic). ``source`` is a social platform or
    another channel; a social session names the account whose link brought it when known."""

    actor_id: KeyId
    source: SourceName
    platform: PlatformName | None = None
    account_id: KeyId | None = None
    campaign_id: Id | None = None
    post_id: Id | None = None
    click_id: Id | None = None
    duration_s: float = Field(0.0, ge=0, le=86_400, allow_inf_nan=False)
    pages: int = Field(1, ge=0, le=100_000, strict=True)


class Checkout(Event):
    """A checkout of the shop (``checkouts`` topic): ``started``, then ``completed`` or nothing."""

    checkout_id: Id
    actor_id: KeyId
    status: CheckoutStatusName
    amount: Money | None = None
    currency: ISO4217 | None = None


class Message(Event):
    """A direct message in a conversation (``messages`` topic)."""

    platform: PlatformName
    account_id: KeyId
    conversation_id: Id
    direction: DirectionName
    author_id: Id
    agent_id: Id | None = None
    #: an auto-acknowledgement ("we'll get back to you"): never stops the clock
    automated: bool = Field(False, strict=True)
    #: written by a conversational bot: it ends the wait without a human reply time (bot-resolved)
    bot: bool = Field(False, strict=True)
    channel: ChannelName = "dm"


class Order(Event):
    """An order from the shop (``orders`` topic); it carries no platform."""

    order_id: Id
    actor_id: KeyId
    amount: Money
    currency: ISO4217
    status: StatusName = "placed"
    click_id: Id | None = None
    referrer_id: KeyId | None = None  # the seller who referred the shopper (``streams.sellers``)


class Spend(Event):
    """Money spent on a campaign (``spend`` topic)."""

    platform: PlatformName
    account_id: KeyId
    campaign_id: Id
    amount: Money
    currency: ISO4217


class Post(Event):
    """A post a seller published for an account (``posts`` topic): their own (``original``), a
    ``share`` of someone else's or a ``comment`` on it (``target_post_id``)."""

    platform: PlatformName
    account_id: KeyId
    post_id: Id
    author_id: KeyId
    kind: PostKindName = "original"
    target_post_id: Id | None = None


class Connection(Event):
    """A seller's connection with a person (``connections`` topic): a request sent, accepted
    or removed; ``decision_maker`` flags a buyer who decides."""

    platform: PlatformName
    account_id: KeyId
    author_id: KeyId
    actor_id: KeyId
    status: ConnectionStatusName
    decision_maker: bool = Field(False, strict=True)


TOPIC_MODELS: dict[str, type[Event]] = {
    "likes": Like,
    "impressions": Impression,
    "audience": Audience,
    "clicks": Click,
    "messages": Message,
    "orders": Order,
    "spend": Spend,
    "leads": Lead,
    "sessions": Session,
    "checkouts": Checkout,
    "posts": Post,
    "connections": Connection,
}
INPUT_TOPICS: tuple[str, ...] = tuple(TOPIC_MODELS)


class Credit(Event):
    """Internal: one touch's share of an attributed order, sent from the shopper's
    state to the touch's account (``socialpulse.by-account``). Negative amounts
    and ``orders = -1`` take a cancelled or refunded order back. A direct visit's share goes
    to the channel ``direct|direct`` (platform and account ``direct``)."""

    platform: PlatformName | Literal["direct"]
    account_id: KeyId
    campaign_id: Id | None = None
    post_id: Id | None = None  # the post of the touch's click (per-post revenue)
    order_id: Id
    currency: ISO4217
    revenue: dict[str, Decimal]  # model -> credited amount
    orders: int = Field(0, ge=-1, le=1)  # last-touch order count (the touch that got the order)
    customers: int = Field(0, ge=-1, le=1)  # last touch of a shopper's first order: a new customer
    # last touch only: the shopper's site sessions in the lookback before the order, and their time
    sessions: int = Field(0, ge=-100_000, le=100_000)
    site_seconds: float = Field(0.0, ge=-1e9, le=1e9, allow_inf_nan=False)


class Converted(Event):
    """Internal: a click or a lead of an account converted (``n = 1``) or stopped being
    converted (``n = -1``, its order was cancelled or re-credited), sent from the shopper's
    state to the account. ``cohort_ts`` is the click's or lead's own time: the cohort it
    belongs to; ``ts`` is the time of the event that changed it (an order, click or lead)."""

    platform: PlatformName
    account_id: KeyId
    kind: Literal["click", "lead"]
    cohort_ts: int = Field(ge=0, strict=True)
    n: int = Field(ge=-1, le=1, strict=True)


class Sale(Event):
    """Internal: an order's amount for the shop's revenue of all orders, and how much of it
    each attribution model credits to social touches (not direct visits); sent from the
    shopper's state to the key ``all|all``. A negated copy takes it back (cancelled,
    refunded, or credited again differently). ``unattributed``: 1 when the order has no touch at
    all, -1 in the negation that takes such a sale back because its credit changed (a late click),
    0 otherwise (a cancellation's take-back too: the order was placed); the shop's key sums it
    into ``socialpulse_unattributed_orders_total``."""

    order_id: Id
    currency: ISO4217
    amount: Decimal = Field(ge=Decimal("-1e12"), le=Decimal("1e12"), allow_inf_nan=False)
    social: dict[str, Decimal] = {}  # model -> amount credited to social touches
    unattributed: int = Field(default=0, ge=-1, le=1, strict=True)


class CheckoutOutcome(Event):
    """Internal: a checkout started, completed or abandoned (``CHECKOUT_TIMEOUT``), by the source
    of the shopper's last touch before it; sent from the shopper's state to the key ``all|all``
    and stamped when the outcome was decided."""

    checkout_id: Id
    source: SourceName | Literal["none"]
    outcome: Literal["started", "completed", "abandoned"]


class Referral(Event):
    """Internal: a referred order's part for its referrer, sent from the shopper's state to the
    account where the referrer referred the shopper (``streams.sellers.referrals``). A negated
    copy (``orders`` -1, negative ``amount``) takes it back: a cancellation or refund, or a
    referral decided again differently (a late lead or earlier order)."""

    referrer_id: KeyId
    platform: PlatformName
    account_id: KeyId
    order_id: Id
    currency: ISO4217
    amount: Decimal = Field(ge=Decimal("-1e12"), le=Decimal("1e12"), allow_inf_nan=False)
    orders: int = Field(0, ge=-1, le=1, strict=True)
    customers: int = Field(0, ge=-1, le=1, strict=True)  # the shopper's first order (a new customer)
    repeat: int = Field(0, ge=-1, le=1, strict=True)  # an order of a shopper who had ordered before


class ConversationSale(Event):
    """Internal: an order whose shopper left a DM lead (a lead of kind ``dm`` without a post) in the
    attribution lookback before it, sent from the shopper's state to the lead's account
    (``streams.sellers.referrals``), where the seller of the conversation that brought the lead is
    credited with it. A negated copy (``orders`` -1, negative ``amount``) takes it back."""

    platform: PlatformName
    account_id: KeyId
    lead_id: EventId  # the DM lead's event id
    order_id: Id
    currency: ISO4217
    amount: Decimal = Field(ge=Decimal("-1e12"), le=Decimal("1e12"), allow_inf_nan=False)
    orders: int = Field(0, ge=-1, le=1, strict=True)
    customers: int = Field(0, ge=-1, le=1, strict=True)


#: every model the keyed stages may see, input topics plus internal records
STAGE_MODELS: dict[str, type[Event]] = TOPIC_MODELS | {"credits": Credit, "converted": Converted, "sales": Sale,
                                                        "checkout_outcomes": CheckoutOutcome,
                                                        "referrals": Referral, "conversation_sales": ConversationSale}
#: the key of the shop's own totals (revenue of all orders) on the account stream
SHOP_KEY = "all|all"
#: the key of direct visits' credits on the account stream
DIRECT_KEY = "direct|direct"


def derived_id(base: str, suffix: str) -> str:
    """The event id of a record derived from an event (``base``): ``base`` + ``suffix``, or a
    digest of ``base`` + ``suffix`` when that would pass the 128 characters an id may have."""
    text = base + suffix
    if len(text) <= 128:
        return text
    return hashlib.blake2b(base.encode(), digest_size=16).hexdigest() + suffix[-96:]


def account_key(platform: str, account_id: str) -> str:
    """The key of an account's state, partitions and results: ``platform|account_id``."""
    return f"{platform}|{account_id}"


def split_account_key(key: str) -> tuple[str, str]:
    """(platform, account_id) of an account key."""
    platform, _, account_id = key.partition("|")
    return platform, account_id


def of_account(event: Event) -> str:
    """An event's account key (events with ``platform`` and ``account_id``)."""
    return f"{event.platform}|{event.account_id}"  # type: ignore[attr-defined]


def of_shopper(event: Event) -> str:
    """An event's shopper key (events with ``actor_id``)."""
    return event.actor_id  # type: ignore[attr-defined, no-any-return]

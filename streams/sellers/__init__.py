"""Sellers: the people who post, connect and converse for an account, their outcomes, a selling
index with four pillars and an influence score (``family``, ``index``); referred orders joined
to their referrer's account on the shopper's key (``referrals``); the API route (``views``)."""

from .family import Sellers
from .referrals import Referrals

__all__ = ["Sellers", "Referrals"]

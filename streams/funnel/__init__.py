"""The selling funnel on an account: leads, lead rates, cost per lead, sessions from social."""

from .family import Funnel

__all__ = ["Funnel"]

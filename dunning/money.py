"""Amounts in minor units, shown with the currency's own decimals (JPY has none, KWD three)."""

from __future__ import annotations

from decimal import Decimal

from babel import Locale
from babel.numbers import format_currency, get_currency_precision


def format_money(amount_minor: int, currency: str, locale: Locale | str = "en") -> str:
    code = currency.upper()
    amount = Decimal(int(amount_minor)).scaleb(-get_currency_precision(code))
    return format_currency(amount, code, locale=locale, currency_digits=True)


def plain_amount(amount_minor: int, currency: str) -> str:
    """`49.00 EUR`, `4900 JPY`: locale-free, for workflow summaries and the UI."""
    code = currency.upper()
    digits = get_currency_precision(code)  # Babel's default (2) for a currency it doesn't know
    return f"{Decimal(int(amount_minor)).scaleb(-digits):.{digits}f} {code}"


# Load Babel's currency table now, at import: workflows must not read files while they run.
get_currency_precision("EUR")

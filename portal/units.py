"""Sizes as the portal writes them everywhere: binary units with their IEC names.

Forms ask for GiB (1024³ bytes), so pages, messages and charts say KiB, MiB, GiB and TiB too,
computed the same way; a size is never "GB" on one page and "GiB" on the next.
"""

from decimal import Decimal

UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size_text(value: int | float | Decimal | str | None) -> str:
    """`1536` -> "1.5\xa0KiB"; under 1 KiB, the bytes; anything unreadable counts as 0."""
    try:
        amount = float(value or 0)
    except (TypeError, ValueError):
        amount = 0.0
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount < 1024:
        count = int(amount)
        return f"{sign}{count}\xa0byte{'s' if count != 1 else ''}"
    for unit in UNITS:
        amount /= 1024
        if amount < 1024 or unit == UNITS[-1]:
            return f"{sign}{amount:.1f}\xa0{unit}"
    raise AssertionError("unreachable")

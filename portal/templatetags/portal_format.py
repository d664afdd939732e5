"""Small presentation helpers: usage bars drawn as inline SVG, no JavaScript needed."""

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from portal.units import size_text

register = template.Library()


@register.filter
def size(value: object) -> str:
    """Bytes in binary units with IEC names (portal/units.py): `{{ n|size }}`."""
    return size_text(value)  # type: ignore[arg-type]


@register.simple_tag
def usage_bar(used: int, capacity: int, high: int | None = None, low: int | None = None) -> str:
    """A bar of `used` out of `capacity`, with watermark ticks, and the figures as text."""
    percent = min(100.0, 100.0 * used / capacity) if capacity else 0.0
    level = "high" if high is not None and percent >= high else "ok"
    ticks = "".join(
        f'<line x1="{mark}" x2="{mark}" y1="0" y2="10" class="tick {name}"/>'
        for name, mark in (("low", low), ("high", high))
        if mark is not None
    )
    return format_html(
        '<span class="usage"><svg class="bar {}" viewBox="0 0 100 10" preserveAspectRatio="none" '
        'role="img" aria-label="{} % used"><rect width="100" height="10" class="track"/>'
        '<rect width="{}" height="10" class="fill"/>{}</svg>'
        "<small>{} of {} ({} %)</small></span>",
        level,
        f"{percent:.0f}",
        f"{percent:.2f}",
        mark_safe(ticks),  # noqa: S308 - built from integers above
        size_text(used),
        size_text(capacity),
        f"{percent:.1f}",
    )

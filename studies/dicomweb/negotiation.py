"""Content negotiation for DICOMweb: the client's Accept ranges, in its order of preference.

PS3.18 8.3.3.1 lets an `accept` query parameter stand for the header. A missing header
accepts anything; a header whose every range has `q=0` (or an unreadable q) accepts
nothing, and the view answers 406.
"""

from dataclasses import dataclass, field

from django.http import HttpRequest

from studies.dicomweb.multipart import media_type_parse


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: `type/subtype` and its parameters, lower-cased names."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        return self.media_type in {"*/*", "*"}

    @property
    def part_type(self) -> str:
        return self.params.get("type", "").strip().lower()

    @property
    def syntax(self) -> str | None:
        value = self.params.get("transfer-syntax")
        return value.strip() if value is not None else None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for character in text:
        if character == '"':
            quoted = not quoted
        if character == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(character)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def parse_accept(header: str) -> list[MediaRange]:
    """The ranges of an Accept header, most preferred first; `q=0` ranges are dropped, and
    so are ranges whose q is no number (a range that cannot be read is not an offer)."""
    weighted: list[tuple[float, int, MediaRange]] = []
    for position, entry in enumerate(_split_outside_quotes(header, ",")):
        media_type, params = media_type_parse(entry)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            weighted.append((-quality, position, MediaRange(media_type, params)))
    return [media_range for *_order, media_range in sorted(weighted, key=lambda w: w[:2])]


def accepted(request: HttpRequest) -> list[MediaRange]:
    """The client's ranges; no header at all accepts anything."""
    header = request.GET.get("accept") or request.META.get("HTTP_ACCEPT")
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    return parse_accept(header)

"""A streaming reader of `multipart/related` bodies (RFC 2046 section 5.1, RFC 2387).

STOW-RS bodies carry whole studies, so nothing here holds more than one read chunk plus a
boundary's length of body at a time (and, for a part's headers, at most `max_header_bytes`).
Parts come out one at a time, each with its headers and an iterator of its body chunks; a
part's body is skipped automatically if the caller asks for the next part first. Every way
a body can be malformed raises the one `MultipartError`, with a sentence saying what was
wrong. No Django here: the reader takes anything with `read(n)`.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

DEFAULT_CHUNK_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 5.1.1
# RFC 2046 5.1.1 `bchars`: a space is allowed, except as the last character.
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAMETER_NAME_RE = re.compile(r"[ \t]*([^\s=;\"]+)[ \t]*=[ \t]*")
_HEADER_NAME_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PADDING = b" \t"
CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body (or its Content-Type) is not well-formed multipart; the message says why."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def media_type_parse(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; name=token; name="quoted"` -> (lower-cased type, parameters).

    Parameter names are lower-cased; quoted values lose their quotes and backslash escapes.
    Junk between parameters is skipped: what matters is found or reported by the caller.
    """
    media, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    position = 0
    while position < len(rest):
        if rest[position] in " \t;":
            position += 1
            continue
        match = _PARAMETER_NAME_RE.match(rest, position)
        if match is None:
            # Not `name=value`: skip to the next parameter.
            following = rest.find(";", position)
            position = len(rest) if following < 0 else following
            continue
        name, position = match.group(1).lower(), match.end()
        if rest.startswith('"', position):
            characters, position = [], position + 1
            while position < len(rest) and rest[position] != '"':
                if rest[position] == "\\" and position + 1 < len(rest):
                    position += 1
                characters.append(rest[position])
                position += 1
            position += 1  # the closing quote (or past the end when it is missing)
            parameter = "".join(characters)
        else:
            following = rest.find(";", position)
            end = len(rest) if following < 0 else following
            parameter, position = rest[position:end].strip(), end
        parameters.setdefault(name, parameter)
    return media.strip().lower(), parameters


def boundary_of(content_type: str) -> str:
    """The `boundary` parameter of a multipart Content-Type, checked against RFC 2046."""
    boundary = media_type_parse(content_type)[1].get("boundary", "")
    if not boundary:
        raise MultipartError("The Content-Type has no boundary parameter.")
    if len(boundary) > MAX_BOUNDARY_LENGTH or not _BOUNDARY_RE.match(boundary):
        raise MultipartError(
            f"The boundary {boundary[:80]!r} is not valid: 1 to {MAX_BOUNDARY_LENGTH} letters, "
            "digits or '()+_,-./:=? characters (RFC 2046 5.1.1)."
        )
    return boundary


@dataclass(frozen=True)
class Part:
    """One body part: headers with lower-cased names, and its body as chunks of bytes.

    Read `body` before asking for the next part; whatever is left of it is skipped then.
    """

    headers: dict[str, str]
    body: Iterator[bytes]

    @property
    def content_type(self) -> str:
        """The part's media type, lower-cased, without parameters ('' when none was sent)."""
        return media_type_parse(self.headers.get("content-type", ""))[0]


class _Reader:
    """The bytes read but not yet handed out, and the scanning rules over them."""

    def __init__(self, stream: Readable, boundary: str, chunk_bytes: int) -> None:
        self.stream, self.chunk_bytes = stream, chunk_bytes
        self.boundary = boundary
        self.delimiter = b"\r\n--" + boundary.encode("ascii")
        # The CRLF before a boundary belongs to the boundary (RFC 2046 5.1.1). Starting
        # with one lets a body that opens with its first boundary line, as most do, be
        # scanned exactly like any later part.
        self.data = CRLF
        self.at_end = False
        self.failure: MultipartError | None = None

    def fail(self, message: str) -> MultipartError:
        self.failure = MultipartError(message)
        return self.failure

    def fill(self) -> bool:
        """Append one read; False once the stream is exhausted."""
        if self.at_end:
            return False
        chunk = self.stream.read(self.chunk_bytes)
        if not chunk:
            self.at_end = True
            return False
        self.data += chunk
        return True

    def chunk_before_delimiter(self, *, ended: str) -> bytes:
        """The next bytes before the delimiter, or b'' once the delimiter has been consumed.

        A tail shorter than the delimiter is held back: it may be the delimiter's start.
        """
        keep = len(self.delimiter) - 1
        while True:
            at = self.data.find(self.delimiter)
            if at > 0:
                chunk, self.data = self.data[:at], self.data[at:]
                return chunk
            if at == 0:
                self.data = self.data[len(self.delimiter) :]
                return b""
            if len(self.data) > keep:
                chunk, self.data = self.data[:-keep], self.data[-keep:]
                return chunk
            if not self.fill():
                raise self.fail(ended)

    def need(self, count: int) -> bool:
        """Read until at least `count` bytes are buffered; False if the stream ends first."""
        while len(self.data) < count:
            if not self.fill():
                return False
        return True

    def after_delimiter(self, *, max_padding: int) -> bool:
        """Consume the rest of a boundary line; True if it was the closing one (`--`)."""
        if not self.need(2):
            raise self.fail(
                f"The body ends right after a boundary line; the closing --{self.boundary}-- "
                "is missing."
            )
        if self.data.startswith(b"--"):
            self.data = b""  # the epilogue is ignored (RFC 2046 5.1.1) and not even read
            return True
        padding = 0
        while True:
            stripped = self.data.lstrip(_PADDING)
            padding += len(self.data) - len(stripped)
            self.data = stripped
            if padding > max_padding:
                raise self.fail("A boundary line is followed by too much white space.")
            if self.data or not self.fill():
                break
        if not self.need(2):
            raise self.fail(
                f"The body ends inside a boundary line; the closing --{self.boundary}-- is missing."
            )
        if not self.data.startswith(CRLF):
            raise self.fail(
                f"The boundary --{self.boundary} is followed by other characters instead of "
                "a line end: the boundary occurs inside a part, which RFC 2046 forbids."
            )
        self.data = self.data[2:]
        return False

    def headers(self, *, max_bytes: int) -> dict[str, str]:
        """A part's header lines up to the empty line, unfolded, names lower-cased."""
        lines: list[bytes] = []
        used = searched = 0
        while True:
            end = self.data.find(CRLF, searched)
            if end < 0:
                if used + len(self.data) > max_bytes:
                    raise self.fail(f"A part's headers are longer than {max_bytes} bytes.")
                searched = max(0, len(self.data) - 1)
                if not self.fill():
                    raise self.fail("The body ends inside a part's headers.")
                continue
            line, self.data, searched = self.data[:end], self.data[end + 2 :], 0
            used += end + 2
            if used > max_bytes:
                raise self.fail(f"A part's headers are longer than {max_bytes} bytes.")
            if not line:
                return self._header_dict(lines)
            lines.append(line)

    def _header_dict(self, lines: list[bytes]) -> dict[str, str]:
        unfolded: list[bytes] = []
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                if not unfolded:
                    raise self.fail("A part's first header line starts with white space.")
                unfolded[-1] += b" " + line.strip(_PADDING)  # RFC 5322 folding
            else:
                unfolded.append(line)
        headers: dict[str, str] = {}
        for line in unfolded:
            name, colon, value = line.partition(b":")
            name = name.strip(_PADDING)
            if not colon or not _HEADER_NAME_RE.match(name):
                shown = line[:80].decode("latin-1")
                raise self.fail(f"A part has a malformed header line: {shown!r}.")
            key = name.decode("ascii").lower()
            # Header bytes beyond ASCII are not text we rely on; latin-1 keeps them intact.
            text = value.strip(_PADDING).decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers


class _PartBody(Iterator[bytes]):
    """A part's body chunks. A class, not a generator, so closing it cannot lose the place."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self.finished = False

    def __next__(self) -> bytes:
        if self.finished:
            raise StopIteration
        if self._reader.failure is not None:
            raise self._reader.failure
        chunk = self._reader.chunk_before_delimiter(
            ended=f"The body ends inside a part; the closing --{self._reader.boundary}-- "
            "is missing."
        )
        if not chunk:
            self.finished = True
            raise StopIteration
        return chunk

    def skip(self) -> None:
        for _ in self:
            pass


def multipart_parts(
    *,
    stream: Readable,
    boundary: str,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> Iterator[Part]:
    """The parts of a multipart body read from `stream`, one at a time.

    Raises `MultipartError` when the body has no boundary line, no part, a malformed or
    oversized header block, a boundary inside a part, or no closing boundary: the last of
    these only once the parts before it were handed out, so callers must be ready to undo.
    """
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    reader = _Reader(stream, boundary, chunk_bytes)
    # The preamble, up to the first boundary line, is not part of the message.
    while reader.chunk_before_delimiter(
        ended=f"The body has no boundary line --{boundary}; it is not multipart with this boundary."
    ):
        pass
    if reader.after_delimiter(max_padding=max_header_bytes):
        raise reader.fail("The body has no parts, only a closing boundary.")
    while True:
        body = _PartBody(reader)
        yield Part(headers=reader.headers(max_bytes=max_header_bytes), body=body)
        if reader.failure is not None:
            raise reader.failure
        body.skip()
        if reader.after_delimiter(max_padding=max_header_bytes):
            return

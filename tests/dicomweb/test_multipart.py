"""The streaming multipart/related reader: the same parts whatever the read sizes, and one
clear error for every malformed body; no database."""

import io
from collections.abc import Iterator

import pytest

from studies.dicomweb.multipart import (
    MultipartError,
    boundary_of,
    media_type_parse,
    multipart_parts,
)

BOUNDARY = "b0undary-xyz"


def body_of(parts: list[tuple[list[str], bytes]], *, preamble: bytes = b"", epilogue: bytes = b""):
    out = [preamble + (b"\r\n" if preamble else b"")]
    for headers, data in parts:
        out.append(f"--{BOUNDARY}\r\n".encode())
        out.extend(f"{h}\r\n".encode() for h in headers)
        out.append(b"\r\n" + data + b"\r\n")
    out.append(f"--{BOUNDARY}--".encode() + epilogue)
    return b"".join(out)


class Trickle(io.RawIOBase):
    """A stream whose reads return fewer bytes than asked, in a repeating pattern."""

    def __init__(self, data: bytes, sizes: tuple[int, ...]):
        self.data, self.sizes, self.position, self.calls = data, sizes, 0, 0

    def read(self, size: int = -1) -> bytes:
        step = min(size, self.sizes[self.calls % len(self.sizes)])
        self.calls += 1
        chunk = self.data[self.position : self.position + step]
        self.position += len(chunk)
        return chunk


def collect(stream, **kwargs) -> list[tuple[dict[str, str], bytes]]:
    return [
        (part.headers, b"".join(part.body))
        for part in multipart_parts(stream=stream, boundary=BOUNDARY, **kwargs)
    ]


def every_split(body: bytes) -> Iterator[int]:
    yield from range(1, len(body) + 2)


# Content chosen to sit next to the delimiter: CRs, LFs, dashes and partial boundaries.
AWKWARD = [
    (["Content-Type: application/dicom"], b"plain"),
    (["Content-Type: application/dicom"], b""),
    ([], b"\r\n"),
    (["Content-Type: text/plain"], b"\r\n--b0undary-xy"),
    (["Content-Type: application/dicom"], b"ends with CR\r"),
    (["content-type: application/dicom", "X-Extra: 1"], b"--" + BOUNDARY.encode()),
    (["Content-Type: application/dicom"], b"\r\n-\r\n--\r\n--b\x00\xff" * 3),
]


def test_the_same_parts_at_every_chunk_size():
    body = body_of(AWKWARD, preamble=b"This is the preamble.", epilogue=b"\r\nepilogue --x")
    expected = collect(io.BytesIO(body), chunk_bytes=1 << 16)
    assert [data for _, data in expected] == [data for _, data in AWKWARD]
    assert expected[5][0] == {"content-type": "application/dicom", "x-extra": "1"}
    assert expected[2][0] == {}
    for size in every_split(body):
        assert collect(io.BytesIO(body), chunk_bytes=size) == expected, size


def test_the_same_parts_when_reads_return_short():
    body = body_of(AWKWARD)
    expected = collect(io.BytesIO(body))
    for pattern in [(1,), (2, 5), (7, 1, 3), (len(BOUNDARY) + 3, 1)]:
        assert collect(Trickle(body, pattern), chunk_bytes=64) == expected, pattern


def test_a_large_part_comes_in_bounded_chunks():
    data = bytes(range(256)) * 4096  # 1 MiB
    body = body_of([(["Content-Type: application/dicom"], data)])
    parts = multipart_parts(stream=io.BytesIO(body), boundary=BOUNDARY, chunk_bytes=4096)
    chunks = list(next(parts).body)
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 4096 + len(BOUNDARY) + 4
    assert list(parts) == []


def test_the_body_may_start_without_a_preamble_or_with_one():
    plain = body_of([([], b"x")])
    assert plain.startswith(b"--")
    prefixed = body_of([([], b"x")], preamble=b"ignore\r\n--not-it\r\n")
    assert collect(io.BytesIO(plain)) == collect(io.BytesIO(prefixed)) == [({}, b"x")]


def test_transport_padding_after_a_boundary_and_folded_headers():
    body = (
        f"--{BOUNDARY}  \t\r\nContent-Type: application/dicom;\r\n transfer-syntax=1.2\r\n"
        f"\r\nabc\r\n--{BOUNDARY}--\r\n"
    ).encode()
    for size in every_split(body):
        ((headers, data),) = collect(io.BytesIO(body), chunk_bytes=size)
        assert headers == {"content-type": "application/dicom; transfer-syntax=1.2"}
        assert data == b"abc"


def test_unread_bodies_are_skipped():
    body = body_of([([], b"first" * 1000), ([], b"second")])
    parts = multipart_parts(stream=io.BytesIO(body), boundary=BOUNDARY, chunk_bytes=7)
    first = next(parts)
    assert next(first.body).startswith(b"f")
    second = next(parts)
    assert b"".join(second.body) == b"second"
    assert list(first.body) == []
    assert list(parts) == []


def test_the_epilogue_is_not_read():
    body = body_of([([], b"x")]) + b"\r\n" + b"e" * 100_000
    stream = io.BytesIO(body)
    assert collect(stream, chunk_bytes=1024) == [({}, b"x")]
    assert stream.tell() < 2048


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no boundary line"),
        (b"just text, no parts at all", "no boundary line"),
        (f"--{BOUNDARY}--\r\n".encode(), "no parts"),
        (f"--{BOUNDARY}\r\n\r\nunfinished".encode(), "closing --"),
        (f"--{BOUNDARY}\r\n\r\nwhole\r\n--{BOUNDARY}".encode(), "closing --"),
        (f"--{BOUNDARY}\r\n\r\nwhole\r\n--{BOUNDARY}\r\n".encode(), "inside a part's headers"),
        (f"--{BOUNDARY}\r\nContent-Type: a".encode(), "inside a part's headers"),
        (f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "malformed header"),
        (f"--{BOUNDARY}\r\n folded first\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "white space"),
        (
            f"--{BOUNDARY}\r\n\r\nx\r\n--{BOUNDARY}X\r\n\r\ny--{BOUNDARY}--".encode(),
            "inside a part",
        ),
        (f"--{BOUNDARY}\n\nbare LF\n--{BOUNDARY}--".encode(), "instead of a line end"),
    ],
)
def test_malformed_bodies_raise_one_error_with_a_reason(body, message):
    for size in every_split(body):
        with pytest.raises(MultipartError, match=message):
            collect(io.BytesIO(body), chunk_bytes=size)


def test_parts_before_a_missing_final_boundary_come_out_then_the_error():
    body = body_of([([], b"one")])[: -len(f"--{BOUNDARY}--")] + f"--{BOUNDARY}\r\n\r\ntwo".encode()
    parts = multipart_parts(stream=io.BytesIO(body), boundary=BOUNDARY)
    assert b"".join(next(parts).body) == b"one"
    second = next(parts)
    with pytest.raises(MultipartError, match="closing"):
        b"".join(second.body)
    with pytest.raises(MultipartError):  # and it stays broken
        next(parts)


def test_header_blocks_are_bounded_before_reading_them_whole():
    stream = io.BytesIO(f"--{BOUNDARY}\r\nX: ".encode() + b"a" * 10_000_000)
    with pytest.raises(MultipartError, match="longer than 1024 bytes"):
        collect(stream, chunk_bytes=512, max_header_bytes=1024)
    assert stream.tell() < 4096
    many_lines = f"--{BOUNDARY}\r\n".encode() + b"X: y\r\n" * 1000 + b"\r\nx"
    with pytest.raises(MultipartError, match="longer than"):
        collect(io.BytesIO(many_lines), max_header_bytes=1024)
    padded = f"--{BOUNDARY}".encode() + b" " * 5000
    with pytest.raises(MultipartError, match="white space"):
        collect(io.BytesIO(padded), chunk_bytes=100, max_header_bytes=1024)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        (f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', BOUNDARY),
        (f'multipart/related; boundary="{BOUNDARY}"; type=application/dicom', BOUNDARY),
        ('Multipart/Related; BOUNDARY="with space:colon"', "with space:colon"),
        ('multipart/related; boundary="es\\"caped"', None),  # a quote is not a bchar
        ("multipart/related; type=application/dicom", None),
        ('multipart/related; boundary=""', None),
        ("multipart/related; boundary=" + "a" * 71, None),
        ('multipart/related; boundary="ends in space "', None),
    ],
)
def test_the_boundary_comes_from_the_content_type(content_type, boundary):
    if boundary is None:
        with pytest.raises(MultipartError, match="boundary"):
            boundary_of(content_type)
    else:
        assert boundary_of(content_type) == boundary


def test_media_types_and_parameters():
    assert media_type_parse('Multipart/Related; Type="application/dicom"; start=<a@b>') == (
        "multipart/related",
        {"type": "application/dicom", "start": "<a@b>"},
    )
    assert media_type_parse("") == ("", {})
    assert media_type_parse("application/dicom; junk; q=0.5") == ("application/dicom", {"q": "0.5"})
    assert media_type_parse('a/b; x="unterminated') == ("a/b", {"x": "unterminated"})


def test_a_boundary_with_spaces_and_punctuation_works():
    boundary = "a'()+_,-./:=? b"
    body = f"--{boundary}\r\n\r\nx\r\n--{boundary}--".encode()
    parts = multipart_parts(stream=io.BytesIO(body), boundary=boundary, chunk_bytes=3)
    assert [b"".join(p.body) for p in parts] == [b"x"]

"""The JSON depth scan that runs on the event loop before any key check: right, and linear.

Work is bounded by counting allocations (tracemalloc), never by timing: every pass of the scan
is a vectorised sweep, so its peak allocation is a small multiple of the body, and it finishes
the shape that used to take the old regex half an hour (defect 1 of issue 12).
"""

from __future__ import annotations

import json
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from financemath_mlops.serving.middleware import json_depth

# Bytes the scan treats specially, plus filler; random mixes make odd, invalid "JSON" too.
ALPHABET = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b",", b":", b" "])
# Grammar-aware pieces for the agreement test: outside strings anything but a backslash (JSON
# has none there); inside, brackets, quotes and backslashes only as escapes.
OUTSIDE = st.sampled_from([b"[", b"]", b"{", b"}", b"1", b",", b":", b" "])
STRING_BODY = st.lists(
    st.sampled_from([b"[", b"]", b"{", b"}", b"a", b'\\"', b"\\\\", b"\\n", b"\\u005b"]),
    max_size=12,
).map(b"".join)
STRING = STRING_BODY.map(lambda inside: b'"' + inside + b'"')
ALLOCATED_PER_BYTE = 12  # copies: unescaped body, bool mask, parity, int8 steps, int32 sums


def reference_depth(body: bytes) -> int:
    """A byte-by-byte state machine: the obvious definition the fast scan must agree with."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        char = bytes([byte])
        if in_string:
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


def peak_allocation(body: bytes) -> int:
    tracemalloc.start()
    try:
        json_depth(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=300, deadline=None)
@given(st.lists(OUTSIDE | STRING, max_size=40).map(b"".join), st.none() | STRING_BODY)
def test_depth_agrees_with_a_byte_by_byte_reference(body, unterminated):
    if unterminated is not None:  # a string left open runs to the end of the body
        body += b'"' + unterminated
    assert json_depth(body) == reference_depth(body)


@settings(max_examples=50, deadline=None)
@given(
    st.recursive(
        st.none() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c),
        max_leaves=40,
    )
)
def test_depth_of_real_json_is_its_nesting(value):
    body = json.dumps(value).encode()
    assert json_depth(body) == reference_depth(body)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(ALPHABET, min_size=1, max_size=8).map(b"".join),
    st.integers(min_value=2_000, max_value=40_000),
)
def test_allocations_grow_linearly_whatever_the_repeated_pattern(unit, repeats):
    body = unit * (repeats // len(unit) + 1)
    assert peak_allocation(body) <= ALLOCATED_PER_BYTE * len(body) + 65_536


def test_the_issue_shape_at_one_megabyte_is_scanned_in_linear_memory():
    body = b'{"question": "' + b'\\"' * 500_000  # unterminated, 1 MB of escaped quotes
    assert json_depth(body) == 1
    assert peak_allocation(body) <= ALLOCATED_PER_BYTE * len(body)


def test_deep_unclosed_brackets_count_as_they_open():
    assert json_depth(b"[" * 100_000) == 100_000
    assert json_depth(b'["]]]]", [[[' + b"]" * 10) == 4

"""The JSON depth scan that runs on the event loop before any key check: right, and linear.

Work is bounded by counting allocations (tracemalloc), never by timing: every pass of the scan
is a vectorised sweep, so its peak allocation is a small multiple of the body, and it finishes
the shape that used to take the old regex half an hour (defect 1 of issue 12). With the guard's
limits it stops at the first block over one, counted in the values it saw (issue 12, attack
benchmark: a megabyte of commas used to be scanned to its end on every request).
"""

from __future__ import annotations

import json
import tracemalloc
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from financemath_mlops.serving import middleware
from financemath_mlops.serving.middleware import (
    MAX_JSON_DEPTH,
    SCAN_BLOCK_BYTES,
    SCAN_INLINE_BYTES,
    json_depth,
    json_shape,
    within_limits,
)

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


def reference_shape(body: bytes) -> tuple[int, bool]:
    """A byte-by-byte state machine: the obvious definition the fast scan must agree with.

    The deepest nesting, and whether the body is proven not JSON: a string open at the end, or
    brackets that close below zero or do not balance."""
    depth = deepest = lowest = 0
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
            lowest = min(lowest, depth)
    return deepest, in_string or depth != 0 or lowest < 0


def reference_depth(body: bytes) -> int:
    return reference_shape(body)[0]


def peak_allocation(body: bytes) -> int:
    tracemalloc.start()
    try:
        json_depth(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


BODIES = st.lists(OUTSIDE | STRING, max_size=40).map(b"".join)
# Any value json.dumps can write, nested up to 40 leaves: what a real client sends.
REAL_JSON = st.recursive(
    st.none() | st.text(max_size=5),
    lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(BODIES, st.none() | STRING_BODY)
def test_depth_agrees_with_a_byte_by_byte_reference(body, unterminated):
    if unterminated is not None:  # a string left open runs to the end of the body
        body += b'"' + unterminated
    assert json_depth(body) == reference_depth(body)


@settings(max_examples=50, deadline=None)
@given(REAL_JSON)
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


@settings(max_examples=200, deadline=None)
@given(BODIES, st.none() | STRING_BODY, st.integers(min_value=1, max_value=16))
def test_the_shape_does_not_depend_on_the_block_size(body, unterminated, block):
    if unterminated is not None:
        body += b'"' + unterminated
    whole = json_shape(body)
    with mock.patch.object(middleware, "SCAN_BLOCK_BYTES", block):
        assert json_shape(body) == whole
        assert json_shape(body, yield_between_blocks=True) == whole
    assert (whole.depth, whole.malformed) == reference_shape(body)


@settings(max_examples=50, deadline=None)
@given(REAL_JSON, st.integers(min_value=1, max_value=16))
def test_real_json_is_never_called_malformed(value, block):
    """The guard refuses a malformed body before parsing it: valid JSON must never be one."""
    body = json.dumps(value).encode()
    with mock.patch.object(middleware, "SCAN_BLOCK_BYTES", block):
        assert not json_shape(body).malformed
    assert json_shape(body[:-1]).malformed == (body[-1:] in (b"]", b"}", b'"'))


@settings(max_examples=200, deadline=None)
@given(BODIES, st.integers(min_value=0, max_value=6), st.integers(min_value=1, max_value=12))
def test_a_limited_scan_gives_the_same_verdict(body, max_depth, max_values):
    exact = json_shape(body)
    with mock.patch.object(middleware, "SCAN_BLOCK_BYTES", 4):  # many blocks: early stops
        limited = json_shape(body, max_depth, max_values)
    refused = limited.depth > max_depth or limited.values > max_values
    assert refused == (exact.depth > max_depth or exact.values > max_values)
    assert limited.depth <= exact.depth and limited.values <= exact.values  # never overstated


@settings(max_examples=300, deadline=None)
@given(BODIES, st.none() | STRING_BODY, st.integers(0, 6), st.integers(1, 12))
def test_the_quick_bound_never_passes_a_body_the_scan_refuses(
    body, unterminated, max_depth, max_values
):
    """The guard skips the scan for a small body the quick bound passes: the scan must agree."""
    if unterminated is not None:
        body += b'"' + unterminated
    if within_limits(body, max_depth, max_values):
        exact = json_shape(body)
        assert exact.depth <= max_depth and exact.values <= max_values


def test_the_quick_bound_leaves_batches_and_large_bodies_to_the_scan():
    record = b'{"question": "q", "tables": ["| a |"]}'
    assert within_limits(record, MAX_JSON_DEPTH, 1_216)
    batch = b'{"items": [' + b",".join([record] * 20) + b"]}"  # 41 brackets open
    assert not within_limits(batch, MAX_JSON_DEPTH, 1_216) and json_shape(batch).depth == 4
    large = b'{"question": "' + b"a" * SCAN_INLINE_BYTES + b'"}'
    assert not within_limits(large, MAX_JSON_DEPTH, 1_216)


def test_a_megabyte_of_values_is_refused_after_its_first_block():
    body = b'{"items": [' + b",".join([b"1"] * 400_000) + b"]}"
    assert json_shape(body).values == 400_000
    seen = json_shape(body, MAX_JSON_DEPTH, 1_216).values
    assert 1_216 < seen <= SCAN_BLOCK_BYTES  # the first block only, not the 400,000


def test_unclosed_brackets_are_refused_after_the_first_block():
    assert json_shape(b"[" * 500_000, MAX_JSON_DEPTH, 1_216).depth <= SCAN_BLOCK_BYTES

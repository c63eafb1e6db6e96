"""Block payload encode/decode: round trips of every layout, and malformed payloads."""

from __future__ import annotations

import bisect
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banyanstore.sstable.block import (
    FIXED_KEYS,
    FIXED_VALUES,
    HEADER,
    STRIDE,
    TOMBSTONES,
    Block,
    BlockBuilder,
    BlockFormatError,
    LazyBlock,
    decode_block,
    encode_block,
)

from .helpers import set_block_offset

keys_st = st.lists(st.binary(max_size=20), min_size=1, max_size=60, unique=True).map(sorted)
value_st = st.one_of(st.none(), st.binary(max_size=50))


@settings(max_examples=200, deadline=None)
@given(keys=keys_st, data=st.data())
def test_round_trip_any_layout(keys: list[bytes], data: st.DataObject) -> None:
    versions = data.draw(st.lists(st.integers(1, 2**64 - 1), min_size=len(keys), max_size=len(keys)))
    values = data.draw(st.lists(value_st, min_size=len(keys), max_size=len(keys)))
    block = decode_block(encode_block(keys, versions, values))
    assert block.keys == keys
    assert block.versions == versions
    assert block.values == values
    assert all(type(k) is bytes for k in block.keys)
    assert list(block.entries()) == list(zip(keys, versions, values, strict=True))
    model = list(zip(keys, versions, values, strict=True))
    lo = data.draw(st.integers(0, len(keys) + 1))
    hi = data.draw(st.one_of(st.none(), st.integers(0, len(keys) + 1)))
    assert list(block.entries(lo, hi)) == model[lo:hi]
    assert list(block.reversed_entries(lo, hi)) == model[lo:hi][::-1]
    for i, k in enumerate(keys):
        assert block.first_index(k) == i
    assert block.first_index(b"\xff" * 21) == -1


def _flags(payload: bytes) -> int:
    return HEADER.unpack_from(payload, 0)[3]


def test_layout_selection() -> None:
    fixed = encode_block([b"aa", b"bb"], [2, 1], [b"xyz", b"uvw"])
    assert _flags(fixed) == FIXED_KEYS | FIXED_VALUES
    var = encode_block([b"a", b"bb"], [2, 1], [b"x", b"uvw"])
    assert _flags(var) == 0
    tomb = encode_block([b"aa", b"bb", b"cc"], [3, 2, 1], [b"xyz", None, b"uvw"])
    assert _flags(tomb) == FIXED_KEYS | FIXED_VALUES | TOMBSTONES
    assert decode_block(tomb).values == [b"xyz", None, b"uvw"]
    # a tombstone among big fixed values would pad too much: variable layout instead
    big = encode_block([b"a", b"b"], [1, 1], [b"v" * 8000, None])
    assert _flags(big) == FIXED_KEYS | TOMBSTONES
    assert decode_block(big).values == [b"v" * 8000, None]


def test_find_walks_versions() -> None:
    b = decode_block(encode_block([b"a", b"k", b"k", b"k", b"z"], [5, 9, 6, 2, 1],
                                  [b"", b"9", b"6", b"2", b""]))
    assert b.find(b"k", 100) == 1
    assert b.find(b"k", 7) == 2
    assert b.find(b"k", 6) == 2
    assert b.find(b"k", 1) == 4  # past the key: no version <= 1
    assert b.find(b"zz", 1) == 5
    assert b.seek(b"b") == 1
    assert b.first_index(b"k") == 1 and b.first_index(b"z") == 4 and b.first_index(b"b") == -1


def test_builder_estimate_is_an_upper_bound() -> None:
    bb = BlockBuilder()
    for i in range(50):
        bb.add(b"key%d" % i, 100 - i, None if i % 7 == 0 else b"v" * (i % 13))
    est = bb.estimated_size
    payload = bb.finish()
    assert len(payload) <= est
    assert len(bb) == 0
    with pytest.raises(ValueError):
        bb.finish()


@pytest.mark.parametrize("payload", [
    b"",
    b"\x00" * 8,
    HEADER.pack(5, 0, 0, 0),                        # versions missing
    HEADER.pack(1, 4, 4, 0x80) + b"\x00" * 16,      # unknown flag
    HEADER.pack(1, 4, 4, FIXED_KEYS | FIXED_VALUES) + struct.pack("<Q", 1) + b"abcd",  # values short
    HEADER.pack(1, 4, 4, FIXED_KEYS | FIXED_VALUES) + struct.pack("<Q", 1) + b"abcdefgh" + b"!",
    HEADER.pack(1, 0, 0, 0) + struct.pack("<Q", 1) + struct.pack("<II", 0, 99) + b"k",  # heap short
    HEADER.pack(1, 0, 0, 0) + struct.pack("<Q", 1) + struct.pack("<II", 1, 1) + b"k",   # off[0] != 0
])
def test_malformed_payloads_raise_block_format_error(payload: bytes) -> None:
    with pytest.raises(BlockFormatError):
        decode_block(payload)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), fixed_keys=st.booleans(), fixed_values=st.booleans())
def test_lookup_seek_find_against_model(data: st.DataObject, fixed_keys: bool, fixed_values: bool) -> None:
    """Multi-version keys; lookups straight on the payload agree with a linear model."""
    klen = st.just(3) if fixed_keys else st.integers(0, 4)
    user_keys = sorted(data.draw(st.sets(klen.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                                         min_size=1, max_size=12)))
    entries = []
    for k in user_keys:
        vs = sorted(data.draw(st.sets(st.integers(1, 30), min_size=1, max_size=4)), reverse=True)
        for v in vs:
            val = data.draw(st.one_of(st.none(), st.binary(min_size=5, max_size=5) if fixed_values
                                      else st.binary(max_size=7)))
            entries.append((k, v, val))
    keys, versions, values = (list(c) for c in zip(*entries, strict=True))
    block = decode_block(encode_block(keys, versions, values))
    probes = user_keys + [b"", b"\xff" * 5, user_keys[0] + b"\x00"]
    for key in probes:
        for version in (0, 1, 7, 15, 30, 2**64 - 1):
            newest = next(((True, val, v) for k, v, val in entries if k == key and v <= version),
                          (False, None, 0))
            assert block.lookup(key, version) == newest, (key, version)
            first_ge = next((i for i, (k, v, _) in enumerate(entries)
                             if k > key or (k == key and v <= version)), len(entries))
            assert block.find(key, version) == first_ge
        assert block.seek(key) == next((i for i, e in enumerate(entries) if e[0] >= key), len(entries))
    for i, (k, v, val) in enumerate(entries):
        assert (block.key_at(i), block.version_at(i), block.value_at(i)) == (k, v, val)


def test_seek_in_fixed_width_blocks_against_bisect() -> None:
    """Block.seek in fixed-width blocks of 1 .. 40 entries (several versions of some keys),
    for every key, every gap between keys, shorter and longer probes, before and after
    all: the index of the first entry whose key is >= the probe, as bisect over every
    key says -- around each sample (every STRIDE-th key) and in the last partial stride."""
    for count in range(1, 41):
        keys = sorted(b"%04d" % (2 * (i // 2 if i % 5 == 1 else i)) for i in range(count))
        block = decode_block(encode_block(keys, [count - i for i in range(count)], [b"v"] * count))
        assert block.kw == 4
        probes = [b"", b"\xff" * 5] + [b"%04d" % n for n in range(-1, 2 * count + 2)]
        probes += [b"%03d" % n for n in range(0, count)] + [k + b"\x00" for k in keys]
        for probe in probes:
            assert block.seek(probe) == bisect.bisect_left(keys, probe), (count, probe)


def test_find_ignores_matches_straddling_two_keys() -> None:
    b = decode_block(encode_block([b"ab", b"ac", b"ba"], [1, 1, 1], [b"1", b"2", b"3"]))
    assert b.kw == 2  # "abacba" holds "ba" at offset 1 (across two keys) before the real one
    assert b.first_index(b"ba") == 2 and b.lookup(b"ba", 5) == (True, b"3", 1)
    b = decode_block(encode_block([b"ab", b"ac"], [1, 1], [b"1", b"2"]))
    assert b.first_index(b"ba") == -1 and b.seek(b"ba") == 2 and b.lookup(b"ba", 5)[0] is False


def test_lookup_of_an_absent_key_ignores_a_straddle_past_its_window() -> None:
    """Block.lookup searches from the key's window (after sample s-1) to the end of the
    keys: an absent key that occurs straddling two later keys ("aba" + "abb" holds "aab")
    is still absent, and the keys around it are found."""
    keys = [b"aa" + bytes([c]) for c in range(ord("c"), ord("c") + 12)] + [b"aba", b"abb"]
    b = decode_block(encode_block(keys, [1] * len(keys), [b"%02d" % i for i in range(len(keys))]))
    assert b.kw == 3 and len(b.sample) == 2 and b"aab" in b.data
    assert b.lookup(b"aab", 5) == (False, None, 0) and b.first_index(b"aab") == -1
    for i, k in enumerate(keys):
        assert b.lookup(k, 5) == (True, b"%02d" % i, 1)


def test_sampled_lookups_in_a_long_fixed_width_block() -> None:
    """Hundreds of entries, multi-version keys straddling sample boundaries."""
    entries = [(b"k%04d" % (i // 3), 100 - i % 3, b"v%04d" % i) for i in range(700)]
    keys, versions, values = (list(c) for c in zip(*entries, strict=True))
    b = decode_block(encode_block(keys, versions, values))
    assert b.kw == 5 and len(b.sample) == (700 + STRIDE - 1) // STRIDE
    for i in range(0, 699, 3):  # the last key (index 699) has one version only
        k = keys[i]
        assert b.first_index(k) == i and b.seek(k) == i
        assert b.lookup(k, 99) == (True, values[i + 1], 99)
        assert b.lookup(k, 97) == (False, None, 0)
        assert b.seek(k + b"!") == i + 3
    assert b.seek(b"") == 0 and b.seek(b"z") == 700 and b.first_index(b"k9999") == -1


def test_block_fields_take_the_plain_slot_path() -> None:
    """No ``__getattr__`` on Block or its bases: defining one makes CPython route every
    field access of the class through a slower hook and stop specialising it (~11% of a
    pure-Python point read).  Only LazyBlock, the compiled core's cache-miss block, has
    one -- and parses its fields from ``data`` on first use."""
    assert all("__getattr__" not in vars(cls) for cls in Block.__mro__)
    payload = encode_block([b"a", b"b"], [2, 1], [b"x", None])
    lazy = LazyBlock.__new__(LazyBlock)
    lazy.data, lazy.ref, lazy.nbytes = payload, False, 0
    assert lazy.lookup(b"b", 5) == Block(payload).lookup(b"b", 5) == (True, None, 1)
    with pytest.raises(AttributeError, match="no_such_field"):
        lazy.no_such_field  # noqa: B018



# Offsets arrays whose order was damaged behind a valid checksum (a writer bug, a checksum
# collision): every section still ends where it should, so only the order can tell.
_VAR = encode_block([b"a", b"bb", b"ccc", b"dddd"], [4, 3, 2, 1], [b"w", b"", b"yyy", b"zz"])
_FIXED_KEYS = encode_block([b"key%d" % i for i in range(8)], [1] * 8,
                           [b"value-%d" % i + b"!" * i for i in range(8)])  # the repro's layout


@pytest.mark.parametrize("payload, section", [
    pytest.param(_VAR, "key", id="variable-keys"),
    pytest.param(_VAR, "value", id="variable-values"),
    pytest.param(_FIXED_KEYS, "value", id="fixed-keys-variable-values"),
])
@pytest.mark.parametrize("how", ["above the next", "past the heap", "below the previous"])
@pytest.mark.parametrize("i", [1, 2])
def test_offsets_out_of_order_raise_block_format_error(payload: bytes, section: str, how: str,
                                                       i: int) -> None:
    """A decreasing step anywhere in a key or value offsets array (the first still 0, the last
    still the heap's end) is refused when the block is decoded, not read as a garbled item."""
    with pytest.raises(BlockFormatError, match=f"{section} offsets are out of order"):
        Block(set_block_offset(payload, section, i, how))


def test_equal_offsets_are_empty_items_not_damage() -> None:
    """Offsets may repeat (an empty key, an empty value or a tombstone): non-decreasing is the rule."""
    payload = encode_block([b"", b"a", b"ab"], [3, 2, 1], [b"", None, b"xy"])
    assert Block(payload).values == [b"", None, b"xy"] and Block(payload).keys == [b"", b"a", b"ab"]


@pytest.mark.parametrize("kind", [2, 0x80, 0xFF])
def test_a_kind_byte_other_than_0_or_1_is_block_format_error(kind: int) -> None:
    """A kind byte is 1 (tombstone) or 0 (value): any other, behind a valid checksum, is
    refused when the block is decoded -- else a get read it as a tombstone and a scan as a
    value, two answers from one byte."""
    payload = encode_block([b"a", b"b", b"c"], [3, 2, 1], [b"x", None, b"z"])
    assert payload[12] & TOMBSTONES and payload[-3:] == b"\x00\x01\x00"
    damaged = payload[:-1] + bytes([kind])
    with pytest.raises(BlockFormatError, match="kind"):
        Block(damaged)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), fixed_keys=st.booleans(), fixed_values=st.booleans(), tombstones=st.booleans())
def test_pairs_and_range_pairs_against_model(data: st.DataObject, fixed_keys: bool, fixed_values: bool,
                                             tombstones: bool) -> None:
    """Block.pairs (any lo..hi) and Block.range_pairs (any bounds, None unbounded) give the
    model's pairs in every layout -- the fixed-key, heap-value one without tombstones
    decoded inline, the others through decode -- with several versions of a key."""
    klen = st.just(3) if fixed_keys else st.integers(0, 4)
    user_keys = sorted(data.draw(st.sets(klen.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                                         min_size=1, max_size=30)))
    value = (st.binary(min_size=5, max_size=5) if fixed_values else st.binary(max_size=9))
    if tombstones:
        value = st.one_of(st.none(), value)
    entries = [(k, v, data.draw(value)) for k in user_keys
               for v in sorted(data.draw(st.sets(st.integers(1, 30), min_size=1, max_size=2)), reverse=True)]
    keys, versions, values = (list(c) for c in zip(*entries, strict=True))
    block = decode_block(encode_block(keys, versions, values))
    pairs = [(k, val) for k, _, val in entries]
    for lo in range(len(entries) + 1):
        for hi in (lo, lo + 1, len(entries)):
            if hi <= len(entries):
                assert block.pairs(lo, hi) == pairs[lo:hi], (lo, hi)
    bounds = [None, b"", b"\xff" * 5, *user_keys, user_keys[0] + b"\x00", user_keys[-1] + b"\x00"]
    for start in bounds:
        for end in bounds:
            want = [p for p in pairs if (start is None or p[0] >= start) and (end is None or p[0] < end)]
            assert block.range_pairs(start, end) == want, (start, end)

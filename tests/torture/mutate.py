"""Mutations of real files for the decoder fuzzer (:mod:`tests.torture.fuzz`).

*Shallow* mutations change bytes the way a disk, a truncating copy or a stray
write would: bit flips, overwritten bytes and integers, truncations, extensions,
splices.  Checksums stay as they were, so the decoder's checksum should catch
them.  *Deep* mutations change a payload *behind* its checksum and then recompute
the checksum, so that the decoder itself meets malformed input: each on-disk
format has one (:func:`deep_table`, :func:`deep_manifest`, :func:`deep_current`,
:func:`deep_segment`).

Every mutator takes ``(data, rng)`` and returns ``(new data, description)``; the
description is what a failure report shows.

>>> import random
>>> out, what = shallow(b"0123456789" * 10, random.Random(1))
>>> isinstance(out, bytes) and isinstance(what, str)
True
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import crc32c

from banyanstore.log import format as logfmt
from banyanstore.lsm import manifest as mf
from banyanstore.sstable import format as tf
from banyanstore.sstable.meta import decode_index, encode_index

__all__ = ["shallow", "mutate_bytes", "deep_table", "deep_manifest", "deep_current", "deep_segment",
           "table_regions", "segment_fragments"]

INTERESTING_U32 = (0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                   0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_U64 = (*INTERESTING_U32, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


# -- byte-level mutations (shared by shallow and deep) ----------------------------------------
def mutate_bytes(data: bytes, rng: random.Random, *, allow_resize: bool = True,
                 donor: bytes | None = None) -> tuple[bytes, str]:
    """One random byte-level change of ``data``; ``donor`` supplies foreign bytes for splices."""
    buf = bytearray(data)
    n = len(buf)
    kinds = ["flip", "flip", "byte", "u32", "u64", "zero", "splice"]
    if allow_resize:
        kinds += ["truncate", "truncate", "extend", "insert", "delete"]
    if n == 0:
        kinds = ["extend"] if allow_resize else []
        if not kinds:
            return data, "empty payload left alone"
    kind = rng.choice(kinds)
    if kind == "flip":
        flips = rng.choice((1, 1, 1, 2, 4))
        spots = [rng.randrange(n * 8) for _ in range(flips)]
        for bit in spots:
            buf[bit // 8] ^= 1 << (bit % 8)
        return bytes(buf), f"flip bits {spots}"
    if kind == "byte":
        at = rng.randrange(n)
        buf[at] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        return bytes(buf), f"byte {at} = {buf[at]:#x}"
    if kind in ("u32", "u64"):
        size = 4 if kind == "u32" else 8
        if n < size:
            return mutate_bytes(data, rng, allow_resize=allow_resize, donor=donor)
        at = rng.randrange(n - size + 1)
        if rng.random() < 0.5:
            at -= at % size
        pool = INTERESTING_U32 if size == 4 else INTERESTING_U64
        val = rng.choice((*pool, n, n - 1, n + 1, rng.randrange(1 << (8 * size))))
        buf[at:at + size] = val.to_bytes(size, "little")
        return bytes(buf), f"{kind} at {at} = {val}"
    if kind == "zero":
        at = rng.randrange(n)
        length = min(n - at, rng.choice((1, 4, 16, 512, 4096)))
        buf[at:at + length] = bytes(length)
        return bytes(buf), f"zero {length} bytes at {at}"
    if kind == "splice":  # overwrite a range with bytes from elsewhere (or another file)
        src = donor if donor else data
        length = rng.randrange(1, min(n, len(src), 256) + 1)
        s, d = rng.randrange(len(src) - length + 1), rng.randrange(n - length + 1)
        buf[d:d + length] = src[s:s + length]
        return bytes(buf), f"splice {length} bytes from {'donor' if donor else 'self'}@{s} to {d}"
    if kind == "truncate":
        at = rng.choice((rng.randrange(n + 1), n - 1, n - rng.randrange(1, 64), rng.randrange(64)))
        at = max(0, min(n, at))
        return bytes(buf[:at]), f"truncate to {at} of {n}"
    if kind == "extend":
        length = rng.choice((1, 3, 7, 64, 4096))
        tail = rng.choice((bytes(length), rng.randbytes(length), bytes(data[-length:]) * 1))
        return bytes(buf) + tail, f"extend by {len(tail)}"
    if kind == "insert":
        at = rng.randrange(n + 1)
        piece = rng.randbytes(rng.choice((1, 4, 8, 100)))
        return bytes(buf[:at] + piece + buf[at:]), f"insert {len(piece)} at {at}"
    at = rng.randrange(n)
    length = min(n - at, rng.choice((1, 4, 8, 100)))
    return bytes(buf[:at] + buf[at + length:]), f"delete {length} at {at}"


def shallow(data: bytes, rng: random.Random, donor: bytes | None = None) -> tuple[bytes, str]:
    """A shallow mutation (checksums untouched); sometimes two at once."""
    out, what = mutate_bytes(data, rng, donor=donor)
    if rng.random() < 0.15:
        out, more = mutate_bytes(out, rng, donor=donor)
        what += "; " + more
    return out, what


# -- tables --------------------------------------------------------------------------------------
def table_regions(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """``{"data"|"filter"|"index"|"ranges"|"props": [(offset, body length), ...]}`` of a
    valid table (``ranges``: the range-tombstone block of format version 3)."""
    foot = tf.FOOTER.unpack_from(data, len(data) - tf.FOOTER_SIZE)
    index_off, index_len, filter_off, filter_len, props_off, props_len = foot[:6]
    index = decode_index(tf.unwrap_block(data[index_off:index_off + index_len + tf.TRAILER_SIZE],
                                         "fuzz", index_off))
    starts = index.block_starts
    regions = {"data": [(starts[i], starts[i + 1] - starts[i] - tf.TRAILER_SIZE)
                        for i in range(len(starts) - 1)],
               "index": [(index_off, index_len)], "props": [(props_off, props_len)], "filter": [],
               "ranges": []}
    if filter_len:
        regions["filter"] = [(filter_off, filter_len)]
    range_at = _range_props_at(data, props_off, props_len)
    if range_at is not None:
        props = tf.unwrap_block(data[props_off:props_off + props_len + tf.TRAILER_SIZE], "fuzz", props_off)
        regions["ranges"] = [RANGE_HANDLE.unpack_from(props, range_at)]
    return regions


RANGE_HANDLE = struct.Struct("<QI")  # the first fields of a format-3 table's range_props


def _range_props_at(data: bytes, props_off: int, props_len: int) -> int | None:
    """Where ``range_props`` start in a format-3 table's properties payload (None: no
    range block)."""
    if struct.unpack_from("<I", data, len(data) - 12)[0] < 3:
        return None
    props = tf.unwrap_block(data[props_off:props_off + props_len + tf.TRAILER_SIZE], "fuzz", props_off)
    fields = tf.PROPS.unpack_from(props, 0)
    return tf.PROPS.size + fields[-2] + fields[-1]  # past the smallest and largest keys


def _rewrap(stored: bytes, payload: bytes) -> bytes:
    """``payload`` stored with the compression type of ``stored`` and a fresh checksum."""
    ctype = stored[-tf.TRAILER_SIZE]
    if ctype == tf.COMPRESSION_NONE:
        body = payload
    elif ctype == tf.COMPRESSION_LZ4:
        import lz4.block
        body = lz4.block.compress(payload, store_size=True)
    else:
        import zstandard
        body = zstandard.ZstdCompressor(write_content_size=True).compress(payload)
    crc = tf.crc32c(bytes((ctype,)), tf.crc32c(body))
    return body + tf.TRAILER.pack(ctype, crc)


def deep_table(data: bytes, rng: random.Random, region: str) -> tuple[bytes, str]:
    """Mutate the payload of one block of ``region`` (``data``/``filter``/``index``/
    ``ranges``/``props``) or the ``footer`` fields, recompute every checksum and re-tile the file
    so that only the decoder of that structure can object."""
    if region == "footer":
        return _deep_footer(data, rng)
    regions = table_regions(data)
    blocks = regions[region]
    if not blocks:
        return data, f"no {region} block"
    no = rng.randrange(len(blocks))
    off, length = blocks[no]
    stored = data[off:off + length + tf.TRAILER_SIZE]
    payload = tf.unwrap_block(stored, "fuzz", off)
    if region == "data" or rng.random() < 0.7:
        new_payload, what = mutate_bytes(payload, rng)
    else:
        new_payload, what = _mutate_fields(payload, rng)
    return _retile(data, regions, region, no, _rewrap(stored, new_payload)), f"{region} block {no}: {what}"


def _mutate_fields(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite one aligned u32/u64 of a meta block with an interesting value."""
    size = rng.choice((4, 8))
    if len(payload) < size:
        return mutate_bytes(payload, rng)
    at = rng.randrange(0, len(payload) - size + 1, size) if len(payload) >= size else 0
    val = rng.choice(INTERESTING_U64 if size == 8 else INTERESTING_U32)
    buf = bytearray(payload)
    buf[at:at + size] = val.to_bytes(size, "little")
    return bytes(buf), f"field u{size * 8} at {at} = {val}"


def _retile(data: bytes, regions: dict[str, list[tuple[int, int]]], region: str, no: int,
            replacement: bytes) -> bytes:
    """The table with stored block ``no`` of ``region`` replaced, offsets and checksums redone."""
    def stored(off: int, length: int) -> bytes:
        return data[off:off + length + tf.TRAILER_SIZE]

    data_blocks = [stored(o, n) for o, n in regions["data"]]
    order = ("filter", "index", "ranges", "props")
    meta = {r: stored(*regions[r][0]) if regions[r] else b"" for r in order}
    if region == "data":
        data_blocks[no] = replacement
    else:
        meta[region] = replacement
    starts = [0]
    for b in data_blocks:
        starts.append(starts[-1] + len(b))
    if region == "data":  # re-encode the index with the new block starts
        index_stored = meta["index"]
        index = decode_index(tf.unwrap_block(index_stored, "fuzz", 0))
        meta["index"] = _rewrap(index_stored, encode_index(starts, index.last_versions, index.last_keys))
    pos = starts[-1]
    handles = {}
    for r in order:
        handles[r] = (pos, len(meta[r]) - tf.TRAILER_SIZE) if meta[r] else (0, 0)
        pos += len(meta[r])
    if meta["ranges"] and region != "props":  # the properties say where the range block is
        props_off, props_len = regions["props"][0]
        payload = bytearray(tf.unwrap_block(meta["props"], "fuzz", 0))
        at = _range_props_at(data, props_off, props_len)
        assert at is not None
        RANGE_HANDLE.pack_into(payload, at, *handles["ranges"])
        meta["props"] = _rewrap(meta["props"], bytes(payload))
    head = struct.pack("<QIQIQI", *handles["index"], *handles["filter"], *handles["props"])
    version = data[-12:-8]  # the table's own format version (1: no origin, 2: with, 3: ranges)
    footer = head + struct.pack("<I", tf.crc32c(version, tf.crc32c(head))) + version + tf.MAGIC
    return b"".join(data_blocks) + b"".join(meta[r] for r in order) + footer


def _deep_footer(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    foot = list(tf.FOOTER.unpack_from(data, len(data) - tf.FOOTER_SIZE))
    field = rng.randrange(6)
    pool = INTERESTING_U64 if field % 2 == 0 else INTERESTING_U32
    old = foot[field]
    foot[field] = rng.choice((*pool, old + 1, max(0, old - 1), old + tf.TRAILER_SIZE, len(data)))
    foot[field] &= (1 << 64) - 1 if field % 2 == 0 else (1 << 32) - 1
    head = struct.pack("<QIQIQI", *foot[:6])
    version = struct.pack("<I", foot[7])
    footer = head + struct.pack("<I", tf.crc32c(version, tf.crc32c(head))) + version + foot[8]
    return data[:-tf.FOOTER_SIZE] + footer, f"footer field {field}: {old} -> {foot[field]}"


# -- manifest and CURRENT ------------------------------------------------------------------------
def manifest_records(data: bytes) -> list[tuple[int, int]]:
    """``(offset, payload length)`` of each complete record of a valid manifest."""
    out, pos = [], mf.FILE_HEADER.size
    while pos + mf.RECORD_HEADER.size <= len(data):
        length, _crc = mf.RECORD_HEADER.unpack_from(data, pos)
        if pos + mf.RECORD_HEADER.size + length > len(data):
            break
        out.append((pos, length))
        pos += mf.RECORD_HEADER.size + length
    return out


def _json_mutation(edit: Any, rng: random.Random) -> tuple[Any, str]:
    """A structural change of a decoded edit: wrong types, missing or extra keys, odd numbers."""
    oddities: list[Any] = [None, True, -1, 0, 2 ** 64, -(2 ** 63), 1.5, float("inf"), "x", "", [], {},
                           [None], [[1]], {"a": 1}, "zz", [1, 2, 3], 10 ** 30]
    if not isinstance(edit, dict) or not edit:
        return rng.choice(oddities), "edit replaced"
    keys = list(edit)
    k = rng.choice(keys)
    choice = rng.randrange(6)
    edit = json.loads(json.dumps(edit))
    if choice == 0:
        del edit[k]
        return edit, f"drop key {k}"
    if choice == 1:
        edit[rng.choice(("bogus", "_keyspaces", "_ttls", "add_tables", "remove_tables"))] = \
            rng.choice(oddities)
        return edit, "add a key"
    # descend into the value and replace something inside it
    path = [k]
    node: Any = edit
    parent: Any = None
    while True:
        parent, node = node, node[path[-1]]
        if isinstance(node, dict) and node and rng.random() < 0.7:
            path.append(rng.choice(list(node)))
        elif isinstance(node, list) and node and rng.random() < 0.7:
            path.append(rng.randrange(len(node)))
        else:
            break
    parent[path[-1]] = rng.choice(oddities) if choice != 5 else _numeric_nudge(node, rng)
    return edit, f"set {path} = {parent[path[-1]]!r}"


def _numeric_nudge(node: Any, rng: random.Random) -> Any:
    if isinstance(node, bool) or not isinstance(node, int):
        return rng.choice((0, -1, 10 ** 20))
    return node + rng.choice((-1, 1, 1000, -node - 1, 2 ** 40))


def deep_manifest(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change one record's payload (bytes or JSON structure) and recompute its checksum;
    or rewrite the file header with a recomputed checksum."""
    records = manifest_records(data)
    if not records or rng.random() < 0.05:
        fmt = rng.choice((0, 2, 0xFFFFFFFF))
        head = mf.MAGIC + struct.pack("<I", fmt)
        return head + struct.pack("<I", crc32c.crc32c(head)) + data[mf.FILE_HEADER.size:], f"format {fmt}"
    no = rng.randrange(len(records))
    off, length = records[no]
    start = off + mf.RECORD_HEADER.size
    payload = data[start:start + length]
    if rng.random() < 0.6:
        try:
            new, what = _json_mutation(json.loads(payload), rng)
            new_payload = json.dumps(new, separators=(",", ":")).encode()
        except ValueError:
            new_payload, what = mutate_bytes(payload, rng)
    else:
        new_payload, what = mutate_bytes(payload, rng)
    rec = mf.RECORD_HEADER.pack(len(new_payload), crc32c.crc32c(new_payload)) + new_payload
    return data[:off] + rec + data[start + length:], f"record {no} of {len(records)}: {what}"


def deep_current(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """CURRENT naming something else, with a matching checksum."""
    name = rng.choice(("MANIFEST-000000", "MANIFEST-999999", "MANIFEST-", "MANIFEST-1/../../x",
                       "MANIFEST-00000a", "manifest-000001", "MANIFEST-" + "9" * 40, "MANIFEST-000001 ",
                       "../MANIFEST-000001", "MANIFEST-\x00"))
    line = f"{mf.CURRENT_PREFIX}{name} {crc32c.crc32c(name.encode()):08x}\n".encode()
    return line, f"CURRENT names {name!r}"


# -- Log segments ----------------------------------------------------------------------------------
def segment_fragments(data: bytes) -> list[tuple[int, int, int]]:
    """``(offset, payload length, type)`` of every fragment of a valid segment."""
    out = []
    pos = logfmt.HEADER_SIZE
    n = len(data)
    while pos + logfmt.FRAG_HEADER_SIZE <= n:
        left = logfmt.BLOCK_SIZE - pos % logfmt.BLOCK_SIZE
        if left < logfmt.FRAG_HEADER_SIZE:
            pos += left
            continue
        _crc, length, kind = logfmt.FRAG_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        out.append((pos, length, kind))
        pos += logfmt.FRAG_HEADER_SIZE + length
    return out


def deep_segment(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change a fragment's payload, type or length (or the segment header's fields)
    and recompute the checksum."""
    frags = segment_fragments(data)
    if not frags or rng.random() < 0.1:
        magic, version, flags, block_size, first_seq, _crc = logfmt.HEADER.unpack_from(data)
        fields = [version, flags, block_size, first_seq]
        i = rng.randrange(4)
        fields[i] = rng.choice((0, 1, 2, fields[i] + 1, max(0, fields[i] - 1), 0xFFFF))
        if i == 3:
            fields[3] = rng.choice((0, first_seq + 1, first_seq - 1, 1 << 63)) % (1 << 64)
        fields[0] &= 0xFFFF
        fields[1] &= 0xFFFF
        body = logfmt.HEADER.pack(magic, *fields, 0)[:logfmt.HEADER_SIZE - 4]
        head = body + struct.pack("<I", crc32c.crc32c(body))
        return head + data[logfmt.HEADER_SIZE:], f"header field {i} = {fields[i]}"
    no = rng.randrange(len(frags))
    off, length, kind = frags[no]
    start = off + logfmt.FRAG_HEADER_SIZE
    payload = data[start:start + length]
    choice = rng.random()
    if choice < 0.15:
        kind = rng.choice((0, 1, 2, 3, 4, 5, 255))
        what = f"type -> {kind}"
    elif choice < 0.3 and length > 0:  # shorter fragment: the rest stays behind as garbage
        cut = rng.randrange(length)
        payload = payload[:cut]
        what = f"length {length} -> {cut}"
    else:
        payload, what = mutate_bytes(payload, rng, allow_resize=False)
    header = logfmt.FRAG_HEADER.pack(logfmt.frame_crc(kind, payload), len(payload), kind)
    new = data[:off] + header + payload + data[start + len(payload):]
    return new, f"fragment {no} of {len(frags)} at {off}: {what}"


# -- backups ---------------------------------------------------------------------------------------
BACKUP_MAGIC = b"BNYBKUP\0"
TAIL_MAGIC = b"BNYWTAIL"


def backup_payload(data: bytes) -> Any:
    """The JSON object of a valid backup manifest."""
    return json.loads(data[20:])


def encode_backup_manifest(obj: Any, fmt: int = 1) -> bytes:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    head = BACKUP_MAGIC + struct.pack("<II", fmt, len(payload))
    return head + struct.pack("<I", crc32c.crc32c(head + payload)) + payload


def deep_backup_manifest(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A backup manifest whose JSON (or format, or raw payload) changed, with its length
    and checksum recomputed."""
    if rng.random() < 0.05:
        fmt = rng.choice((0, 2, 0xFFFFFFFF))
        return encode_backup_manifest(backup_payload(data), fmt), f"format {fmt}"
    if rng.random() < 0.7:
        new, what = _json_mutation(backup_payload(data), rng)
        return encode_backup_manifest(new), what
    payload, what = mutate_bytes(data[20:], rng)
    head = BACKUP_MAGIC + struct.pack("<II", 1, len(payload))
    return head + struct.pack("<I", crc32c.crc32c(head + payload)) + payload, what


def deep_wal_tail(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A WAL tail object with one record's payload (a WAL record) or length changed and
    its checksum recomputed, or a header with a recomputed checksum."""
    records, pos = [], 16
    while pos + 8 <= len(data):
        length, _crc = struct.unpack_from("<II", data, pos)
        records.append((pos, length))
        pos += 8 + length
    if not records or rng.random() < 0.05:
        fmt = rng.choice((0, 2))
        head = TAIL_MAGIC + struct.pack("<I", fmt)
        return head + struct.pack("<I", crc32c.crc32c(head)) + data[16:], f"tail format {fmt}"
    no = rng.randrange(len(records))
    off, length = records[no]
    if rng.random() < 0.15:  # a length no file holds: the reader must not allocate it
        bad = rng.choice((length + 1, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF))
        return data[:off] + struct.pack("<I", bad) + data[off + 4:], f"tail record {no}: length {bad}"
    payload, what = mutate_bytes(data[off + 8:off + 8 + length], rng)
    rec = struct.pack("<II", len(payload), crc32c.crc32c(payload)) + payload
    return data[:off] + rec + data[off + 8 + length:], f"tail record {no}: {what}"

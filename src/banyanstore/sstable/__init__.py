"""Immutable sorted string tables holding MVCC entries ``(user_key, version, value)``.

One table per memtable flush or compaction output.  Entries are ordered by user
key ascending (bytewise), then version descending; ``value`` None is a
tombstone.  See docs/format/sstable.md for the byte grammar and the measured
design choices.

>>> import tempfile, os
>>> from banyanstore.io.posix import PosixEnv
>>> from banyanstore.options import Options
>>> env = PosixEnv()
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "000001.sst")
...     with TableBuilder(env, path, Options(block_size=1024)) as b:
...         b.add_many([(b"a", 2, b"new"), (b"a", 1, b"old"), (b"b", 3, None)])
...         meta = b.finish()
...     with TableReader.open(env, path, BlockCache(1 << 20)) as t:
...         print(meta.entry_count, meta.key_count, t.get(b"a", 1), t.get(b"b", 9), t.get(b"c", 9))
...         print(list(t.scan(reverse=True)))
3 2 (True, b'old', 1) (True, None, 3) (False, None, 0)
[(b'b', 3, None), (b'a', 1, b'old'), (b'a', 2, b'new')]
"""

from __future__ import annotations

from .block import Block, BlockBuilder
from .bloom import BloomFilter, BloomFilterBuilder, key_hash
from .builder import TableBuilder
from .cache import BlockCache
from .format import FORMAT_VERSION, MAX_VERSION
from .meta import TableMeta, TableOrigin
from .reader import MISS, TableReader, read_blocks

__all__ = [
    "Block", "BlockBuilder", "BlockCache", "BloomFilter", "BloomFilterBuilder", "FORMAT_VERSION",
    "MAX_VERSION", "MISS", "TableBuilder", "TableMeta", "TableOrigin", "TableReader", "key_hash",
    "read_blocks",
]

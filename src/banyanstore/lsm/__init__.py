"""The LSM Store: memtables, WAL, manifest, views, flush, compaction."""

/* Table building in C (tablebuild.c): banyanstore._native.TableBuild (a flush's data
 * blocks, filter and index lists from a flush buffer) and encode_block, added to the module
 * by PyInit__native; and the pieces the compaction merge (mergebuild.c) builds with. */
#ifndef BANYANSTORE_NATIVE_TABLEBUILD_H
#define BANYANSTORE_NATIVE_TABLEBUILD_H

#include <Python.h>
#include <stdint.h>

/* One entry as a data block holds it (value NULL: a tombstone, vlen 0). */
typedef struct {
    const uint8_t *key, *value;
    uint64_t version;
    uint32_t klen, vlen;
} EntryRef;

/* Adds the type to ``module``; -1 with an exception set on failure. */
int bs_tablebuild_init(PyObject *module);

/* Loads the filter hash (xxhash); -1 with an exception set.  REQUIRES: the GIL. */
int bs_hash_init(void);

/* The filter hash of key p[0:n): straight through xxh3 when ``direct`` and the symbol was
 * found, else through xxhash.xxh3_64_intdigest (-1 with an exception set).
 * REQUIRES: bs_hash_init() succeeded; the GIL. */
int bs_key_hash(const uint8_t *p, size_t n, int direct, uint64_t *out);

/* sstable/bloom.py's build_filter of ``count`` key hashes, ``k`` probes, with its mask table
 * (2**14 u64); a new bytes object, NULL with an exception set. */
PyObject *bs_build_filter(const uint64_t *hashes, uint64_t count, unsigned bits_per_key,
                          unsigned k, const uint64_t *masks);

/* sstable/block.py's encode_block of e[0:count) (count >= 1) as a new bytes object; the fill
 * with the GIL released when ``release`` (e then points into memory no other thread
 * changes); NULL with ValueError when a heap would not fit its u32 offsets. */
PyObject *bs_encode_entries(const EntryRef *e, Py_ssize_t count, int release);

#endif

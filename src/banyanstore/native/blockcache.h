/* The block cache's bookkeeping in C (blockcache.c): banyanstore._native.ClockCache, added
 * to the module by PyInit__native (_native.c); sstable/cache.py's NativeBlockCache is it. */
#ifndef BANYANSTORE_NATIVE_BLOCKCACHE_H
#define BANYANSTORE_NATIVE_BLOCKCACHE_H

#include <Python.h>
#include <stdint.h>

/* Adds ClockCache to ``module``; -1 with an exception set on failure. */
int bs_blockcache_init(PyObject *module);

/* The Block type, its LazyBlock subclass (the same slots) and the offsets of their ``ref`` and
 * ``nbytes`` slots (bind() in _native.c): blocks of those types are read and marked without
 * attribute lookups. */
void bs_blockcache_bind(PyTypeObject *block_type, PyTypeObject *lazy_type, Py_ssize_t ref_off,
                        Py_ssize_t nbytes_off);

/* Whether ``put`` is the bound ``put`` method of a ClockCache; if so *cache is that cache
 * (borrowed). */
int bs_blockcache_of_put(PyObject *put, PyObject **cache);

/* ClockCache.put(key, block, slots, no) without the Python call: 1 cached, 0 not (larger
 * than the capacity), -1 with an exception set. */
int bs_blockcache_put(PyObject *cache, uint64_t key, PyObject *block, PyObject *slots, uint32_t no);

/* ClockCache.admit(key, scanned) without the Python call: 1 admit, 0 not (a first miss, or
 * past the scan's share), -1 with an exception set. */
int bs_blockcache_admit(PyObject *cache, uint64_t key, uint64_t scanned);

#endif

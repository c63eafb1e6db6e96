/* The memtable in C (memtable.c): banyanstore._native.Memtable, SortedKeys and the flush
 * buffer's decoder, added to the module by PyInit__native (_native.c). */
#ifndef BANYANSTORE_NATIVE_MEMTABLE_H
#define BANYANSTORE_NATIVE_MEMTABLE_H

#include <Python.h>

/* Adds the types and functions to ``module``; -1 with an exception set on failure. */
int bs_memtable_init(PyObject *module);

/* For the store's write path (putpath.c): whether ``type`` is Memtable or a subclass whose
 * ``add`` is Memtable's own (1; 0 not; -1 with an exception set), and a Memtable's
 * ``add(key, version, value)`` (args[0..2]) without a Python call: a new reference to the
 * bytes charged, or NULL with an exception set. */
int bs_memtable_type_adds(PyObject *type);
PyObject *bs_memtable_add(PyObject *mem, PyObject *const *args, Py_ssize_t nargs);

#endif

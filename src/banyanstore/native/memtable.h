/* The memtable in C (memtable.c): banyanstore._native.Memtable, SortedKeys and the flush
 * buffer's decoder, added to the module by PyInit__native (_native.c). */
#ifndef BANYANSTORE_NATIVE_MEMTABLE_H
#define BANYANSTORE_NATIVE_MEMTABLE_H

#include <Python.h>

/* Adds the types and functions to ``module``; -1 with an exception set on failure. */
int bs_memtable_init(PyObject *module);

#endif

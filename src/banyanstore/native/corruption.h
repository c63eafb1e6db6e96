/* Damage found in C: banyanstore.errors.CorruptionError, as the read path raises it. */
#ifndef BANYANSTORE_NATIVE_CORRUPTION_H
#define BANYANSTORE_NATIVE_CORRUPTION_H

#include <Python.h>

/* Sets CorruptionError(message, path=path, offset=offset) (offset < 0: None; path NULL: None;
 * a ValueError before banyanstore.accel.bind() handed over the class); returns NULL.
 * REQUIRES: the GIL. */
PyObject *bs_raise_corruption(PyObject *path, long long offset, const char *fmt, ...);

#endif

/* banyanstore._native.PutPath (putpath.c): the store's write of one entry in one call,
 * added to the module by PyInit__native (_native.c). */
#ifndef BANYANSTORE_NATIVE_PUTPATH_H
#define BANYANSTORE_NATIVE_PUTPATH_H

#include <Python.h>

/* Adds PutPath to ``module``; -1 with an exception set on failure. */
int bs_putpath_init(PyObject *module);

#endif

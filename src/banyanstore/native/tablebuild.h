/* A flush's data blocks, filter and index lists built in C from a flush buffer
 * (tablebuild.c): banyanstore._native.TableBuild, added to the module by PyInit__native. */
#ifndef BANYANSTORE_NATIVE_TABLEBUILD_H
#define BANYANSTORE_NATIVE_TABLEBUILD_H

#include <Python.h>

/* Adds the type to ``module``; -1 with an exception set on failure. */
int bs_tablebuild_init(PyObject *module);

#endif

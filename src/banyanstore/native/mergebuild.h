/* A compaction merge's output data blocks built in C (mergebuild.c):
 * banyanstore._native.MergeBuild, added to the module by PyInit__native. */
#ifndef BANYANSTORE_NATIVE_MERGEBUILD_H
#define BANYANSTORE_NATIVE_MERGEBUILD_H

#include <Python.h>

/* Adds the type to ``module``; -1 with an exception set on failure. */
int bs_mergebuild_init(PyObject *module);

#endif

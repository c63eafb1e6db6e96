/* banyanstore._native: the Log framing (logframe.c), registered by PyInit__native. */
#ifndef BANYANSTORE_LOGFRAME_H
#define BANYANSTORE_LOGFRAME_H

#include <Python.h>

/* Adds FrameWriter, crc32c and CRC32C_IMPL to the module; -1 with an exception set. */
int bs_logframe_init(PyObject *module);

#endif

/* banyanstore._native: the Log framing (logframe.c), registered by PyInit__native. */
#ifndef BANYANSTORE_LOGFRAME_H
#define BANYANSTORE_LOGFRAME_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Adds FrameWriter, crc32c and CRC32C_IMPL to the module; -1 with an exception set. */
int bs_logframe_init(PyObject *module);

/* crc32c(p[0:n], crc) as the crc32c package computes it (crc: that of the bytes before);
 * the SSE4.2 path where the CPU has it.  Valid once bs_logframe_init ran. */
uint32_t bs_crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* The store's write path (putpath.c) calls a LogTail's append_put without a Python call:
 * ``bs_logtail_of(bound)`` is the LogTail behind a bound ``append_put`` (a
 * ``Log.put_appender()``), or NULL (no exception) when it is not one;
 * ``bs_logtail_append_put(tail, args, 5)`` is ``append_put(*args)``: a new reference to
 * the seq, to None (appended nothing: use Log.append) or NULL with an exception set. */
PyObject *bs_logtail_of(PyObject *bound);
/* ``lock.acquire`` and ``lock.release`` into *acquire and *release (replacing what they
 * held); -1 with an exception set, nothing replaced. */
int bs_lock_methods(PyObject *lock, PyObject **acquire, PyObject **release);
PyObject *bs_logtail_append_put(PyObject *tail, PyObject *const *args, Py_ssize_t nargs);

#endif

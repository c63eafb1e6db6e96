/* banyanstore._native.PutPath: the store's put and delete of one key in one C call.
 *
 * The compiled half of lsm/writer.py's Writer.write_one, for the common case: it does the
 * same steps in the same order under the same lock -- the writer's lock taken, the WAL
 * record appended through the Log's LogTail (logframe.c), the entry added to the
 * keyspace's active memtable (memtable.c), the writer's memtable charge raised, the
 * commit time sampled through the writer's own ``_sample_time``, the tree's version
 * published -- without the three Python frames, the ``with`` statement and the
 * attribute traffic of the Python path, which cost about three times the C work (counted
 * in instructions: docs/performance.md).
 *
 * Whatever is not the common case returns None having changed nothing, and the caller
 * (Keyspace.put / Keyspace.delete) takes the Python path, which handles it (and raises
 * what is wrong with the arguments, so the errors are the Python path's): ``sync`` given,
 * a value of None given to put,
 * a key or value that is not exactly bytes or is too large, a dropped keyspace, writes
 * refused (closed, read-only, failed WAL), a memtable charge at the writer's next check (a
 * switch when the memtable is full, a step of the memory budget before), a memtable that
 * is not the compiled one, and a record the LogTail cannot store where the log stands.
 *
 * The state stays the Python objects' own: the writer's ``_refused``, ``_mem_bytes``,
 * ``_mem_check`` and ``_next_sample_ms``, the tree's ``version``, the keyspace's ``id``,
 * ``dropped`` and ``view.mem`` are read and written in place, never copied, so the two paths can
 * alternate freely (tests/lsm/test_put_path.py compares the files both write).  They are
 * ``__slots__`` of those classes, read and written at the offsets their slot descriptors
 * give (looked up once, by __init__, which refuses anything that is not a plain object
 * slot) -- what the descriptors do, without the attribute lookup each time, which cost
 * more than the WAL append.  A keyspace or view of another type takes the Python path.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>

#include "logframe.h"
#include "memtable.h"
#include "putpath.h"

typedef struct {
    PyObject_HEAD
    PyObject *writer;   /* lsm.writer.Writer */
    PyObject *tree;     /* lsm.tree.Tree */
    PyObject *acquire;  /* the writer's lock */
    PyObject *release;
    PyObject *sample;   /* writer._sample_time(version, ms) */
    PyObject *clock;    /* a time.time-like callable, or NULL: the system's wall clock */
    PyObject *tail;     /* the WAL's LogTail once attached, else NULL */
    PyTypeObject *memtable_type;  /* the store's memtables: Memtable with its own add */
    PyTypeObject *keyspace_type;  /* lsm.view.KeyspaceState */
    PyTypeObject *view_type;      /* lsm.view.View */
    Py_ssize_t max_key, max_value;
    unsigned long long writes;  /* entries written by put() */
    /* offsets of the slots (see the top of the file) */
    Py_ssize_t at_refused, at_mem_bytes, at_mem_check, at_next_sample_ms, at_version, at_id,
        at_view, at_mem, at_dropped;
} PutPath;

static PyObject *s_one, *s_thousand;

/* The offset of ``type``'s slot ``name`` (a plain object slot); -1 with an exception set. */
static Py_ssize_t slot_offset(PyTypeObject *type, const char *name) {
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL)
        return -1;
    PyObject *d = _PyType_Lookup(type, key);  /* borrowed */
    Py_DECREF(key);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX
            || (((PyMemberDescrObject *)d)->d_member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%.100s.%.100s is not a writable __slots__ attribute",
                     type->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

/* Slot ``at`` of ``o`` (borrowed; NULL while unset, no exception). */
static inline PyObject *slot_get(PyObject *o, Py_ssize_t at) {
    return *(PyObject **)((char *)o + at);
}

/* Set slot ``at`` of ``o`` to ``v`` (a new reference is taken). */
static inline void slot_set(PyObject *o, Py_ssize_t at, PyObject *v) {
    PyObject **p = (PyObject **)((char *)o + at), *old = *p;
    *p = Py_NewRef(v);
    Py_XDECREF(old);
}

static int pp_traverse(PutPath *self, visitproc visit, void *arg) {
    Py_VISIT(self->writer);
    Py_VISIT(self->tree);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->sample);
    Py_VISIT(self->clock);
    Py_VISIT(self->tail);
    Py_VISIT(self->memtable_type);
    Py_VISIT(self->keyspace_type);
    Py_VISIT(self->view_type);
    return 0;
}

static int pp_clear(PutPath *self) {
    Py_CLEAR(self->writer);
    Py_CLEAR(self->tree);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->sample);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->tail);
    Py_CLEAR(self->memtable_type);
    Py_CLEAR(self->keyspace_type);
    Py_CLEAR(self->view_type);
    return 0;
}

static void pp_dealloc(PutPath *self) {
    PyObject_GC_UnTrack(self);
    pp_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pp_init(PutPath *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"writer", "tree", "lock", "sample", "clock", "max_key", "max_value",
                             "memtable_type", "keyspace_type", "view_type", NULL};
    PyObject *writer, *tree, *lock, *sample, *clock, *memtable_type;
    PyTypeObject *keyspace_type, *view_type;
    Py_ssize_t max_key, max_value;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOnnOO!O!", kwlist, &writer, &tree, &lock,
                                     &sample, &clock, &max_key, &max_value, &memtable_type,
                                     &PyType_Type, &keyspace_type, &PyType_Type, &view_type))
        return -1;
    struct { Py_ssize_t *at; PyTypeObject *type; const char *name; } slots[] = {
        {&self->at_refused, Py_TYPE(writer), "_refused"},
        {&self->at_mem_bytes, Py_TYPE(writer), "_mem_bytes"},
        {&self->at_mem_check, Py_TYPE(writer), "_mem_check"},
        {&self->at_next_sample_ms, Py_TYPE(writer), "_next_sample_ms"},
        {&self->at_version, Py_TYPE(tree), "version"},
        {&self->at_id, keyspace_type, "id"}, {&self->at_view, keyspace_type, "view"},
        {&self->at_dropped, keyspace_type, "dropped"}, {&self->at_mem, view_type, "mem"}};
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        if ((*slots[i].at = slot_offset(slots[i].type, slots[i].name)) < 0)
            return -1;
    }
    int adds = bs_memtable_type_adds(memtable_type);
    if (adds <= 0) {
        if (adds == 0)
            PyErr_SetString(PyExc_TypeError, "memtable_type must be a Memtable type whose add is "
                            "Memtable.add");
        return -1;
    }
    if (max_key < 0 || max_value < 0) {
        PyErr_SetString(PyExc_ValueError, "max_key and max_value must be >= 0");
        return -1;
    }
    if (!PyCallable_Check(sample) || (clock != Py_None && !PyCallable_Check(clock))) {
        PyErr_SetString(PyExc_TypeError, "sample must be callable and clock callable or None");
        return -1;
    }
    if (bs_lock_methods(lock, &self->acquire, &self->release) < 0)
        return -1;
    Py_INCREF(writer);
    Py_XSETREF(self->writer, writer);
    Py_INCREF(tree);
    Py_XSETREF(self->tree, tree);
    Py_INCREF(sample);
    Py_XSETREF(self->sample, sample);
    if (clock == Py_None) {
        Py_CLEAR(self->clock);
    } else {
        Py_INCREF(clock);
        Py_XSETREF(self->clock, clock);
    }
    Py_CLEAR(self->tail);
    Py_INCREF(memtable_type);
    Py_XSETREF(self->memtable_type, (PyTypeObject *)memtable_type);
    Py_INCREF(keyspace_type);
    Py_XSETREF(self->keyspace_type, keyspace_type);
    Py_INCREF(view_type);
    Py_XSETREF(self->view_type, view_type);
    self->max_key = max_key;
    self->max_value = max_value;
    return 0;
}

/* attach(append_put): take writes through this WAL (a Log.put_appender()); None detaches. */
static PyObject *pp_attach(PutPath *self, PyObject *appender) {
    if (appender == Py_None) {
        Py_CLEAR(self->tail);
        Py_RETURN_NONE;
    }
    PyObject *tail = bs_logtail_of(appender);
    if (tail == NULL) {
        PyErr_SetString(PyExc_TypeError, "attach() takes a Log.put_appender() or None");
        return NULL;
    }
    Py_INCREF(tail);
    Py_XSETREF(self->tail, tail);
    Py_RETURN_NONE;
}

/* int(clock() * 1000), the Python path's commit time; with the system clock, computed as
 * time.time() computes its float (CPython's _PyTime_AsSecondsDouble), so the result is
 * the same function of the clock's nanoseconds. */
static PyObject *commit_ms(PutPath *self) {
    if (self->clock != NULL) {
        PyObject *t = PyObject_CallNoArgs(self->clock);
        if (t == NULL)
            return NULL;
        PyObject *x = PyNumber_Multiply(t, s_thousand);
        Py_DECREF(t);
        if (x == NULL)
            return NULL;
        PyObject *ms = PyNumber_Long(x);
        Py_DECREF(x);
        return ms;
    }
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    double secs = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
    return PyLong_FromDouble(secs * 1000.0);
}

/* The entry, once the writer's lock is held: a new reference to the version, to None
 * (nothing changed: take the Python path) or NULL with an exception set. */
static PyObject *put_locked(PutPath *self, PyObject *ks, PyObject *key, PyObject *value) {
    PyObject *writer = self->writer, *tree = self->tree;
    PyObject *refused = slot_get(writer, self->at_refused);
    PyObject *mem_bytes = slot_get(writer, self->at_mem_bytes);
    PyObject *mem_check = slot_get(writer, self->at_mem_check);
    PyObject *current = slot_get(tree, self->at_version);
    PyObject *next_sample = slot_get(writer, self->at_next_sample_ms);
    PyObject *view = slot_get(ks, self->at_view), *ks_id = slot_get(ks, self->at_id);
    if (refused != Py_False || mem_bytes == NULL || !PyLong_CheckExact(mem_bytes)
            || mem_check == NULL || !PyLong_CheckExact(mem_check)
            || current == NULL || next_sample == NULL || ks_id == NULL || view == NULL
            || !Py_IS_TYPE(view, self->view_type))
        Py_RETURN_NONE;  /* refused, or not a state this path knows: the Python path */
    PyObject *mem = slot_get(view, self->at_mem);
    if (mem == NULL || !Py_IS_TYPE(mem, self->memtable_type))
        Py_RETURN_NONE;
    long long charge = PyLong_AsLongLong(mem_bytes);
    if (charge == -1 && PyErr_Occurred())
        return NULL;
    long long check = PyLong_AsLongLong(mem_check);
    if (check == -1 && PyErr_Occurred())
        return NULL;
    if (charge >= check)
        Py_RETURN_NONE;  /* the Python path takes the step (or switches the memtables) */
    if (self->tail == NULL)
        Py_RETURN_NONE;  /* detached (closing) */
    unsigned long long last = PyLong_AsUnsignedLongLong(current);
    if (last == (unsigned long long)-1) {  /* versions exhausted (or not a u64): the Python
                                            * path refuses the write, saying so */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* held across calls that could run Python code (an injected clock, the Log's lock),
     * where another thread may detach the tail or replace a slot */
    PyObject *tail = Py_NewRef(self->tail);
    Py_INCREF(mem);
    Py_INCREF(ks_id);
    PyObject *result = NULL, *version = NULL, *ms = NULL, *seq = NULL, *charged = NULL;
    version = PyNumber_Add(current, s_one);
    if (version == NULL || (ms = commit_ms(self)) == NULL)
        goto done;
    PyObject *wal_args[5] = {version, ms, ks_id, key, value};
    seq = bs_logtail_append_put(tail, wal_args, 5);
    if (seq == NULL)
        goto done;
    if (seq == Py_None) {  /* nothing appended: Log.append on the Python path */
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* From here on the record is in the WAL: an error propagates, as on the Python path. */
    PyObject *mem_args[3] = {key, version, value};
    charged = bs_memtable_add(mem, mem_args, 3);
    if (charged == NULL)
        goto done;
    long long add = PyLong_AsLongLong(charged);
    if (add == -1 && PyErr_Occurred())
        goto done;
    PyObject *total = PyLong_FromLongLong(charge + add);
    if (total == NULL)
        goto done;
    slot_set(writer, self->at_mem_bytes, total);
    Py_DECREF(total);
    /* The commit time is sampled before the version is published, as on the Python path:
     * a TTL read seeing the version without its sample would take it for expired. */
    next_sample = slot_get(writer, self->at_next_sample_ms);
    int due = next_sample == NULL ? 1 : PyObject_RichCompareBool(ms, next_sample, Py_GE);
    PyObject *sampled = NULL;
    if (due > 0)
        sampled = PyObject_CallFunctionObjArgs(self->sample, version, ms, NULL);
    /* published even when that raised: the record is in the WAL and the memtable */
    slot_set(tree, self->at_version, version);
    if (due < 0 || (due > 0 && sampled == NULL))
        goto done;
    Py_XDECREF(sampled);
    result = Py_NewRef(version);
    self->writes++;
done:
    Py_DECREF(tail);
    Py_DECREF(mem);
    Py_DECREF(ks_id);
    Py_XDECREF(version);
    Py_XDECREF(ms);
    Py_XDECREF(seq);
    Py_XDECREF(charged);
    return result;
}

/* The write of ``value`` (None: a tombstone) under ``key`` in ``ks``. */
static PyObject *write_entry(PutPath *self, PyObject *ks, PyObject *key, PyObject *value,
                             PyObject *sync) {
    if (sync != Py_None || self->tail == NULL || self->writer == NULL
            || !Py_IS_TYPE(ks, self->keyspace_type))
        Py_RETURN_NONE;
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) > self->max_key)
        Py_RETURN_NONE;
    if (value != Py_None && (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) > self->max_value))
        Py_RETURN_NONE;
    if (slot_get(ks, self->at_dropped) != Py_None)
        Py_RETURN_NONE;  /* the Python path raises KeyspaceNotFoundError */
    Py_INCREF(ks);  /* the caller's references are enough, but the lock may run Python code */
    PyObject *r = PyObject_CallNoArgs(self->acquire);
    if (r == NULL) {
        Py_DECREF(ks);
        return NULL;
    }
    Py_DECREF(r);
    PyObject *result = put_locked(self, ks, key, value);
    Py_DECREF(ks);
    /* release even after an error, keeping that error */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    r = PyObject_CallNoArgs(self->release);
    if (r == NULL) {
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        Py_XDECREF(result);
        return NULL;
    }
    Py_DECREF(r);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    return result;
}

/* put(ks, key, value, sync) -> version | None */
static PyObject *pp_put(PutPath *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(ks, key, value, sync)");
        return NULL;
    }
    if (args[2] == Py_None)
        Py_RETURN_NONE;  /* not a value: the Python path raises TypeError */
    return write_entry(self, args[0], args[1], args[2], args[3]);
}

/* delete(ks, key, sync) -> version | None */
static PyObject *pp_delete(PutPath *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "delete(ks, key, sync)");
        return NULL;
    }
    return write_entry(self, args[0], args[1], Py_None, args[2]);
}

static PyMethodDef pp_methods[] = {
    {"put", (PyCFunction)(void (*)(void))pp_put, METH_FASTCALL,
     "put(ks, key, value, sync) -> version | None: Writer.write_one's common case in one "
     "call; None: nothing was done, take the Python path"},
    {"delete", (PyCFunction)(void (*)(void))pp_delete, METH_FASTCALL,
     "delete(ks, key, sync) -> version | None: put's tombstone"},
    {"attach", (PyCFunction)pp_attach, METH_O,
     "attach(append_put | None): the WAL's Log.put_appender() to append through"},
    {NULL}
};

static PyMemberDef pp_members[] = {
    {"writes", T_ULONGLONG, offsetof(PutPath, writes), READONLY, "entries written by put()"},
    {NULL}
};

static PyTypeObject PutPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.PutPath",
    .tp_basicsize = sizeof(PutPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PutPath(writer, tree, lock, sample, clock, max_key, max_value, "
              "memtable_type, keyspace_type, view_type): "
              "the store's write of one entry in one call (lsm/writer.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pp_init,
    .tp_dealloc = (destructor)pp_dealloc,
    .tp_traverse = (traverseproc)pp_traverse,
    .tp_clear = (inquiry)pp_clear,
    .tp_methods = pp_methods,
    .tp_members = pp_members,
};

int bs_putpath_init(PyObject *module) {
    s_one = PyLong_FromLong(1);
    s_thousand = PyLong_FromLong(1000);
    if (s_one == NULL || s_thousand == NULL || PyType_Ready(&PutPathType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "PutPath", (PyObject *)&PutPathType);
}

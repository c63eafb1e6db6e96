/* banyanstore._native: the compiled core of the read path (optional).
 *
 * The pure-Python engine is complete on its own; this module replaces the inner
 * loops where Python's per-call and per-entry cost dominates, behind the same
 * module interfaces (sstable/reader.py, lsm/view.py).  It is chosen by
 * banyanstore.accel when importable, never when BANYANSTORE_PURE_PYTHON=1.
 *
 * What is here, and why whole operations: a profile showed the cost of a table
 * lookup is the Python frames and attribute hops around small steps, not the
 * steps themselves, so C gets the whole lookup across a keyspace's tables --
 * fences, bloom probe, index search, block search, entry decode -- in one call.
 *
 * Byte grammars read here (all integers little-endian; the authoritative text is
 * docs/format/sstable.md):
 *
 *   block  := count:u32 key_width:u32 value_width:u32 flags:u32
 *             versions:(count x u64)
 *             keys    (flags & 1 ? count x key_width : offsets:(count+1) x u32 heap)
 *             values  (flags & 2 ? count x value_width : offsets:(count+1) x u32 heap)
 *             kinds   (flags & 4 ? count x u8, 1 = tombstone)
 *   index  := count:u32 reserved:u32 block_starts:(count+1) x u64
 *             last_versions:(count x u64) key_offsets:(count+1) x u32 key_heap
 *   filter := k:u32 table_bits:u32 word_count:u64 words:(word_count x u64)
 *
 * Memory safety: every length and offset read from a payload is checked against
 * the payload's size before it is used; a payload that does not add up raises
 * CorruptionError (naming the table file and block offset where known), never
 * reads out of bounds.  The index and filter are validated whole when a
 * TableCore is built; a data block whole when it is decoded (bs_block_parse:
 * the checks of Block.__init__, offsets in order included, so both engines
 * refuse the same payloads), its header and sections again on every use (a few
 * arithmetic operations), and each variable-width offset as it is read.
 *
 * Concurrency: everything runs with the GIL held except the helpers marked
 * "GIL released".  A TableCore is immutable after construction apart from its
 * statistics counters; the block slots list belongs to the Python reader and
 * the block cache (see sstable/cache.py) and is re-read after any call back
 * into Python.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <stdarg.h>
#include <errno.h>
#include <unistd.h>

#include "byteorder.h"
#include "logframe.h"
#include "walrecord.h"
#include "memtable.h"
#include "blockcache.h"
#include "lz4block.h"
#include "tablebuild.h"
#include "putpath.h"
#include "blockview.h"
#include "corruption.h"
#include "mergebuild.h"

/* ---------------------------------------------------------------------------------------- */
/* keys (little-endian loads and stores: native/byteorder.h)                                  */

/* bytewise comparison of two byte strings, shorter-is-smaller on a common prefix: <0, 0
 * or >0.  Eight bytes at a time, inline: keys are short (16 bytes in the benchmarks), and a
 * scan compares keys a few times per entry, where a libc call per comparison was a twentieth
 * of a range query's time. */
static inline int keycmp(const uint8_t *a, Py_ssize_t alen, const uint8_t *b, Py_ssize_t blen) {
    Py_ssize_t n = alen < blen ? alen : blen, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
#endif
            return x < y ? -1 : 1;
        }
    }
    for (; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return (alen > blen) - (alen < blen);
}

/* a and b hold the same bytes (keycmp(...) == 0, cheaper) */
static inline int keyeq(const uint8_t *a, Py_ssize_t alen, const uint8_t *b, Py_ssize_t blen) {
    if (alen != blen)
        return 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= alen; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return 0;
    }
    for (; i < alen; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* The first 8 bytes of a key as a big-endian integer (zero-padded): ordered like the keys
 * themselves, so a binary search can compare these and read the keys only on a tie. */
static inline uint64_t key_prefix(const uint8_t *k, Py_ssize_t n) {
    uint8_t b[8] = {0};
    memcpy(b, k, (size_t)(n < 8 ? n : 8));
    uint64_t v;
    memcpy(&v, b, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* module state: objects handed over once by banyanstore.accel.bind()                        */

static PyTypeObject *block_type = NULL;   /* banyanstore.sstable.block.Block */
static PyTypeObject *lazy_block_type = NULL;  /* its LazyBlock: what a cache miss here builds */
static Py_ssize_t block_data_off = -1;    /* offsets of its __slots__ members */
static Py_ssize_t block_ref_off = -1;
static PyObject *corruption_error = NULL; /* banyanstore.errors.CorruptionError */
static PyObject *hash_fn = NULL;          /* xxhash.xxh3_64_intdigest: the filter hash */
static PyObject *miss_tuple = NULL;       /* sstable.block.MISS: (False, None, 0) */
static PyTypeObject *posix_file_type = NULL; /* io.pread.PosixRandomAccessFile: read with pread(2) here */
static PyObject *str_fd = NULL;
static PyObject *str_path = NULL, *str_offset = NULL, *zero = NULL;

/* The offset of the Block object's ``nbytes`` slot (see sstable/block.py) and the block
 * module's constants build_block() charges with; found by bind(). */
static Py_ssize_t block_nbytes_off = -1;
static long block_stride = 0, block_overhead = 0, key_overhead = 0;  /* 0: build_block unavailable */

/* CorruptionError(message, path=path, offset=offset); returns NULL (corruption.h) */
PyObject *bs_raise_corruption(PyObject *path, long long offset, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    PyOS_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (corruption_error == NULL) {
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    }
    PyObject *args = Py_BuildValue("(s)", msg);
    PyObject *kw = PyDict_New();
    if (args && kw) {
        PyObject *off = offset >= 0 ? PyLong_FromLongLong(offset) : (Py_INCREF(Py_None), Py_None);
        if (off && PyDict_SetItem(kw, str_path, path ? path : Py_None) == 0
                && PyDict_SetItem(kw, str_offset, off) == 0) {
            PyObject *exc = PyObject_Call(corruption_error, args, kw);
            if (exc) {
                PyErr_SetObject(corruption_error, exc);
                Py_DECREF(exc);
            }
        }
        Py_XDECREF(off);
    }
    Py_XDECREF(args);
    Py_XDECREF(kw);
    return NULL;
}

static Py_ssize_t member_offset(PyTypeObject *tp, const char *name) {
    PyObject *d = PyDict_GetItemString(tp->tp_dict, name);  /* borrowed */
    if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", tp->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, name);
        return -1;
    }
    return m->offset;
}

/* STRIDE, BLOCK_OVERHEAD and KEY_OVERHEAD of the Block type's module */
static int block_constants(PyTypeObject *tp, long out[3]) {
    static const char *const names[3] = {"STRIDE", "BLOCK_OVERHEAD", "KEY_OVERHEAD"};
    PyObject *modname = PyObject_GetAttrString((PyObject *)tp, "__module__");
    PyObject *mod = modname ? PyImport_Import(modname) : NULL;
    Py_XDECREF(modname);
    if (mod == NULL)
        return -1;
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyObject_GetAttrString(mod, names[i]);
        out[i] = v ? PyLong_AsLong(v) : -1;
        Py_XDECREF(v);
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(mod);
            return -1;
        }
        if (out[i] < 1 || out[i] > 1 << 20) {
            Py_DECREF(mod);
            PyErr_Format(PyExc_ValueError, "block module constant %s is out of range", names[i]);
            return -1;
        }
    }
    Py_DECREF(mod);
    return 0;
}

/* Whether `o` is a Block (either class: their slots are the same). */
static inline int is_block(PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    return t == block_type || t == lazy_block_type;
}

static PyObject *native_bind(PyObject *self, PyObject *args) {
    PyObject *btype, *cerr, *hfn, *miss, *ptype = Py_None, *ltype = NULL;
    if (!PyArg_ParseTuple(args, "O!OOO!|OO!:bind", &PyType_Type, &btype, &cerr, &hfn, &PyTuple_Type, &miss,
                          &ptype, &PyType_Type, &ltype))
        return NULL;
    if (ltype == NULL)
        ltype = btype;
    /* the lazy class must be the Block class or a subclass adding no slots: the core
       writes its slots at the Block's offsets */
    if (!PyType_IsSubtype((PyTypeObject *)ltype, (PyTypeObject *)btype)
        || ((PyTypeObject *)ltype)->tp_basicsize != ((PyTypeObject *)btype)->tp_basicsize
        || ((PyTypeObject *)ltype)->tp_dictoffset != ((PyTypeObject *)btype)->tp_dictoffset) {
        PyErr_SetString(PyExc_TypeError, "bind: lazy_block_type must subclass block_type without adding slots");
        return NULL;
    }
    if (ptype != Py_None && !PyType_Check(ptype)) {
        PyErr_SetString(PyExc_TypeError, "posix_file_type must be a type or None");
        return NULL;
    }
    Py_ssize_t doff = member_offset((PyTypeObject *)btype, "data");
    if (doff < 0)
        return NULL;
    Py_ssize_t roff = member_offset((PyTypeObject *)btype, "ref");
    if (roff < 0)
        return NULL;
    if (!PyCallable_Check(hfn) || !PyExceptionClass_Check(cerr)) {
        PyErr_SetString(PyExc_TypeError, "bind(block_type, CorruptionError, hash_fn, MISS, posix_file_type=None, lazy_block_type=None)");
        return NULL;
    }
    Py_ssize_t noff = member_offset((PyTypeObject *)btype, "nbytes");
    if (noff < 0)
        return NULL;
    long consts[3];
    if (block_constants((PyTypeObject *)btype, consts) < 0)
        return NULL;
    block_nbytes_off = noff;
    block_stride = consts[0];
    block_overhead = consts[1];
    key_overhead = consts[2];
    Py_XSETREF(posix_file_type, ptype == Py_None ? NULL : (PyTypeObject *)Py_NewRef(ptype));
    Py_XSETREF(block_type, (PyTypeObject *)Py_NewRef(btype));
    Py_XSETREF(lazy_block_type, (PyTypeObject *)Py_NewRef(ltype));
    Py_XSETREF(corruption_error, Py_NewRef(cerr));
    Py_XSETREF(hash_fn, Py_NewRef(hfn));
    Py_XSETREF(miss_tuple, Py_NewRef(miss));
    block_data_off = doff;
    block_ref_off = roff;
    bs_blockcache_bind(block_type, lazy_block_type, roff, noff);
    Py_RETURN_NONE;
}

static int check_bound(void) {
    if (block_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "banyanstore._native.bind() was not called");
        return -1;
    }
    return 0;
}

/* the filter hash of a key, through the same function the Python engine uses */
static int key_hash(PyObject *key, uint64_t *out) {
    PyObject *h = PyObject_CallOneArg(hash_fn, key);
    if (h == NULL)
        return -1;
    *out = PyLong_AsUnsignedLongLong(h);
    Py_DECREF(h);
    if (*out == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* data blocks                                                                              */

/* First index whose key is >= key (may be count); -1 on a bad offset. */
static int64_t block_lower_bound(const BlockView *b, const uint8_t *key, Py_ssize_t klen) {
    uint32_t lo = 0, hi = b->count;
    while (lo < hi) {
        uint32_t mid = lo + ((hi - lo) >> 1);
        const uint8_t *k;
        Py_ssize_t n;
        if (block_key(b, mid, &k, &n) < 0)
            return -1;
        if (keycmp(k, n, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The entry index answering (key, version) in this block: the newest entry of key
 * with a version <= version.  Returns the index, -1 if none, -2 on a bad offset. */
static int64_t block_find(const BlockView *b, const uint8_t *key, Py_ssize_t klen, uint64_t version) {
    int64_t lb = block_lower_bound(b, key, klen);
    if (lb < 0)
        return -2;
    for (uint32_t i = (uint32_t)lb; i < b->count; i++) {
        const uint8_t *k;
        Py_ssize_t n;
        if (block_key(b, i, &k, &n) < 0)
            return -2;
        if (n != klen || (klen && memcmp(k, key, (size_t)klen) != 0))
            return -1;
        if (block_version(b, i) <= version)
            return i;
    }
    return -1;
}

/* (True, value | None, version) of entry i; NULL with an exception on a bad offset. */
static PyObject *entry_result(const BlockView *b, uint32_t i, PyObject *path, long long where) {
    const uint8_t *v;
    Py_ssize_t vlen;
    if (block_value(b, i, &v, &vlen) < 0)
        return bs_raise_corruption(path, where, "value offsets of entry %u are out of bounds", i);
    PyObject *value;
    if (v == NULL)
        value = Py_NewRef(Py_None);
    else if ((value = PyBytes_FromStringAndSize((const char *)v, vlen)) == NULL)
        return NULL;
    PyObject *ver = PyLong_FromUnsignedLongLong(block_version(b, i));
    if (ver == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *t = PyTuple_New(3);
    if (t == NULL) {
        Py_DECREF(value);
        Py_DECREF(ver);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(Py_True));
    PyTuple_SET_ITEM(t, 1, value);
    PyTuple_SET_ITEM(t, 2, ver);
    return t;
}

static PyObject *miss(void) {
    return Py_NewRef(miss_tuple);
}

/* the payload of a Block object (a borrowed reference), NULL with TypeError if not one */
static PyObject *block_data(PyObject *block) {
    if (!is_block(block)) {
        PyErr_Format(PyExc_TypeError, "expected a Block, got %.100s", Py_TYPE(block)->tp_name);
        return NULL;
    }
    PyObject *data = *(PyObject **)((char *)block + block_data_off);
    if (data == NULL || !PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "Block.data is not bytes");
        return NULL;
    }
    return data;
}

static void block_mark_referenced(PyObject *block) {
    PyObject **slot = (PyObject **)((char *)block + block_ref_off);
    PyObject *old = *slot;
    *slot = Py_NewRef(Py_True);
    Py_XDECREF(old);
}

/* lookup in one block payload: (found, value, version) or MISS.  `of_block`: the payload
 * of a Block, whose offsets were checked when it was decoded (else: a raw payload, checked
 * whole here). */
static PyObject *lookup_in_payload(PyObject *data, PyObject *key, uint64_t version,
                                   PyObject *path, long long where, int of_block) {
    BlockView b;
    const char *why;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(data);
    uint64_t size = (uint64_t)PyBytes_GET_SIZE(data);
    if ((of_block ? bs_block_view(p, size, &b, &why) : bs_block_parse(p, size, &b, &why)) < 0)
        return bs_raise_corruption(path, where, "data block does not parse: %s", why);
    int64_t i = block_find(&b, (const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), version);
    if (i == -2)
        return bs_raise_corruption(path, where, "data block key offsets are out of bounds");
    if (i < 0)
        return miss();
    return entry_result(&b, (uint32_t)i, path, where);
}

static int parse_version(PyObject *ver, uint64_t *version);

static int parse_key_version(PyObject *key, PyObject *ver, uint64_t *version) {
    if (!PyBytes_CheckExact(key)) {
        PyErr_Format(PyExc_TypeError, "key must be bytes, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    return parse_version(ver, version);
}

/* A version argument: 0, or 1 when it is negative (nothing is visible); -1 on error. */
static int parse_version(PyObject *ver, uint64_t *version) {
    if (!PyLong_Check(ver)) {
        PyErr_Format(PyExc_TypeError, "version must be an int, not %.100s", Py_TYPE(ver)->tp_name);
        return -1;
    }
    *version = PyLong_AsUnsignedLongLong(ver);
    if (*version == (uint64_t)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        /* negative: nothing is visible; above u64: everything is */
        PyErr_Clear();
        int neg = PyObject_RichCompareBool(ver, zero, Py_LT);
        if (neg < 0)
            return -1;
        if (neg) {
            *version = 0;
            return 1;  /* below every entry (versions start at 1) */
        }
        *version = UINT64_MAX;
    }
    return 0;
}

/* block_lookup(block, key, version) -> (found, value, version) | MISS */
static PyObject *native_block_lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "block_lookup(block, key, version)");
        return NULL;
    }
    if (check_bound() < 0)
        return NULL;
    PyObject *data = block_data(args[0]);
    if (data == NULL)
        return NULL;
    uint64_t version;
    int r = parse_key_version(args[1], args[2], &version);
    if (r < 0)
        return NULL;
    if (r > 0)
        return miss();
    Py_INCREF(data);
    PyObject *out = lookup_in_payload(data, args[1], version, Py_None, -1, 1);
    Py_DECREF(data);
    return out;
}

/* block_lookup_payload(data, key, version): the same on a raw payload (tests, fuzzing) */
static PyObject *native_block_lookup_payload(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "block_lookup_payload(data: bytes, key, version)");
        return NULL;
    }
    if (check_bound() < 0)
        return NULL;
    uint64_t version;
    int r = parse_key_version(args[1], args[2], &version);
    if (r < 0)
        return NULL;
    if (r > 0)
        return miss();
    return lookup_in_payload(args[0], args[1], version, Py_None, -1, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Counters: statistics shared by every table of one block cache                            */

typedef struct {
    PyObject_HEAD
    unsigned long long hits, misses;
} Counters;

static PyMemberDef counters_members[] = {
    {"hits", T_ULONGLONG, offsetof(Counters, hits), 0, "block cache hits counted in C"},
    {"misses", T_ULONGLONG, offsetof(Counters, misses), 0, "blocks read and decoded by C (cache misses)"},
    {NULL}
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.Counters",
    .tp_basicsize = sizeof(Counters),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counters(): hit and miss counts a BlockCache adds to its own",
    .tp_new = PyType_GenericNew,
    .tp_members = counters_members,
};

/* ---------------------------------------------------------------------------------------- */
/* TableCore: the lookup state of one open table                                            */

typedef struct {
    PyObject_HEAD
    PyObject *smallest, *largest;  /* bytes: the key fences */
    uint64_t min_version;
    PyObject *index;               /* bytes: the index payload (kept alive) */
    uint32_t nblocks;
    const uint8_t *starts, *last_versions, *key_offs, *key_heap;
    PyObject *filter;              /* bytes or NULL: the filter payload */
    const uint8_t *words;
    uint64_t nwords;
    unsigned shift;
    PyObject *mask_obj;            /* bytes: the 2^table_bits u64 masks, shared by tables */
    const uint8_t *masks;          /* its contents, or NULL: no filter */
    uint64_t *prefixes;            /* per block: 8 bytes of its last key after the common prefix,
                                    * big-endian (PyMem) */
    Py_ssize_t common;             /* bytes every key of the table starts with (smallest[:common]) */
    PyObject *slots;               /* list: block number -> Block | None (the reader's) */
    PyObject *loader;              /* callable(block_no) -> Block: a cache miss (without `read`) */
    /* The miss path in C (all NULL: every miss goes through `loader`): */
    PyObject *file;                /* the table's RandomAccessFile (for Env.read_batch requests) */
    PyObject *read;                /* its read(offset, length) -> bytes */
    PyObject *accept;              /* callable(block_no, stored, fill) -> Block: the reader's decoder,
                                    * for what the fast path does not take (errors, zstd) */
    PyObject *cache_put;           /* callable(cache_key, block, slots, block_no): BlockCache.put */
    PyObject *cache;               /* the ClockCache cache_put belongs to, or NULL: called directly */
    uint64_t cache_base;           /* the cache key of block 0 */
    int verify;                    /* check data block checksums */
    PyObject *path;                /* str: for CorruptionError */
    Counters *counters;
    unsigned long long bloom_useful, bloom_passed_misses;
} TableCore;

static int core_traverse(TableCore *c, visitproc visit, void *arg) {
    Py_VISIT(c->slots);
    Py_VISIT(c->loader);
    Py_VISIT(c->file);
    Py_VISIT(c->read);
    Py_VISIT(c->accept);
    Py_VISIT(c->cache_put);
    Py_VISIT(c->cache);
    Py_VISIT(c->counters);
    return 0;
}

static int core_clear(TableCore *c) {
    Py_CLEAR(c->slots);
    Py_CLEAR(c->loader);
    Py_CLEAR(c->file);
    Py_CLEAR(c->read);
    Py_CLEAR(c->accept);
    Py_CLEAR(c->cache_put);
    Py_CLEAR(c->cache);
    Py_CLEAR(c->counters);
    return 0;
}

static void core_dealloc(TableCore *c) {
    PyObject_GC_UnTrack(c);
    core_clear(c);
    Py_XDECREF(c->smallest);
    Py_XDECREF(c->largest);
    Py_XDECREF(c->index);
    Py_XDECREF(c->filter);
    Py_XDECREF(c->path);
    Py_XDECREF(c->mask_obj);
    PyMem_Free(c->prefixes);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* last key i of the index (validated at construction) */
static inline void index_key(const TableCore *c, uint32_t i, const uint8_t **k, Py_ssize_t *n) {
    uint32_t a = bs_load_le32(c->key_offs + 4 * (uint64_t)i), e = bs_load_le32(c->key_offs + 4 * (uint64_t)i + 4);
    *k = c->key_heap + a;
    *n = (Py_ssize_t)(e - a);
}

static int core_setup(TableCore *c, PyObject *smallest, PyObject *largest, unsigned long long min_version,
                      PyObject *index, PyObject *filter, PyObject *masks, PyObject *slots, PyObject *loader,
                      PyObject *path, PyObject *counters, PyObject *read, PyObject *accept,
                      PyObject *cache_put, long long index_at, long long filter_at);

static int core_init(TableCore *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"smallest", "largest", "min_version", "index", "filter", "masks",
                             "slots", "loader", "path", "counters", "file", "accept", "cache_put",
                             "cache_base", "verify", "index_offset", "filter_offset", NULL};
    PyObject *smallest, *largest, *index, *filter, *masks, *slots, *loader, *path, *counters;
    PyObject *file = Py_None, *accept = Py_None, *cache_put = Py_None;
    unsigned long long min_version, cache_base = 0;
    int verify = 1;
    long long index_at = -1, filter_at = -1;  /* where the blocks are stored: for CorruptionError */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!KO!OOO!OUO!|$OOOKpLL:TableCore", kwlist,
                                     &PyBytes_Type, &smallest, &PyBytes_Type, &largest, &min_version,
                                     &PyBytes_Type, &index, &filter, &masks, &PyList_Type, &slots,
                                     &loader, &path, &CountersType, &counters, &file, &accept,
                                     &cache_put, &cache_base, &verify, &index_at, &filter_at))
        return -1;
    if ((file == Py_None) != (accept == Py_None) || (file == Py_None) != (cache_put == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "file, accept and cache_put go together");
        return -1;
    }
    if (c->index != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TableCore is already initialised");
        return -1;
    }
    PyObject *read = NULL;
    if (file != Py_None && (read = PyObject_GetAttrString(file, "read")) == NULL)
        return -1;
    int r = core_setup(c, smallest, largest, min_version, index, filter, masks, slots, loader, path,
                       counters, read, accept, cache_put, index_at, filter_at);
    Py_XDECREF(read);
    if (r < 0)
        return -1;
    if (file != Py_None) {
        c->file = Py_NewRef(file);
    }
    c->cache_base = cache_base;
    c->verify = verify;
    return 0;
}

static int core_setup(TableCore *c, PyObject *smallest, PyObject *largest, unsigned long long min_version,
                      PyObject *index, PyObject *filter, PyObject *masks, PyObject *slots, PyObject *loader,
                      PyObject *path, PyObject *counters, PyObject *read, PyObject *accept,
                      PyObject *cache_put, long long index_at, long long filter_at) {
    /* the index: validated whole, so lookups need no further checks on it (the checks of
     * meta.py's decode_index, in its order; the reader runs that one first) */
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(index);
    uint64_t size = (uint64_t)PyBytes_GET_SIZE(index);
    if (size < 8)
        return bs_raise_corruption(path, index_at, "index block shorter than its header"), -1;
    uint64_t n = bs_load_le32(p);
    uint64_t heap = 8 + 8 * (n + 1) + 8 * n + 4 * (n + 1);
    if (n < 1 || heap > size)
        return bs_raise_corruption(path, index_at, "index block cannot hold %llu entries", (unsigned long long)n), -1;
    const uint8_t *starts = p + 8, *lv = starts + 8 * (n + 1), *offs = lv + 8 * n;
    if (bs_load_le32(offs) != 0 || heap + bs_load_le32(offs + 4 * n) != size)
        return bs_raise_corruption(path, index_at, "index key heap bounds are invalid"), -1;
    for (uint64_t i = 0; i < n; i++)
        if (bs_load_le32(offs + 4 * i) > bs_load_le32(offs + 4 * i + 4))
            return bs_raise_corruption(path, index_at, "index key offsets are not increasing"), -1;
    for (uint64_t i = 0; i < n; i++)
        if (bs_load_le64(starts + 8 * i) >= bs_load_le64(starts + 8 * i + 8))
            return bs_raise_corruption(path, index_at, "index block offsets are not increasing"), -1;
    if (PyList_GET_SIZE(slots) != (Py_ssize_t)n) {
        PyErr_SetString(PyExc_ValueError, "slots must have one entry per data block");
        return -1;
    }
    /* the filter (optional) */
    const uint8_t *mask_table = NULL;
    const uint8_t *words = NULL;
    uint64_t nwords = 1;
    unsigned shift = 0;
    if (filter != Py_None) {
        if (!PyBytes_CheckExact(filter) || !PyBytes_CheckExact(masks)) {
            PyErr_SetString(PyExc_TypeError, "filter and masks must be bytes");
            return -1;
        }
        const uint8_t *f = (const uint8_t *)PyBytes_AS_STRING(filter);
        uint64_t fsize = (uint64_t)PyBytes_GET_SIZE(filter);
        if (fsize < 16)
            return bs_raise_corruption(path, filter_at, "filter block shorter than its header"), -1;
        uint32_t table_bits = bs_load_le32(f + 4);
        nwords = bs_load_le64(f + 8);
        if (nwords < 1 || nwords > (fsize - 16) / 8 || fsize != 16 + 8 * nwords)
            return bs_raise_corruption(path, filter_at, "filter block size does not match its header"), -1;
        if (table_bits < 1 || table_bits > 20
                || (uint64_t)PyBytes_GET_SIZE(masks) != (8ULL << table_bits)) {
            PyErr_SetString(PyExc_ValueError, "masks must hold 2**table_bits u64 masks");
            return -1;
        }
        mask_table = (const uint8_t *)PyBytes_AS_STRING(masks);
        words = f + 16;
        shift = 64 - table_bits;
        c->filter = Py_NewRef(filter);
    }
    if (!PyCallable_Check(loader) || (read != NULL && (!PyCallable_Check(read) || !PyCallable_Check(accept)
                                                        || !PyCallable_Check(cache_put)))) {
        Py_CLEAR(c->filter);
        PyErr_SetString(PyExc_TypeError, "loader, file.read, accept and cache_put must be callable");
        return -1;
    }
    c->smallest = Py_NewRef(smallest);
    c->largest = Py_NewRef(largest);
    c->min_version = min_version;
    c->index = Py_NewRef(index);
    c->nblocks = (uint32_t)n;
    c->starts = starts;
    c->last_versions = lv;
    c->key_offs = offs;
    c->key_heap = p + heap;
    c->prefixes = PyMem_Malloc(8 * n);
    if (c->prefixes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Every key between the fences starts with their common prefix, so the 8 bytes after it
     * are what tells keys apart (keys like "%016d" share their first 10 bytes: 8 bytes from
     * the start would tie everywhere and send every step of the search to the key heap). */
    Py_ssize_t sl = PyBytes_GET_SIZE(smallest), ll = PyBytes_GET_SIZE(largest), cp = 0;
    const char *sp = PyBytes_AS_STRING(smallest), *lp = PyBytes_AS_STRING(largest);
    while (cp < sl && cp < ll && sp[cp] == lp[cp])
        cp++;
    c->common = cp;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *k;
        Py_ssize_t kn;
        index_key(c, (uint32_t)i, &k, &kn);
        /* an index key outside the fences (a damaged table) may not share the prefix: then its
         * entry is still a valid u64, only the search's answer is as wrong as the index */
        c->prefixes[i] = kn >= cp ? key_prefix(k + cp, kn - cp) : 0;
    }
    c->words = words;
    c->nwords = nwords;
    c->shift = shift;
    c->masks = mask_table;
    c->mask_obj = mask_table != NULL ? Py_NewRef(masks) : NULL;
    c->slots = Py_NewRef(slots);
    c->loader = Py_NewRef(loader);
    if (read != NULL) {
        c->read = Py_NewRef(read);
        c->accept = Py_NewRef(accept);
        c->cache_put = Py_NewRef(cache_put);
        PyObject *cache;
        if (bs_blockcache_of_put(cache_put, &cache))
            c->cache = Py_NewRef(cache);
    }
    c->path = Py_NewRef(path);
    c->counters = (Counters *)Py_NewRef(counters);
    return 0;
}

static inline int core_ready(TableCore *c) {
    if (c->index == NULL || c->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TableCore is not initialised (or was cleared)");
        return -1;
    }
    return 0;
}

static inline int in_fences(const TableCore *c, const uint8_t *key, Py_ssize_t klen) {
    return keycmp(key, klen, (const uint8_t *)PyBytes_AS_STRING(c->smallest), PyBytes_GET_SIZE(c->smallest)) >= 0
        && keycmp(key, klen, (const uint8_t *)PyBytes_AS_STRING(c->largest), PyBytes_GET_SIZE(c->largest)) <= 0;
}

static inline int bloom_may_contain(const TableCore *c, uint64_t h) {
    uint64_t m = bs_load_le64(c->masks + 8 * (h >> c->shift));
    return (bs_load_le64(c->words + 8 * (h % c->nwords)) & m) == m;
}

/* The block that answers (key, version) by the index, or -1 if none can.
 * REQUIRES: the fences passed. */
/* The first block whose last key is >= key: a binary search over the compact prefix
 * array (a few cache lines), reading a key from the index payload only on a tie. */
static uint32_t core_index_lower_bound(const TableCore *c, const uint8_t *key, Py_ssize_t klen) {
    Py_ssize_t cp = c->common;
    if (cp) {  /* a key outside the common prefix's range is before or after every block */
        int d = memcmp(key, PyBytes_AS_STRING(c->smallest), (size_t)(klen < cp ? klen : cp));
        if (d < 0 || (d == 0 && klen < cp))
            return 0;
        if (d > 0)
            return c->nblocks;
    }
    uint64_t kp = key_prefix(key + cp, klen - cp);
    uint32_t lo = 0, hi = c->nblocks;
    while (lo < hi) {
        uint32_t mid = lo + ((hi - lo) >> 1);
        uint64_t p = c->prefixes[mid];
        int less;
        if (p != kp) {
            less = p < kp;
        } else {
            const uint8_t *k;
            Py_ssize_t n;
            index_key(c, mid, &k, &n);
            less = keycmp(k, n, key, klen) < 0;
        }
        if (less)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int64_t core_index_search(const TableCore *c, const uint8_t *key, Py_ssize_t klen, uint64_t version) {
    uint32_t i = core_index_lower_bound(c, key, klen);
    /* step over blocks whose last entry is this key at a version newer than asked */
    while (i < c->nblocks) {
        const uint8_t *k;
        Py_ssize_t n;
        index_key(c, i, &k, &n);
        if (n != klen || (klen && memcmp(k, key, (size_t)klen) != 0))
            return i;
        if (bs_load_le64(c->last_versions + 8 * (uint64_t)i) <= version)
            return i;
        i++;
    }
    return -1;
}

/* -- the miss path: a data block read, verified, decompressed and decoded ------------------
 *
 * stored := body ctype:u8 crc:u32   (crc = crc32c(body || ctype); body lz4: a u32 size prefix
 *                                    and an lz4 block -- sstable/format.py is authoritative)
 *
 * One C function per miss instead of six Python frames (reader.load_block -> _decode ->
 * unwrap_block -> decode_block -> Block -> cache.put): the Python frames cost more than the
 * pread, the checksum and the decompression together.  The checksum and the decompression
 * go through the same crc32c and lz4 functions as the Python engine (both release the GIL
 * for the buffer work).  Only the expected case is handled here -- a stored block of the
 * right size, a good checksum, no or lz4 compression, a payload that parses: anything else
 * (zstd, damage) goes to the reader's own decoder, which decodes it or raises the
 * CorruptionError naming the file and offset, so both engines fail with the same error. */

enum { TRAILER_SIZE = 5, COMPRESSION_NONE = 0, COMPRESSION_LZ4 = 1 };

/* Blocks at least this large are decompressed with the GIL released (readers and
 * background work overlap); below it the release costs more than it frees. */
enum { LZ4_NOGIL_BYTES = 16384 };

/* The payload of an lz4 body (u32le uncompressed size, then the LZ4 block), decoded
 * straight into the bytes object returned; NULL with no exception when it does not
 * decode (the reader's lz4 call then says how), NULL with one on a memory error. */
static PyObject *lz4_payload(const uint8_t *body, Py_ssize_t n) {
    if (n < 4)
        return NULL;
    uint32_t size = bs_load_le32(body);
    /* an LZ4 block expands at most ~255 times; a larger claim is damage */
    if (size == 0 || size > INT32_MAX || (uint64_t)size > 255 * (uint64_t)(n - 4) + 16)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL)
        return NULL;
    int r;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    if (size >= LZ4_NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        r = bs_lz4_block_decode(body + 4, (size_t)(n - 4), dst, size);
        Py_END_ALLOW_THREADS
    } else {
        r = bs_lz4_block_decode(body + 4, (size_t)(n - 4), dst, size);
    }
    if (r < 0)
        Py_CLEAR(out);
    return out;
}

/* lz4_decompress(body) -> bytes | None: lz4.block.decompress(body) as a table read decodes
 * it, None where it does not decode here (tests and the fuzzer compare the two) */
static PyObject *native_lz4_decompress(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = lz4_payload((const uint8_t *)view.buf, view.len);
    PyBuffer_Release(&view);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* The payload of a stored block (`n` bytes at `p`), or NULL with no exception set when the
 * fast path does not take it (NULL with an exception: an error that is not about the
 * block, e.g. memory).  The checksum and the lz4 decode are the module's own (logframe.c,
 * lz4block.c); they give the crc32c and lz4 packages' results, which the reader's decoder
 * uses for anything this path leaves to it. */
static PyObject *fast_payload(TableCore *c, const uint8_t *p, Py_ssize_t n, uint64_t want) {
    if ((uint64_t)n != want || n < TRAILER_SIZE)
        return NULL;
    uint8_t ctype = p[n - TRAILER_SIZE];
    if (ctype != COMPRESSION_NONE && ctype != COMPRESSION_LZ4)
        return NULL;
    if (c->verify && bs_crc32c(0, p, (size_t)(n - 4)) != bs_load_le32(p + n - 4))
        return NULL;
    Py_ssize_t body = n - TRAILER_SIZE;
    if (ctype == COMPRESSION_NONE)
        return PyBytes_FromStringAndSize((const char *)p, body);
    return lz4_payload(p, body);
}

/* The Block of a payload with fixed-width keys that block_parse accepted, with the slots a
 * cache needs -- ``data``, ``ref`` (clear) and ``nbytes``, the charge Block.__init__ computes
 * (the same sample of every STRIDE-th key counted) -- and nothing else: Block fills its
 * other fields from ``data`` on their first use by Python code (Block.__getattr__), which
 * the compiled core's reads never need.  So a cache miss builds one object instead of
 * sixteen, and an eviction frees one.  NULL with no exception set: not built here
 * (variable-width keys, or bind() did not find the constants); the caller uses Block(). */
static PyObject *build_block(PyObject *payload, const BlockView *b) {
    if (!(b->flags & FIXED_KEYS) || block_stride == 0 || block_data_off < 0 || block_nbytes_off < 0)
        return NULL;
    uint64_t n = b->count, kw = b->kw, stride = (uint64_t)block_stride;
    uint64_t samples = (n + stride - 1) / stride;
    long long nbytes = block_overhead + (long long)b->size + key_overhead * (long long)samples
                       + (long long)(samples * kw);
    PyObject *charge = PyLong_FromLongLong(nbytes);
    if (charge == NULL)
        return NULL;
    PyTypeObject *tp = lazy_block_type;
    PyObject *block = tp->tp_alloc(tp, 0);
    if (block == NULL) {
        Py_DECREF(charge);
        return NULL;
    }
    *(PyObject **)((char *)block + block_data_off) = Py_NewRef(payload);
    *(PyObject **)((char *)block + block_ref_off) = Py_NewRef(Py_False);
    *(PyObject **)((char *)block + block_nbytes_off) = charge;
    /* Not tracked by the cycle collector: its fields (the payload and what Python code
     * parses from it) are bytes, ints and lists of them, never a path back to the block;
     * tracked, the tens of thousands of blocks a block cache holds were traversed by every
     * collection that reached them (about 3% of a ts-query's time went to the collector). */
    PyObject_GC_UnTrack(block);
    return block;
}

/* block_from_payload(data) -> Block: what a cache miss builds from a payload (tests) */
static PyObject *native_block_from_payload(PyObject *self, PyObject *data) {
    if (check_bound() < 0)
        return NULL;
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "block_from_payload(data: bytes)");
        return NULL;
    }
    BlockView bv;
    const char *why;
    PyObject *block = NULL;
    if (bs_block_parse((const uint8_t *)PyBytes_AS_STRING(data), (uint64_t)PyBytes_GET_SIZE(data), &bv, &why) == 0)
        block = build_block(data, &bv);
    if (block == NULL && !PyErr_Occurred())
        block = PyObject_CallOneArg((PyObject *)block_type, data);  /* raises what Python raises */
    return block;
}

/* Cache `block`, block `no` of the table (a new reference the caller keeps). */
static int core_cache(TableCore *c, uint32_t no, PyObject *block) {
    if (c->cache != NULL)  /* the C cache: no Python call */
        return bs_blockcache_put(c->cache, c->cache_base + no, block, c->slots, no);
    PyObject *put = Py_NewRef(c->cache_put), *slots = Py_NewRef(c->slots);
    PyObject *r = PyObject_CallFunction(put, "KOOI", (unsigned long long)(c->cache_base + no), block,
                                        slots, no);
    Py_DECREF(put);
    Py_DECREF(slots);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Block `no` from the `n` bytes at `p` read for it (`stored`: the same bytes as an object,
 * or NULL: made here only if the reader's decoder is needed): a new reference, cached if
 * `fill`.  The caller has counted the miss.  Decoding from a pointer lets a miss read into
 * a buffer of its own (no bytes object to allocate and free per read) and a read-ahead span
 * be decoded in place (no copy per block). */
static PyObject *core_decode_at(TableCore *c, uint32_t no, const uint8_t *p, Py_ssize_t n, PyObject *stored,
                                int fill) {
    uint64_t off = bs_load_le64(c->starts + 8 * (uint64_t)no), want = bs_load_le64(c->starts + 8 * (uint64_t)no + 8) - off;
    PyObject *block = NULL;
    PyObject *payload = fast_payload(c, p, n, want);
    if (payload != NULL) {
        BlockView bv;
        const char *why;
        if (bs_block_parse((const uint8_t *)PyBytes_AS_STRING(payload), (uint64_t)PyBytes_GET_SIZE(payload),
                        &bv, &why) == 0) {
            block = build_block(payload, &bv);
            if (block == NULL && !PyErr_Occurred())
                block = PyObject_CallOneArg((PyObject *)block_type, payload);
        }
        Py_DECREF(payload);
    }
    if (block == NULL) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;
        PyErr_Clear();  /* a payload that does not parse: the reader's decoder says how */
        PyObject *own = stored != NULL ? Py_NewRef(stored) : PyBytes_FromStringAndSize((const char *)p, n);
        if (own == NULL)
            return NULL;
        PyObject *accept = Py_NewRef(c->accept);
        block = PyObject_CallFunction(accept, "IOO", no, own, fill ? Py_True : Py_False);
        Py_DECREF(accept);
        Py_DECREF(own);
        return block;  /* cached by the reader if fill */
    }
    if (fill && core_cache(c, no, block) < 0) {
        Py_DECREF(block);
        return NULL;
    }
    return block;
}

/* Block `no` from `stored`, the object read for it (bytes, or what a file's read()
 * returned): a new reference, cached if `fill`.  The caller has counted the miss. */
static PyObject *core_decode(TableCore *c, uint32_t no, PyObject *stored, int fill) {
    if (PyBytes_CheckExact(stored))
        return core_decode_at(c, no, (const uint8_t *)PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                              stored, fill);
    PyObject *accept = Py_NewRef(c->accept);
    PyObject *block = PyObject_CallFunction(accept, "IOO", no, stored, fill ? Py_True : Py_False);
    Py_DECREF(accept);
    return block;  /* cached by the reader if fill */
}

/* The descriptor of the table file if it is a plain posix file that C may pread(2) itself
 * (-1 with no exception: it is not; -1 with one: an error). */
static long posix_fd(TableCore *c) {
    if (posix_file_type == NULL || c->file == NULL || Py_TYPE(c->file) != posix_file_type)
        return -1;
    PyObject *fdo = PyObject_GetAttr(c->file, str_fd);
    long fd = fdo != NULL ? PyLong_AsLong(fdo) : -1;
    Py_XDECREF(fdo);
    return fd >= 0 && fd <= INT32_MAX ? fd : -1;
}

/* `len` bytes at `off` through the file's own read(), which retries EINTR and raises the
 * store's IO errors: a new reference to what it returns. */
static PyObject *python_read(TableCore *c, uint64_t off, uint64_t len) {
    PyObject *read = Py_NewRef(c->read);
    PyObject *out = PyObject_CallFunction(read, "KK", (unsigned long long)off, (unsigned long long)len);
    Py_DECREF(read);
    return out;
}

/* `len` bytes at `off` of the table file (fewer only at its end).  A plain posix file is
 * read here with pread(2), the GIL released -- as os.pread does, without the Python frame;
 * any other file (O_DIRECT, the test envs' wrappers), and any error, go through the file's
 * own read(), which retries EINTR and raises the store's IO errors. */
static PyObject *file_read(TableCore *c, uint64_t off, uint64_t len) {
    if (len <= (uint64_t)PY_SSIZE_T_MAX && off <= (uint64_t)INT64_MAX) {
        long fd = posix_fd(c);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
        if (fd >= 0) {
            PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
            if (out == NULL)
                return NULL;
            ssize_t got;
            Py_BEGIN_ALLOW_THREADS
            got = pread((int)fd, PyBytes_AS_STRING(out), (size_t)len, (off_t)off);
            Py_END_ALLOW_THREADS
            if (got >= 0) {
                if ((uint64_t)got < len && _PyBytes_Resize(&out, got) < 0)
                    return NULL;
                return out;
            }
            Py_DECREF(out);  /* an error: the file's read() says which (or retries EINTR) */
        }
    }
    return python_read(c, off, len);
}

/* A miss reads a block of up to this many bytes into a buffer on the stack: no bytes
 * object per read (its malloc and free were a tenth of a cold seek's time). */
enum { STACK_READ_BYTES = 16384 };

/* Block `no` read from the file (a miss): a new reference, cached if `fill`. */
static PyObject *core_load(TableCore *c, uint32_t no, int fill) {
    if (c->read == NULL) {  /* the loader counts its misses */
        PyObject *loader = Py_NewRef(c->loader);
        PyObject *block = fill ? PyObject_CallFunction(loader, "I", no)
                               : PyObject_CallFunction(loader, "IO", no, Py_False);
        Py_DECREF(loader);
        return block;
    }
    uint64_t off = bs_load_le64(c->starts + 8 * (uint64_t)no), len = bs_load_le64(c->starts + 8 * (uint64_t)no + 8) - off;
    int got_error = 0;
    if (len <= STACK_READ_BYTES && off <= (uint64_t)INT64_MAX) {
        long fd = posix_fd(c);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
        if (fd >= 0) {
            uint8_t buf[STACK_READ_BYTES];
            ssize_t got;
            Py_BEGIN_ALLOW_THREADS
            got = pread((int)fd, buf, (size_t)len, (off_t)off);
            Py_END_ALLOW_THREADS
            if (got >= 0) {  /* a short read leaves the block short: the reader's decoder reports it */
                c->counters->misses++;
                return core_decode_at(c, no, buf, (Py_ssize_t)got, NULL, fill);
            }
            got_error = 1;
        }
    }
    /* a large block, another kind of file, or a read error (the file's read() says which,
     * or retries EINTR) */
    PyObject *stored = got_error ? python_read(c, off, len) : file_read(c, off, len);
    if (stored == NULL)
        return NULL;
    c->counters->misses++;
    PyObject *block = core_decode(c, no, stored, fill);
    Py_DECREF(stored);
    return block;
}

/* Block `no` of the table: a new reference, from its slot (a hit: marked referenced for
 * the cache's CLOCK, counted) or read and cached. */
static PyObject *core_block(TableCore *c, uint32_t no) {
    if ((Py_ssize_t)no >= PyList_GET_SIZE(c->slots)) {
        PyErr_SetString(PyExc_IndexError, "block number out of range of the slots");
        return NULL;
    }
    PyObject *block = PyList_GET_ITEM(c->slots, no);
    if (block != Py_None) {
        if (is_block(block))
            block_mark_referenced(block);
        c->counters->hits++;
        return Py_NewRef(block);
    }
    return core_load(c, no, 1);
}

/* The whole table lookup.  *hash / *have_hash: the key's filter hash, computed on
 * first need and shared by the caller's other tables.  Returns a new reference to
 * (True, value, version) or MISS; NULL on error. */
static PyObject *core_lookup(TableCore *c, PyObject *key, uint64_t version, uint64_t *hash, int *have_hash) {
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    if (!in_fences(c, k, klen))
        return miss();
    if (c->masks != NULL) {
        if (!*have_hash) {
            if (key_hash(key, hash) < 0)
                return NULL;
            *have_hash = 1;
        }
        if (!bloom_may_contain(c, *hash)) {
            c->bloom_useful++;
            return miss();
        }
    }
    int64_t no = core_index_search(c, k, klen, version);
    if (no < 0)
        return miss();  /* only newer versions here (not counted, as in the Python path) */
    PyObject *block = core_block(c, (uint32_t)no);
    if (block == NULL)
        return NULL;
    PyObject *data = block_data(block);
    PyObject *out = NULL;
    if (data != NULL) {
        Py_INCREF(data);
        out = lookup_in_payload(data, key, version, c->path, (long long)bs_load_le64(c->starts + 8 * (uint64_t)no), 1);
        Py_DECREF(data);
    }
    Py_DECREF(block);
    if (out == miss_tuple && c->masks != NULL)
        c->bloom_passed_misses++;
    return out;
}

/* TableCore.get(key, version, key_hash=None) -> (found, value, version) | MISS */
static PyObject *core_get(TableCore *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "get(key, version, key_hash=None)");
        return NULL;
    }
    if (check_bound() < 0 || core_ready(c) < 0)
        return NULL;
    uint64_t version, hash = 0;
    int have_hash = 0;
    int r = parse_key_version(args[0], args[1], &version);
    if (r < 0)
        return NULL;
    if (r > 0)
        return miss();
    if (nargs == 3 && args[2] != Py_None) {
        hash = PyLong_AsUnsignedLongLong(args[2]);
        if (hash == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
        have_hash = 1;
    }
    return core_lookup(c, args[0], version, &hash, &have_hash);
}

/* TableCore.locate(key, version, key_hash=None) -> block number | -1 */
static PyObject *core_locate(TableCore *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "locate(key, version, key_hash=None)");
        return NULL;
    }
    if (check_bound() < 0 || core_ready(c) < 0)
        return NULL;
    uint64_t version, hash = 0;
    int r = parse_key_version(args[0], args[1], &version);
    if (r < 0)
        return NULL;
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t klen = PyBytes_GET_SIZE(args[0]);
    if (!in_fences(c, k, klen))
        return PyLong_FromLong(-1);
    if (c->masks != NULL) {
        if (nargs == 3 && args[2] != Py_None) {
            hash = PyLong_AsUnsignedLongLong(args[2]);
            if (hash == (uint64_t)-1 && PyErr_Occurred())
                return NULL;
        } else if (key_hash(args[0], &hash) < 0) {
            return NULL;
        }
        if (!bloom_may_contain(c, hash))
            return PyLong_FromLong(-1);
    }
    if (r > 0)  /* a negative version: the index search would step past every block */
        version = 0;
    return PyLong_FromLongLong(core_index_search(c, k, klen, version));
}

static PyObject *core_get_bloom_useful(TableCore *c, void *unused) {
    return PyLong_FromUnsignedLongLong(c->bloom_useful);
}

static PyObject *core_get_bloom_passed(TableCore *c, void *unused) {
    return PyLong_FromUnsignedLongLong(c->bloom_passed_misses);
}

static PyObject *core_get_nblocks(TableCore *c, void *unused) {
    return PyLong_FromUnsignedLong(c->nblocks);
}

static PyGetSetDef core_getset[] = {
    {"bloom_useful", (getter)core_get_bloom_useful, NULL, "lookups the filter answered alone", NULL},
    {"bloom_passed_misses", (getter)core_get_bloom_passed, NULL,
     "lookups the filter let through that found nothing", NULL},
    {"block_count", (getter)core_get_nblocks, NULL, "data blocks of the table", NULL},
    {NULL}
};

static PyMethodDef core_methods[] = {
    {"get", (PyCFunction)(void (*)(void))core_get, METH_FASTCALL,
     "get(key, version, key_hash=None) -> (found, value, version): TableReader.get"},
    {"locate", (PyCFunction)(void (*)(void))core_locate, METH_FASTCALL,
     "locate(key, version, key_hash=None) -> block number or -1: TableReader.locate"},
    {NULL}
};

static PyTypeObject TableCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.TableCore",
    .tp_basicsize = sizeof(TableCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TableCore(smallest, largest, min_version, index, filter, masks, slots, loader, path, "
              "counters, *, file=None, accept=None, cache_put=None, cache_base=0, verify=True, "
              "index_offset=-1, filter_offset=-1): the "
              "lookup state of one table; with file/accept/cache_put, cache misses are read, verified, "
              "decompressed and cached in C (else `loader(block_no)` answers them, `loader(block_no, False)` "
              "for a block not to be cached); index_offset/filter_offset: where those blocks are stored, "
              "named by the CorruptionError that refuses them (-1: None)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_getset = core_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* lookups across the tables of a keyspace (newest first)                                   */

/* First table answer for (key, version): a new reference to (True, value, version) or
 * MISS. */
static PyObject *tables_lookup(PyObject *cores, PyObject *key, uint64_t version) {
    uint64_t hash = 0;
    int have_hash = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(cores);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(cores, i);
        if (Py_TYPE(item) != &TableCoreType) {
            PyErr_SetString(PyExc_TypeError, "cores must be a tuple of TableCore");
            return NULL;
        }
        TableCore *c = (TableCore *)item;
        if (core_ready(c) < 0)
            return NULL;
        if (c->min_version > version)
            continue;
        /* the core may be called back into Python (a cache miss): hold it */
        Py_INCREF(c);
        PyObject *r = core_lookup(c, key, version, &hash, &have_hash);
        Py_DECREF(c);
        if (r != miss_tuple)
            return r;  /* a hit, or NULL */
        Py_DECREF(r);
    }
    return miss();
}

static int tables_args(PyObject *const *args, Py_ssize_t nargs, const char *name, uint64_t *version) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s(cores, key, version)", name);
        return -1;
    }
    if (check_bound() < 0)
        return -1;
    if (!PyTuple_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "cores must be a tuple of TableCore");
        return -1;
    }
    return parse_key_version(args[1], args[2], version);
}

/* tables_get(cores, key, version) -> value | None: the View.get of the tables */
static PyObject *native_tables_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t version;
    int r = tables_args(args, nargs, "tables_get", &version);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    PyObject *t = tables_lookup(args[0], args[1], version);
    if (t == NULL)
        return NULL;
    PyObject *value = Py_NewRef(PyTuple_GET_ITEM(t, 1));
    Py_DECREF(t);
    return value;
}

/* tables_entry(cores, key, version) -> (found, value, version) | MISS */
static PyObject *native_tables_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t version;
    int r = tables_args(args, nargs, "tables_entry", &version);
    if (r < 0)
        return NULL;
    if (r > 0)
        return miss();
    return tables_lookup(args[0], args[1], version);
}

/* -- batched lookups: multi_get's tables part ---------------------------------------------
 *
 * tables_multi_get(cores, keys, version, read_batch) -> list: per key its newest table
 * entry, (True, value | None, version) or MISS.  Three passes, as View.multi_get's Python
 * plan: (1) per key, the first (newest) table whose fences, filter and index say it may
 * hold the key, and that table's block; (2) every such block: cache hits from the slots,
 * and all the misses read with ONE read_batch([(file, offset, length), ...]) call (so the
 * nonblocking and io_uring modes serve them concurrently), each verified, decoded and
 * cached; (3) per key, the lookup in its block -- a filter false positive goes on to the
 * older tables one by one. */

typedef struct {
    Py_ssize_t table;  /* index into cores, -1: no table may hold the key */
    uint32_t block;
    Py_ssize_t slot;   /* index into the batch's block list */
} Planned;

/* The plan of one key: the first core whose fences, filter and index admit it. */
static int plan_key(PyObject *cores, PyObject *key, uint64_t version, Planned *out) {
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    uint64_t hash = 0;
    int have_hash = 0;
    out->table = -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cores); i++) {
        TableCore *c = (TableCore *)PyTuple_GET_ITEM(cores, i);
        if (c->min_version > version || !in_fences(c, k, klen))
            continue;
        if (c->masks != NULL) {
            if (!have_hash) {
                if (key_hash(key, &hash) < 0)
                    return -1;
                have_hash = 1;
            }
            if (!bloom_may_contain(c, hash)) {
                c->bloom_useful++;
                continue;
            }
        }
        int64_t no = core_index_search(c, k, klen, version);
        if (no < 0)
            continue;
        out->table = i;
        out->block = (uint32_t)no;
        return 0;
    }
    return 0;
}

/* The blocks of the plan (deduplicated): a list, misses read with one read_batch call. */
static PyObject *plan_blocks(PyObject *cores, Planned *plan, Py_ssize_t n, PyObject *read_batch) {
    PyObject *blocks = PyList_New(0), *requests = PyList_New(0), *missing = PyList_New(0);
    PyObject *seen = PyDict_New();  /* (table << 32 | block) -> slot: each block once */
    if (blocks == NULL || requests == NULL || missing == NULL || seen == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Planned *p = &plan[i];
        if (p->table < 0)
            continue;
        PyObject *id = PyLong_FromUnsignedLongLong(((unsigned long long)p->table << 32) | p->block);
        if (id == NULL)
            goto fail;
        PyObject *known = PyDict_GetItemWithError(seen, id);  /* borrowed */
        if (known != NULL) {
            Py_DECREF(id);
            p->slot = PyLong_AsSsize_t(known);
            continue;
        }
        PyObject *slot_no = PyErr_Occurred() ? NULL : PyLong_FromSsize_t(PyList_GET_SIZE(blocks));
        if (slot_no == NULL || PyDict_SetItem(seen, id, slot_no) < 0) {
            Py_DECREF(id);
            Py_XDECREF(slot_no);
            goto fail;
        }
        Py_DECREF(id);
        Py_DECREF(slot_no);
        TableCore *c = (TableCore *)PyTuple_GET_ITEM(cores, p->table);
        if ((Py_ssize_t)p->block >= PyList_GET_SIZE(c->slots)) {
            PyErr_SetString(PyExc_IndexError, "block number out of range of the slots");
            goto fail;
        }
        PyObject *block = PyList_GET_ITEM(c->slots, p->block);
        p->slot = PyList_GET_SIZE(blocks);
        if (block != Py_None) {
            if (is_block(block))
                block_mark_referenced(block);
            c->counters->hits++;
            if (PyList_Append(blocks, block) < 0)
                goto fail;
            continue;
        }
        if (c->file == NULL || read_batch == Py_None) {  /* no batch: the reader's loader */
            PyObject *b = core_load(c, p->block, 1);
            if (b == NULL || PyList_Append(blocks, b) < 0) {
                Py_XDECREF(b);
                goto fail;
            }
            Py_DECREF(b);
            continue;
        }
        uint64_t off = bs_load_le64(c->starts + 8 * (uint64_t)p->block);
        uint64_t len = bs_load_le64(c->starts + 8 * (uint64_t)p->block + 8) - off;
        PyObject *req = Py_BuildValue("(OKK)", c->file, (unsigned long long)off, (unsigned long long)len);
        PyObject *where = Py_BuildValue("(nnI)", p->table, p->slot, p->block);
        if (req == NULL || where == NULL || PyList_Append(requests, req) < 0
                || PyList_Append(missing, where) < 0 || PyList_Append(blocks, Py_None) < 0) {
            Py_XDECREF(req);
            Py_XDECREF(where);
            goto fail;
        }
        Py_DECREF(req);
        Py_DECREF(where);
    }
    if (PyList_GET_SIZE(requests)) {
        PyObject *datas = PyObject_CallOneArg(read_batch, requests);
        if (datas == NULL)
            goto fail;
        if (!PyList_CheckExact(datas) || PyList_GET_SIZE(datas) != PyList_GET_SIZE(requests)) {
            Py_DECREF(datas);
            PyErr_SetString(PyExc_TypeError, "read_batch must return a list with one result per request");
            goto fail;
        }
        for (Py_ssize_t r = 0; r < PyList_GET_SIZE(missing); r++) {
            PyObject *where = PyList_GET_ITEM(missing, r);
            Py_ssize_t ti = PyLong_AsSsize_t(PyTuple_GET_ITEM(where, 0));
            Py_ssize_t slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(where, 1));
            uint32_t no = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(where, 2));
            TableCore *c = (TableCore *)PyTuple_GET_ITEM(cores, ti);
            c->counters->misses++;
            PyObject *b = core_decode(c, no, PyList_GET_ITEM(datas, r), 1);
            if (b == NULL) {
                Py_DECREF(datas);
                goto fail;
            }
            PyList_SetItem(blocks, slot, b);  /* steals b */
        }
        Py_DECREF(datas);
    }
    Py_DECREF(requests);
    Py_DECREF(missing);
    Py_DECREF(seen);
    return blocks;
fail:
    Py_XDECREF(blocks);
    Py_XDECREF(requests);
    Py_XDECREF(missing);
    Py_XDECREF(seen);
    return NULL;
}

/* tables_multi_get(cores, keys, version, read_batch) -> list of entries (see above) */
static PyObject *native_tables_multi_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyTuple_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "tables_multi_get(cores: tuple, keys: list, version, read_batch)");
        return NULL;
    }
    if (check_bound() < 0)
        return NULL;
    PyObject *cores = args[0], *keys = args[1], *read_batch = args[3];
    if (read_batch != Py_None && !PyCallable_Check(read_batch)) {
        PyErr_SetString(PyExc_TypeError, "read_batch must be callable or None");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cores); i++) {
        PyObject *item = PyTuple_GET_ITEM(cores, i);
        if (Py_TYPE(item) != &TableCoreType) {
            PyErr_SetString(PyExc_TypeError, "cores must be a tuple of TableCore");
            return NULL;
        }
        if (core_ready((TableCore *)item) < 0)
            return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(PyList_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "keys must be a list of bytes");
            return NULL;
        }
    }
    uint64_t version;
    int r = parse_version(args[2], &version);
    if (r < 0)
        return NULL;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    if (r > 0 || n == 0) {  /* a negative version: nothing is visible */
        for (Py_ssize_t i = 0; i < n; i++)
            PyList_SET_ITEM(out, i, miss());
        return out;
    }
    /* the keys and cores must stay alive and unchanged while Python code runs (read_batch,
     * a loader): hold our own references */
    Py_INCREF(keys);
    Py_INCREF(cores);
    PyObject *keys_copy = PyList_GetSlice(keys, 0, n);
    Planned *plan = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Planned));
    PyObject *blocks = NULL;
    if (keys_copy == NULL || plan == NULL) {
        if (plan == NULL)
            PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (plan_key(cores, PyList_GET_ITEM(keys_copy, i), version, &plan[i]) < 0)
            goto fail;
    blocks = plan_blocks(cores, plan, n, read_batch);
    if (blocks == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys_copy, i);
        Planned *p = &plan[i];
        PyObject *res;
        if (p->table < 0) {
            res = miss();
        } else {
            TableCore *c = (TableCore *)PyTuple_GET_ITEM(cores, p->table);
            PyObject *data = block_data(PyList_GET_ITEM(blocks, p->slot));
            if (data == NULL)
                goto fail;
            Py_INCREF(data);
            res = lookup_in_payload(data, key, version, c->path, (long long)bs_load_le64(c->starts + 8 * (uint64_t)p->block), 1);
            Py_DECREF(data);
            if (res == miss_tuple) {
                if (c->masks != NULL)
                    c->bloom_passed_misses++;
                /* a filter false positive (or only newer versions here): the older tables */
                uint64_t hash = 0;
                int have_hash = 0;
                for (Py_ssize_t t = p->table + 1; t < PyTuple_GET_SIZE(cores) && res == miss_tuple; t++) {
                    TableCore *o = (TableCore *)PyTuple_GET_ITEM(cores, t);
                    if (o->min_version > version)
                        continue;
                    Py_DECREF(res);
                    Py_INCREF(o);
                    res = core_lookup(o, key, version, &hash, &have_hash);
                    Py_DECREF(o);
                    if (res == NULL)
                        goto fail;
                }
            }
        }
        if (res == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, res);
    }
    Py_DECREF(blocks);
    PyMem_Free(plan);
    Py_DECREF(keys_copy);
    Py_DECREF(keys);
    Py_DECREF(cores);
    return out;
fail:
    Py_XDECREF(blocks);
    PyMem_Free(plan);
    Py_XDECREF(keys_copy);
    Py_DECREF(keys);
    Py_DECREF(cores);
    Py_DECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* merged scans: the sources of a keyspace (newest first) merged with version visibility    */
/*
 * A source is a table (read straight from its block payloads: no per-entry Python object
 * until an entry is emitted) or an iterator of *runs* -- lists of (key, version, value)
 * tuples in ascending internal order, e.g. a memtable's visible entries.  Each step takes
 * the smallest key among the sources' heads (the largest in reverse), reads every entry of
 * that key from every source, keeps the newest one with a version <= the scan's version
 * (REQUIRES, as in lsm/iterators.py: a key's entries in a newer source all have higher
 * versions), and emits (key, value) when it is a value written at or after `floor`.
 */

enum { SRC_TABLE = 1, SRC_RUNS = 2 };

/* A scan's blocks after its first come in runs that double from 1 to READAHEAD_BLOCKS,
 * the missing blocks of each run read with one positional read (as TableReader's
 * read-ahead does for the Python engine): a short seek reads one block, a long scan few
 * large spans. */
enum { READAHEAD_BLOCKS = 16 };

/* A run spans at most this many stored bytes (or its first block, when that alone is
 * larger): blocks of one big value each would otherwise hold 16 values of a table in
 * memory -- a GiB per table at 64 MiB values (sstable/reader.py's READ_SPAN_BYTES). */
#define READ_SPAN_BYTES ((uint64_t)1 << 20)

/* tables_prefetch warms the first blocks of at most this many tables (a seek's stack of
 * tables; beyond it, prefetches would evict each other's lines before their use) */
enum { PREFETCH_TABLES = 16 };

/* and the key section of a first block when it is at most this large (a 4 KiB block's) */
enum { PREFETCH_KEY_BYTES = 1024 };

typedef struct {
    int kind, done;
    /* the head entry */
    const uint8_t *key;
    Py_ssize_t klen;
    uint64_t version;
    /* a table */
    TableCore *core;
    PyObject *block, *data;   /* the current block and its payload (strong) */
    BlockView bv;
    int64_t pos, lo, hi;      /* entries [lo, hi) of the block are in range; pos = head */
    uint32_t no, first, last; /* current block, and the scan's block range */
    PyObject *ahead[READAHEAD_BLOCKS]; /* blocks read ahead, in scan order (strong) */
    int ahead_n, ahead_i;     /* ahead[ahead_i:ahead_n] are the next blocks */
    int batch;                /* blocks the next read-ahead takes */
    /* The lead's run (note_run): once known for the current block, entries up to span_end
     * (in scan direction) come before every other source's head. */
    int span_known;
    int64_t span_end;
    /* runs */
    PyObject *runs, *run;     /* iterator of lists; the current list (strong) */
    Py_ssize_t ri;
} Source;

typedef struct {
    PyObject_HEAD
    Source *src;
    Py_ssize_t nsrc;
    PyObject *start, *end;    /* bytes or NULL: [start, end) */
    uint64_t version, floor;
    int reverse, keys_only;
    /* Bytes cut off the front of every key emitted (a prefix view's prefix, which the
     * bounds make every key of the scan start with); the merge itself compares whole keys. */
    Py_ssize_t skip;
    Py_ssize_t remaining;     /* -1: no limit */
    uint8_t *kbuf;            /* the key being decided (heads may move past it) */
    Py_ssize_t kcap;
    int finished;
    int busy;                 /* inside next(): a call back into Python may re-enter */
    /* The source that held the last key alone (or NULL) and the source whose head came
     * after it (NULL: no other source was live).  Neither moves but the lead, so while the
     * lead's head stays before the runner's, the lead holds the next key alone: one key
     * comparison per entry instead of one per source (a series' points come from one
     * table at a time). */
    Source *lead, *runner;
    /* The (key, value) tuples emitted last, each reused for a later entry once the consumer
     * has let go of it (reference count back to ours alone, as zip() and dict iterators
     * reuse one).  Two of them: `for item in scan` still holds the previous tuple while it
     * asks for the next, `for key, value in scan` does not -- either loop then costs no
     * tuple allocation per entry. */
    PyObject *pairs[2];
    PyObject *keepalive;      /* what the sources need alive (the tables' readers) */
    PyObject *guard;          /* callable or NULL: raises once the scan's store is closed */
    Py_ssize_t until_guard;   /* entries to emit before the guard runs again */
    Py_ssize_t guard_every;   /* the next such stretch: GUARD_FIRST growing to GUARD_MAX */
    /* The error a next() raised (an Exception or KeyboardInterrupt), raised again by every
     * later next(): a scan that raised gives no further rows and never ends silently
     * (docs/api.md; lsm/iterators.py's sticky() does the same on pure Python). */
    PyObject *err_type, *err_value, *err_tb;
} MergeScan;

/* The guard runs before the first entry, then before stretches of entries growing from
 * GUARD_FIRST to GUARD_MAX (as lsm/iterators.py's batches: once per entry would cost a
 * fifth of a scan), at the end, and after an IO error (a close() racing with a read wins). */
enum { GUARD_FIRST = 16, GUARD_MAX = 1024 };

static inline const uint8_t *bytes_ptr(PyObject *b) { return (const uint8_t *)PyBytes_AS_STRING(b); }

/* Set a table source's head to entry `pos` of its block. */
static int table_head(MergeScan *m, Source *s) {
    if (block_key(&s->bv, (uint32_t)s->pos, &s->key, &s->klen) < 0) {
        bs_raise_corruption(s->core->path, (long long)bs_load_le64(s->core->starts + 8 * (uint64_t)s->no),
                         "data block %u: key offsets are out of bounds", s->no);
        return -1;
    }
    s->version = block_version(&s->bv, (uint32_t)s->pos);
    return 0;
}

/* Make `block` the source's current block (stealing the reference) and compute the part
 * of it in range.  Returns 1 if that part is non-empty, 0 if empty, -1 on error. */
static int table_enter(MergeScan *m, Source *s, uint32_t no, PyObject *block) {
    Py_XSETREF(s->block, block);
    s->span_known = 0;  /* a new block: its run is not known yet (note_run) */
    Py_CLEAR(s->data);
    PyObject *data = block_data(block);
    if (data == NULL)
        return -1;
    s->data = Py_NewRef(data);
    s->no = no;
    const char *why;
    long long where = (long long)bs_load_le64(s->core->starts + 8 * (uint64_t)no);
    /* a Block's payload: its offsets were checked when it was decoded */
    if (bs_block_view(bytes_ptr(data), (uint64_t)PyBytes_GET_SIZE(data), &s->bv, &why) < 0) {
        bs_raise_corruption(s->core->path, where, "data block %u does not parse: %s", no, why);
        return -1;
    }
    s->lo = 0;
    s->hi = s->bv.count;
    if (m->start != NULL && no == s->first) {
        s->lo = block_lower_bound(&s->bv, bytes_ptr(m->start), PyBytes_GET_SIZE(m->start));
        if (s->lo < 0)
            goto bad;
    }
    if (m->end != NULL && no == s->last) {
        s->hi = block_lower_bound(&s->bv, bytes_ptr(m->end), PyBytes_GET_SIZE(m->end));
        if (s->hi < 0)
            goto bad;
    }
    if (s->lo >= s->hi)
        return 0;
    s->pos = m->reverse ? s->hi - 1 : s->lo;
    return table_head(m, s) < 0 ? -1 : 1;
bad:
    bs_raise_corruption(s->core->path, where, "data block %u: key offsets are out of bounds", no);
    return -1;
}

static void ahead_clear(Source *s) {
    for (int i = s->ahead_i; i < s->ahead_n; i++)
        Py_CLEAR(s->ahead[i]);
    s->ahead_i = s->ahead_n = 0;
}

/* The bytes a read-ahead span was read into: a buffer of this module's (`buf`) or the
 * object a file's read() returned (`obj`); `p`, `n`: what was read. */
typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    uint8_t *buf;
    size_t cap;
    PyObject *obj;
} Span;

/* One spare span buffer, taken and given back with the GIL held: a read-ahead reads into
 * it (no bytes object per span: for spans past the stack buffer, its allocation touched new
 * pages -- page faults -- on most reads), and a thread that finds it taken (another thread
 * reading with the GIL released) allocates its own.  Kept only up to SPARE_MAX bytes. */
static uint8_t *spare_buf = NULL;
static size_t spare_cap = 0;
enum { SPARE_MIN = 65536, SPARE_MAX = 1 << 20 };

static uint8_t *span_buffer(size_t len, size_t *cap) {
    if (spare_buf != NULL && spare_cap >= len) {
        uint8_t *b = spare_buf;
        *cap = spare_cap;
        spare_buf = NULL;
        return b;
    }
    size_t want = len < SPARE_MIN ? SPARE_MIN : len;
    uint8_t *b = PyMem_RawMalloc(want);
    *cap = want;
    return b;
}

static void span_release(Span *sp) {
    if (sp->buf != NULL) {
        if (sp->cap <= SPARE_MAX && (spare_buf == NULL || spare_cap < sp->cap)) {
            PyMem_RawFree(spare_buf);
            spare_buf = sp->buf;
            spare_cap = sp->cap;
        } else {
            PyMem_RawFree(sp->buf);
        }
        sp->buf = NULL;
    }
    Py_CLEAR(sp->obj);
}

/* `len` bytes at `off` of the table file (fewer only at its end) into `sp`: with pread(2),
 * the GIL released, into a span buffer for a plain posix file; else, and on any read error,
 * through the file's own read(), which retries EINTR and raises the store's IO errors.
 * 0, or -1 with an exception. */
static int span_read(TableCore *c, uint64_t off, uint64_t len, Span *sp) {
    memset(sp, 0, sizeof *sp);
    if (len <= (uint64_t)PY_SSIZE_T_MAX && off <= (uint64_t)INT64_MAX) {
        long fd = posix_fd(c);
        if (fd == -1 && PyErr_Occurred())
            return -1;
        if (fd >= 0 && (sp->buf = span_buffer((size_t)len, &sp->cap)) != NULL) {
            ssize_t got;
            uint8_t *buf = sp->buf;
            Py_BEGIN_ALLOW_THREADS
            got = pread((int)fd, buf, (size_t)len, (off_t)off);
            Py_END_ALLOW_THREADS
            if (got >= 0) {
                sp->p = buf;
                sp->n = (Py_ssize_t)got;
                return 0;
            }
            span_release(sp);  /* an error: the file's read() says which (or retries EINTR) */
        }
    }
    sp->obj = python_read(c, off, len);
    if (sp->obj == NULL)
        return -1;
    if (!PyBytes_CheckExact(sp->obj)) {
        Py_CLEAR(sp->obj);
        PyErr_SetString(PyExc_TypeError, "a table file's read() must return bytes");
        return -1;
    }
    sp->p = (const uint8_t *)PyBytes_AS_STRING(sp->obj);
    sp->n = PyBytes_GET_SIZE(sp->obj);
    return 0;
}

/* Whether block `no`, missing and read ahead by a scan `scanned` stored bytes past its first
 * block of this table, is to be cached: the cache's admission (ClockCache.admit: not past
 * its scan share, else its second miss within a while; the Python cache's admit when the
 * table uses that one).  1 yes, 0 no, -1 on error. */
static int core_admit(TableCore *c, uint32_t no, uint64_t scanned) {
    if (c->cache != NULL)
        return bs_blockcache_admit(c->cache, c->cache_base + no, scanned);
    if (c->cache_put == NULL || !PyMethod_Check(c->cache_put))
        return 1;  /* a core without a cache of its own (tests): cache every block */
    PyObject *cache = Py_NewRef(PyMethod_GET_SELF(c->cache_put));
    PyObject *r = PyObject_CallMethod(cache, "admit", "KK", (unsigned long long)(c->cache_base + no),
                                      (unsigned long long)scanned);
    Py_DECREF(cache);
    if (r == NULL)
        return -1;
    int yes = PyObject_IsTrue(r);
    Py_DECREF(r);
    return yes;
}

/* How many of the `n` blocks from `no` on in scan direction fit READ_SPAN_BYTES, at least
 * the first (REQUIRES: they are all blocks of the table). */
static int run_within_span(TableCore *c, uint32_t no, int n, int reverse) {
    while (n > 1) {
        uint32_t lo = reverse ? no - (uint32_t)(n - 1) : no;
        uint32_t hi = reverse ? no : no + (uint32_t)(n - 1);
        uint64_t span = bs_load_le64(c->starts + 8 * (uint64_t)hi + 8) - bs_load_le64(c->starts + 8 * (uint64_t)lo);
        if (span <= READ_SPAN_BYTES)
            break;
        n--;
    }
    return n;
}

/* Fill the read-ahead with the next run of blocks from `no` on in scan direction: cached
 * ones from their slots (each a hit: counted and marked referenced), the missing ones with one read spanning them, cached if the cache
 * admits them -- except the first when `first_cached` (a table's first block of the
 * scan, which is always cached, as a seek's is: sstable/reader.py reads it alone). */
static int ahead_fill(MergeScan *m, Source *s, uint32_t no, int first_cached) {
    TableCore *c = s->core;
    uint32_t left = m->reverse ? no - s->first + 1 : s->last - no + 1;
    int n = s->batch < (int)left ? s->batch : (int)left;
    s->batch = s->batch * 2 < READAHEAD_BLOCKS ? s->batch * 2 : READAHEAD_BLOCKS;
    if ((Py_ssize_t)(m->reverse ? no : no + (uint32_t)n - 1) >= PyList_GET_SIZE(c->slots)) {
        PyErr_SetString(PyExc_IndexError, "block number out of range of the slots");
        return -1;
    }
    n = run_within_span(c, no, n, m->reverse);
    uint32_t lo = UINT32_MAX, hi = 0;  /* the missing blocks' span */
    for (int i = 0; i < n; i++) {
        uint32_t b = m->reverse ? no - (uint32_t)i : no + (uint32_t)i;
        PyObject *block = PyList_GET_ITEM(c->slots, b);
        s->ahead[i] = block == Py_None ? NULL : Py_NewRef(block);
        if (block == Py_None) {
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
        } else {  /* a hit, as core_block() counts one (and CLOCK's second chance) */
            if (is_block(block))
                block_mark_referenced(block);
            c->counters->hits++;
        }
    }
    s->ahead_i = 0;
    s->ahead_n = n;
    if (lo > hi)
        return 0;
    Span span = {0};
    int have_span = 0;
    uint64_t origin = bs_load_le64(c->starts + 8 * (uint64_t)lo);
    if (c->read != NULL) {
        uint64_t len = bs_load_le64(c->starts + 8 * (uint64_t)hi + 8) - origin;
        if (span_read(c, origin, len, &span) < 0)
            goto fail;
        have_span = 1;
    }
    for (int i = 0; i < n; i++) {
        if (s->ahead[i] != NULL)
            continue;
        uint32_t b = m->reverse ? no - (uint32_t)i : no + (uint32_t)i;
        /* the stored bytes the scan passed in this table before block b */
        uint64_t scanned = m->reverse
            ? bs_load_le64(c->starts + 8 * (uint64_t)s->last + 8) - bs_load_le64(c->starts + 8 * (uint64_t)b + 8)
            : bs_load_le64(c->starts + 8 * (uint64_t)b) - bs_load_le64(c->starts + 8 * (uint64_t)s->first);
        int fill = i == 0 && first_cached ? 1 : core_admit(c, b, scanned);
        if (fill < 0) {
            span_release(&span);
            goto fail;
        }
        if (!have_span) {  /* no read in C: the reader's loader, block by block */
            s->ahead[i] = core_load(c, b, fill);
        } else {
            uint64_t a = bs_load_le64(c->starts + 8 * (uint64_t)b) - origin, e = bs_load_le64(c->starts + 8 * (uint64_t)b + 8) - origin;
            uint64_t have = (uint64_t)span.n;
            /* a short read leaves this block short: the reader's decoder reports it */
            Py_ssize_t from = (Py_ssize_t)(a < have ? a : have);
            Py_ssize_t to = (Py_ssize_t)(e < have ? e : have);
            c->counters->misses++;  /* decoded in place: no copy of the block */
            s->ahead[i] = core_decode_at(c, b, span.p + from, to - from, NULL, fill);
        }
        if (s->ahead[i] == NULL) {
            span_release(&span);
            goto fail;
        }
    }
    span_release(&span);
    return 0;
fail:
    for (int i = 0; i < n; i++)
        Py_CLEAR(s->ahead[i]);
    s->ahead_i = s->ahead_n = 0;
    return -1;
}

/* Move a table source to its next block with entries in range (or mark it done). */
static int table_next_block(MergeScan *m, Source *s) {
    for (;;) {
        if (s->no == (m->reverse ? s->first : s->last)) {
            s->done = 1;
            Py_CLEAR(s->block);
            Py_CLEAR(s->data);
            ahead_clear(s);
            return 0;
        }
        uint32_t no = m->reverse ? s->no - 1 : s->no + 1;
        if (s->ahead_i >= s->ahead_n && ahead_fill(m, s, no, 0) < 0)
            return -1;
        PyObject *block = s->ahead[s->ahead_i];
        s->ahead[s->ahead_i++] = NULL;
        int r = table_enter(m, s, no, block);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
}

static int table_advance(MergeScan *m, Source *s) {
    if (m->reverse ? --s->pos >= s->lo : ++s->pos < s->hi)
        return table_head(m, s);
    return table_next_block(m, s);
}

/* Set a runs source's head to run[ri], checking the entry's shape. */
static int runs_head(Source *s) {
    PyObject *e = PyList_GET_ITEM(s->run, s->ri);
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 3 || !PyBytes_CheckExact(PyTuple_GET_ITEM(e, 0))) {
        PyErr_SetString(PyExc_TypeError, "a run entry must be a (bytes, int, bytes | None) tuple");
        return -1;
    }
    PyObject *k = PyTuple_GET_ITEM(e, 0);
    s->key = bytes_ptr(k);
    s->klen = PyBytes_GET_SIZE(k);
    s->version = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(e, 1));
    if (s->version == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

static int runs_next_run(MergeScan *m, Source *s) {
    for (;;) {
        PyObject *run = PyIter_Next(s->runs);
        if (run == NULL) {
            if (PyErr_Occurred())
                return -1;
            s->done = 1;
            Py_CLEAR(s->run);
            Py_CLEAR(s->runs);
            return 0;
        }
        if (!PyList_CheckExact(run)) {
            Py_DECREF(run);
            PyErr_SetString(PyExc_TypeError, "runs must be lists");
            return -1;
        }
        Py_XSETREF(s->run, run);
        Py_ssize_t n = PyList_GET_SIZE(run);
        if (n) {
            s->ri = m->reverse ? n - 1 : 0;
            return runs_head(s);
        }
    }
}

static int runs_advance(MergeScan *m, Source *s) {
    if (m->reverse ? --s->ri >= 0 : ++s->ri < PyList_GET_SIZE(s->run))
        return runs_head(s);
    return runs_next_run(m, s);
}

static inline int source_advance(MergeScan *m, Source *s) {
    return s->kind == SRC_TABLE ? table_advance(m, s) : runs_advance(m, s);
}

/* The blocks of a table source that may hold entries of the range: [s->first, s->last].
 * Returns 1 if there are any, 0 if none (the source is done), -1 on error. */
static int table_range(MergeScan *m, Source *s) {
    TableCore *c = s->core;
    if (core_ready(c) < 0)
        return -1;
    const uint8_t *sp = m->start ? bytes_ptr(m->start) : NULL, *ep = m->end ? bytes_ptr(m->end) : NULL;
    Py_ssize_t sl = m->start ? PyBytes_GET_SIZE(m->start) : 0, el = m->end ? PyBytes_GET_SIZE(m->end) : 0;
    if ((sp && keycmp(sp, sl, bytes_ptr(c->largest), PyBytes_GET_SIZE(c->largest)) > 0)
            || (ep && keycmp(ep, el, bytes_ptr(c->smallest), PyBytes_GET_SIZE(c->smallest)) <= 0)
            || c->min_version > m->version) {
        s->done = 1;
        return 0;
    }
    s->first = sp ? (uint32_t)core_index_lower_bound(c, sp, sl) : 0;
    s->last = c->nblocks - 1;
    if (ep) {
        int64_t l = core_index_lower_bound(c, ep, el);
        if (l < (int64_t)s->last)
            s->last = (uint32_t)l;
    }
    if (s->first > s->last) {
        s->done = 1;
        return 0;
    }
    return 1;
}

/* The block a table source starts from (its range is set). */
static inline uint32_t table_start_block(const MergeScan *m, const Source *s) {
    return m->reverse ? s->last : s->first;
}

/* Blocks of a table source's range when the scan needs every one of them at once: a scan
 * with no limit whose far bound (`end` going forward, `start` in reverse) the index placed
 * within READAHEAD_BLOCKS of its first block; else 1 (the read-ahead then doubles from one
 * block: a scan stopped early, or a seek, reads little). */
static uint32_t table_open_span(const MergeScan *m, const Source *s) {
    uint32_t span = s->last - s->first + 1;
    if (m->remaining >= 0 || (m->reverse ? m->start == NULL : m->end == NULL) || span > READAHEAD_BLOCKS)
        return 1;
    return span;
}

/* The first block of a table source whose span is more than one block: the whole span
 * fetched as read-ahead (its missing blocks with ONE read: a range of one time series in
 * each table is a few blocks, and a read per block was the largest cost of such a query),
 * the first one taken from it (ahead_fill marks and counts each cached block as a hit, as
 * core_block() does).  A new reference, or NULL on error. */
static PyObject *table_open_span_blocks(MergeScan *m, Source *s, uint32_t no, uint32_t span) {
    TableCore *c = s->core;
    if ((Py_ssize_t)no >= PyList_GET_SIZE(c->slots)) {
        PyErr_SetString(PyExc_IndexError, "block number out of range of the slots");
        return NULL;
    }
    s->batch = (int)span;
    if (ahead_fill(m, s, no, 1) < 0)
        return NULL;
    s->batch = READAHEAD_BLOCKS;
    PyObject *block = s->ahead[s->ahead_i];
    s->ahead[s->ahead_i++] = NULL;
    return block;
}

/* Position a table source whose range is set at the first entry of the range. */
static int table_open(MergeScan *m, Source *s) {
    uint32_t no = table_start_block(m, s);
    uint32_t span = table_open_span(m, s);
    s->batch = 1;
    PyObject *block = span > 1 ? table_open_span_blocks(m, s, no, span) : core_block(s->core, no);
    if (block == NULL)
        return -1;
    int r = table_enter(m, s, no, block);
    if (r < 0)
        return -1;
    return r ? 0 : table_next_block(m, s);
}

/* Ask the CPU for what opening the table sources will read of their cached first blocks
 * -- the slot, the Block, its payload's head -- for all of them before any is opened: at
 * a million keys each is a memory miss, and issued together they overlap instead of
 * following one another (a seek opens one block per table).  Reads nothing it may not:
 * a slot's Block is read only once its slot pointer is known to be in the list. */
static void tables_prefetch(MergeScan *m) {
    PyObject *blocks[PREFETCH_TABLES];
    Source *tables[PREFETCH_TABLES];
    Py_ssize_t nt = 0, nb = 0;
    for (Py_ssize_t i = 0; i < m->nsrc && nt < PREFETCH_TABLES; i++) {
        Source *s = &m->src[i];
        if (s->kind == SRC_TABLE && !s->done
                && (Py_ssize_t)table_start_block(m, s) < PyList_GET_SIZE(s->core->slots)) {
            __builtin_prefetch(&((PyListObject *)s->core->slots)->ob_item[table_start_block(m, s)]);
            tables[nt++] = s;
        }
    }
    for (Py_ssize_t i = 0; i < nt; i++) {
        PyObject *block = PyList_GET_ITEM(tables[i]->core->slots, table_start_block(m, tables[i]));
        if (block != Py_None && is_block(block)) {
            __builtin_prefetch((char *)block + block_data_off);
            __builtin_prefetch((char *)block + block_ref_off, 1);
            blocks[nb++] = block;
        }
    }
    PyObject *datas[PREFETCH_TABLES];
    Py_ssize_t nd = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *data = *(PyObject **)((char *)blocks[i] + block_data_off);
        if (data != NULL && PyBytes_CheckExact(data)) {
            __builtin_prefetch(data);
            __builtin_prefetch((char *)data + 64);
            datas[nd++] = data;
        }
    }
    /* then the fixed-width key section each block's search will bisect (its header is
     * on its way from the step above) */
    for (Py_ssize_t i = 0; i < nd; i++) {
        const uint8_t *p = bytes_ptr(datas[i]);
        uint64_t size = (uint64_t)PyBytes_GET_SIZE(datas[i]);
        if (size < BLOCK_HEADER || !(bs_load_le32(p + 12) & FIXED_KEYS))
            continue;
        uint64_t n = bs_load_le32(p), from = BLOCK_HEADER + 8 * n, to = from + n * bs_load_le32(p + 4);
        if (to > size || to - from > PREFETCH_KEY_BYTES)
            continue;
        for (uint64_t at = from; at < to; at += 64)
            __builtin_prefetch(p + at);
    }
}

static int merge_traverse(MergeScan *m, visitproc visit, void *arg) {
    Py_VISIT(m->err_type);
    Py_VISIT(m->err_value);
    Py_VISIT(m->err_tb);
    Py_VISIT(m->keepalive);
    Py_VISIT(m->guard);
    Py_VISIT(m->pairs[0]);
    Py_VISIT(m->pairs[1]);
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        Source *s = &m->src[i];
        Py_VISIT(s->core);
        Py_VISIT(s->block);
        for (int j = s->ahead_i; j < s->ahead_n; j++)
            Py_VISIT(s->ahead[j]);
        Py_VISIT(s->runs);
        Py_VISIT(s->run);
    }
    return 0;
}

static int merge_clear(MergeScan *m) {
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        Source *s = &m->src[i];
        Py_CLEAR(s->core);
        Py_CLEAR(s->block);
        Py_CLEAR(s->data);
        ahead_clear(s);
        Py_CLEAR(s->runs);
        Py_CLEAR(s->run);
        s->done = 1;
    }
    m->lead = m->runner = NULL;
    Py_CLEAR(m->pairs[0]);
    Py_CLEAR(m->pairs[1]);
    Py_CLEAR(m->keepalive);
    m->finished = 1;
    return 0;
}

static int merge_gc_clear(MergeScan *m) {
    merge_clear(m);
    Py_CLEAR(m->guard);
    Py_CLEAR(m->err_type);
    Py_CLEAR(m->err_value);
    Py_CLEAR(m->err_tb);
    return 0;
}

static void merge_dealloc(MergeScan *m) {
    PyObject_GC_UnTrack(m);
    merge_gc_clear(m);
    PyMem_Free(m->src);
    PyMem_Free(m->kbuf);
    Py_XDECREF(m->start);
    Py_XDECREF(m->end);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int merge_open(MergeScan *m, PyObject *sources);

/* A scan's ``limit`` (None or an int >= 0) as the count left to emit, -1 for none.  A limit
 * past PY_SSIZE_T_MAX is no limit at all -- no scan emits that many entries -- so it reads
 * as None does, as in the pure-Python merge (an OverflowError here broke such scans). */
static int parse_limit(PyObject *limit, Py_ssize_t *remaining) {
    *remaining = -1;
    if (limit == Py_None)
        return 0;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (overflow > 0)
        return 0;
    if (overflow < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0 or None");
        return -1;
    }
    if (n <= PY_SSIZE_T_MAX)
        *remaining = (Py_ssize_t)n;
    return 0;
}

static int merge_setup(MergeScan *m, PyObject *sources, PyObject *start, PyObject *end,
                       unsigned long long version, unsigned long long floor, int reverse,
                       PyObject *limit, int keys_only, PyObject *keepalive, PyObject *guard,
                       Py_ssize_t skip);

static int merge_init(MergeScan *m, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sources", "start", "end", "version", "floor", "reverse", "limit",
                             "keys_only", "keepalive", "guard", "skip", NULL};
    PyObject *sources, *start, *end, *limit = Py_None, *keepalive = Py_None, *guard = Py_None;
    unsigned long long version, floor;
    int reverse = 0, keys_only = 0;
    Py_ssize_t skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOKK|pOpOOn:MergeScan", kwlist, &sources,
                                     &start, &end, &version, &floor, &reverse, &limit, &keys_only,
                                     &keepalive, &guard, &skip))
        return -1;
    return merge_setup(m, sources, start, end, version, floor, reverse, limit, keys_only, keepalive, guard,
                       skip);
}

/* type(*args, **kwargs) through tp_new and tp_init (type.__call__), for a vectorcall the
 * fast path does not take. */
static PyObject *merge_call_generic(PyObject *type, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *r = NULL;
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        if ((kwargs = PyDict_New()) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    r = PyType_Type.tp_call(type, tuple, kwargs);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return r;
}

/* MergeScan(...) called with its arguments by position (every scan of the store calls it
 * so, once per scan): the same as tp_new + merge_init without the argument tuple and the
 * keyword parser (about 1% of a short range query).  Any other call -- keywords, another
 * count, a version or floor that is no int -- takes the generic path, which parses (and
 * refuses) exactly as before. */
static PyObject *merge_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs < 5 || nargs > 11 || !PyLong_Check(args[3]) || !PyLong_Check(args[4]))
        return merge_call_generic(type, args, nargs, kwnames);
    /* "K" and "p" as PyArg_ParseTupleAndKeywords reads them */
    unsigned long long version = PyLong_AsUnsignedLongLongMask(args[3]);
    if (version == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long floor = PyLong_AsUnsignedLongLongMask(args[4]);
    if (floor == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int reverse = nargs > 5 ? PyObject_IsTrue(args[5]) : 0;
    int keys_only = nargs > 7 ? PyObject_IsTrue(args[7]) : 0;
    if (reverse < 0 || keys_only < 0)
        return NULL;
    Py_ssize_t skip = nargs > 10 ? PyNumber_AsSsize_t(args[10], PyExc_OverflowError) : 0;
    if (skip == -1 && PyErr_Occurred())
        return NULL;
    PyObject *m = PyType_GenericNew((PyTypeObject *)type, NULL, NULL);
    if (m == NULL)
        return NULL;
    if (merge_setup((MergeScan *)m, args[0], args[1], args[2], version, floor, reverse,
                    nargs > 6 ? args[6] : Py_None, keys_only, nargs > 8 ? args[8] : Py_None,
                    nargs > 9 ? args[9] : Py_None, skip) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

static int merge_setup(MergeScan *m, PyObject *sources, PyObject *start, PyObject *end,
                       unsigned long long version, unsigned long long floor, int reverse,
                       PyObject *limit, int keys_only, PyObject *keepalive, PyObject *guard,
                       Py_ssize_t skip) {
    if (!PyList_CheckExact(sources) && !PyTuple_CheckExact(sources)) {
        PyErr_SetString(PyExc_TypeError, "sources must be a list or a tuple");
        return -1;
    }
    if (guard != Py_None && !PyCallable_Check(guard)) {
        PyErr_SetString(PyExc_TypeError, "guard must be callable or None");
        return -1;
    }
    if (check_bound() < 0)
        return -1;
    if (m->src != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "MergeScan is already initialised");
        return -1;
    }
    if ((start != Py_None && !PyBytes_CheckExact(start)) || (end != Py_None && !PyBytes_CheckExact(end))) {
        PyErr_SetString(PyExc_TypeError, "start and end must be bytes or None");
        return -1;
    }
    if (skip < 0) {
        PyErr_SetString(PyExc_ValueError, "skip must be >= 0");
        return -1;
    }
    if (parse_limit(limit, &m->remaining) < 0)
        return -1;
    m->skip = skip;
    m->keepalive = Py_NewRef(keepalive);
    m->guard = guard == Py_None ? NULL : Py_NewRef(guard);
    m->until_guard = 0;
    m->guard_every = GUARD_FIRST;
    m->start = start == Py_None ? NULL : Py_NewRef(start);
    m->end = end == Py_None ? NULL : Py_NewRef(end);
    m->version = version;
    m->floor = floor;
    m->reverse = reverse;
    m->keys_only = keys_only;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sources);
    m->src = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Source));
    if (m->src == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    m->nsrc = n;
    if (m->start && m->end && keycmp(bytes_ptr(m->start), PyBytes_GET_SIZE(m->start), bytes_ptr(m->end),
                                     PyBytes_GET_SIZE(m->end)) >= 0)
        m->remaining = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Source *s = &m->src[i];
        s->done = 1;  /* until opened */
    }
    if (m->remaining == 0)
        return 0;
    if (merge_open(m, sources) < 0) {
        merge_clear(m);  /* a failed init leaves no half-opened source: next() just ends */
        return -1;
    }
    return 0;
}

/* Open the sources (m->src allocated, all done): the tables' block ranges first, then
 * what their first blocks need fetched together, then each source positioned. */
static int merge_open(MergeScan *m, PyObject *sources) {
    Py_ssize_t n = m->nsrc;
    for (Py_ssize_t i = 0; i < n; i++) {
        Source *s = &m->src[i];
        PyObject *item = PySequence_Fast_GET_ITEM(sources, i);
        s->done = 0;
        if (Py_TYPE(item) == &TableCoreType) {
            s->kind = SRC_TABLE;
            s->core = (TableCore *)Py_NewRef(item);
            if (table_range(m, s) < 0)
                return -1;
        } else {
            s->kind = SRC_RUNS;
        }
    }
    tables_prefetch(m);
    for (Py_ssize_t i = 0; i < n; i++) {
        Source *s = &m->src[i];
        if (s->kind == SRC_TABLE) {
            if (!s->done && table_open(m, s) < 0)
                return -1;
        } else {
            s->runs = PyObject_GetIter(PySequence_Fast_GET_ITEM(sources, i));
            if (s->runs == NULL || runs_next_run(m, s) < 0)
                return -1;
        }
    }
    return 0;
}

static int keep_key(MergeScan *m, const uint8_t *k, Py_ssize_t n) {
    if (n > m->kcap) {
        Py_ssize_t cap = n < 64 ? 64 : n;
        uint8_t *buf = PyMem_Realloc(m->kbuf, (size_t)cap);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        m->kbuf = buf;
        m->kcap = cap;
    }
    if (n)
        memcpy(m->kbuf, k, (size_t)n);
    return 0;
}

/* The value of a source's head entry: a new reference (None for a tombstone). */
static PyObject *head_value(MergeScan *m, Source *s, PyObject **key_obj) {
    if (s->kind == SRC_RUNS) {
        PyObject *e = PyList_GET_ITEM(s->run, s->ri);
        Py_XSETREF(*key_obj, Py_NewRef(PyTuple_GET_ITEM(e, 0)));
        return Py_NewRef(PyTuple_GET_ITEM(e, 2));
    }
    const uint8_t *v;
    Py_ssize_t vlen;
    if (block_value(&s->bv, (uint32_t)s->pos, &v, &vlen) < 0)
        return bs_raise_corruption(s->core->path, (long long)bs_load_le64(s->core->starts + 8 * (uint64_t)s->no),
                                "data block %u: value offsets are out of bounds", s->no);
    if (v == NULL)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)v, vlen);
}

static PyObject *merge_step(MergeScan *m);

/* Run the guard; -1 (its exception set) if it raises.  An exception already set (an IO
 * error) becomes the guard's exception's context, as `raise` inside `except` would make it. */
static int run_guard(MergeScan *m) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *guard = Py_NewRef(m->guard);
    PyObject *r = PyObject_CallNoArgs(guard);
    Py_DECREF(guard);
    if (r == NULL) {
        if (type != NULL) {
            PyErr_NormalizeException(&type, &value, &tb);
            if (tb != NULL && value != NULL)
                PyException_SetTraceback(value, tb);
            PyObject *t2, *v2, *tb2;
            PyErr_Fetch(&t2, &v2, &tb2);
            PyErr_NormalizeException(&t2, &v2, &tb2);
            if (value != NULL && v2 != NULL)
                PyException_SetContext(v2, Py_NewRef(value));  /* steals the new reference */
            PyErr_Restore(t2, v2, tb2);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(type, value, tb);
    return 0;
}

static PyObject *merge_next(MergeScan *m) {
    if (m->busy) {
        PyErr_SetString(PyExc_ValueError, "MergeScan already executing");
        return NULL;
    }
    if (m->err_type != NULL) {  /* it raised before: the same error again */
        PyErr_Restore(Py_NewRef(m->err_type), Py_XNewRef(m->err_value), Py_XNewRef(m->err_tb));
        return NULL;
    }
    m->busy = 1;
    PyObject *out = NULL;
    if (m->guard != NULL && m->until_guard == 0) {
        if (run_guard(m) < 0)
            goto done;
        m->until_guard = m->guard_every;
        m->guard_every = m->guard_every * 4 < GUARD_MAX ? m->guard_every * 4 : GUARD_MAX;
    }
    out = merge_step(m);
    if (m->guard != NULL) {
        if (out != NULL)
            m->until_guard--;
        else if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OSError))
            run_guard(m);  /* the end, or an IO error: a close() in between wins */
    }
done:
    m->busy = 0;
    if (out == NULL && PyErr_Occurred()
            && (PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        m->err_type = Py_NewRef(type);
        m->err_value = Py_XNewRef(value);
        m->err_tb = Py_XNewRef(tb);
        PyErr_Restore(type, value, tb);
    }
    return out;
}

/* <0 if key a comes before key b in the scan's direction, 0 if equal, >0 if after */
static inline int scan_order(const MergeScan *m, const Source *a, const Source *b) {
    int c = keycmp(a->key, a->klen, b->key, b->klen);
    return m->reverse ? -c : c;
}

/* Note how far source `s`, which holds the next key alone with `runner`'s head after it,
 * goes on alone in its current block: up to its last entry in range if that entry's key
 * too comes before the runner's head -- and so before every other source's head, since
 * the runner's is the first of them and heads only move on in scan order.  next_source
 * then takes those entries without comparing each with the runner's head (a series'
 * points come from one table at a time, in runs of whole blocks).  Once per block: a
 * block whose run stops short is not looked at again. */
static void note_run(MergeScan *m, Source *s, const Source *runner) {
    s->span_known = 1;
    int64_t edge = m->reverse ? s->lo : s->hi - 1;
    const uint8_t *k;
    Py_ssize_t n;
    int before = 0;
    if (s->kind == SRC_TABLE && block_key(&s->bv, (uint32_t)edge, &k, &n) == 0) {
        int c = keycmp(k, n, runner->key, runner->klen);
        before = m->reverse ? c > 0 : c < 0;
    }
    /* (damaged key offsets at the edge: no run; the entry's own read reports them) */
    s->span_end = before ? edge : (m->reverse ? INT64_MAX : -1);
}

static inline int in_run(const MergeScan *m, const Source *s) {
    return s->span_known && (m->reverse ? s->pos >= s->span_end : s->pos <= s->span_end);
}

/* The source whose head comes next (smallest key; largest in reverse), or NULL when every
 * source is done.  *alone: no other source's head has that key (m->lead and m->runner then
 * remember the step for the next one). */
static Source *next_source(MergeScan *m, int *alone) {
    Source *lead = m->lead, *runner = m->runner;
    if (lead != NULL && !lead->done) {
        if (runner == NULL || in_run(m, lead)) {
            *alone = 1;
            return lead;
        }
        if (!runner->done && scan_order(m, lead, runner) < 0) {
            if (!lead->span_known)  /* alone a second time in a row: how far it goes on */
                note_run(m, lead, runner);
            *alone = 1;
            return lead;
        }
    }
    Source *best = NULL, *second = NULL;
    int tie = 0;
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        Source *s = &m->src[i];
        if (s->done)
            continue;
        if (best == NULL) {
            best = s;
            continue;
        }
        int c = scan_order(m, s, best);
        if (c < 0) {  /* every source seen comes at or after best, so best is second now */
            second = best;
            best = s;
            tie = 0;
        } else if (c == 0) {
            tie = 1;
        } else if (second == NULL || scan_order(m, s, second) < 0) {
            second = s;
        }
    }
    *alone = best != NULL && !tie;
    m->lead = *alone ? best : NULL;
    m->runner = *alone ? second : NULL;
    return best;
}

/* One of m->pairs that only the scan still holds (emit_pair refills it), or NULL. */
static PyObject *free_pair(const MergeScan *m) {
    PyObject *t = NULL;
    for (int i = 0; i < 2; i++)
        if (m->pairs[i] != NULL && Py_REFCNT(m->pairs[i]) == 1)
            t = m->pairs[i];
    return t;
}

/* The key object of the pair tuple `t` (or NULL) if it may be rewritten in place for a key
 * of `n` bytes: nothing but that tuple holds it and it has the length (as the tuple itself
 * is reused, nobody can see the change, and a series' keys all have one length); else NULL. */
static inline PyObject *rewritable_key(PyObject *t, Py_ssize_t n) {
    PyObject *old = t != NULL ? PyTuple_GET_ITEM(t, 0) : NULL;
    return old != NULL && PyBytes_CheckExact(old) && Py_REFCNT(old) == 1 && PyBytes_GET_SIZE(old) == n
           ? old : NULL;
}

/* `old` (rewritable_key's) rewritten to the key at `k`: a new reference. */
static inline PyObject *rewrite_key(PyObject *old, const uint8_t *k, Py_ssize_t n) {
    memcpy(PyBytes_AS_STRING(old), k, (size_t)n);
    /* the hash a dict or set lookup cached in it belongs to the old key (ob_shash: deprecated
     * for readers since 3.11, still the cache bytes' tp_hash reads) */
_Py_COMP_DIAG_PUSH
_Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)old)->ob_shash = -1;
_Py_COMP_DIAG_POP
    return Py_NewRef(old);
}

/* The key object of an entry (a new reference): the key of `t`, the pair tuple the entry
 * will refill (or NULL), rewritten in place where rewritable_key allows, else a new bytes.
 * Saves an allocation and a free per entry. */
static inline PyObject *entry_key(PyObject *t, const uint8_t *k, Py_ssize_t n) {
    PyObject *old = rewritable_key(t, n);
    return old != NULL ? rewrite_key(old, k, n) : PyBytes_FromStringAndSize((const char *)k, n);
}

/* The tuple (key, value), stealing both references: `t` refilled (free_pair's, or NULL),
 * else a new tuple (kept in m->pairs in place of the older one). */
static PyObject *emit_pair(MergeScan *m, PyObject *t, PyObject *key, PyObject *value) {
    if (t != NULL) {
        PyObject *old_key = PyTuple_GET_ITEM(t, 0), *old_value = PyTuple_GET_ITEM(t, 1);
        PyTuple_SET_ITEM(t, 0, key);
        PyTuple_SET_ITEM(t, 1, value);
        Py_DECREF(old_key);  /* bytes (or None): their release runs no Python code */
        Py_DECREF(old_value);
        /* The collector untracks a tuple whose items it need not follow; one holding a key
         * (always bytes) and a bytes value needs no tracking either, so only another value
         * (a memtable run's, not checked to be bytes) has it tracked again.  (The check of
         * the tracked bit is a function call in 3.11: a bytes check first saves it per entry.) */
        if (!PyBytes_CheckExact(value) && !PyObject_GC_IsTracked(t))
            PyObject_GC_Track(t);
        return Py_NewRef(t);
    }
    t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(key);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, key);
    PyTuple_SET_ITEM(t, 1, value);
    Py_XSETREF(m->pairs[1], m->pairs[0]);
    m->pairs[0] = Py_NewRef(t);
    return t;
}

/* The key to emit with m->skip bytes cut off: `*key`/`*klen` moved past them, and a memtable
 * run's key object (`*key_obj`) dropped, so that the emitted key is made from the bytes
 * left.  A key shorter than the skip is no key of the scan's bounds: ValueError, never a read
 * outside it. */
static int skip_key(MergeScan *m, PyObject **key_obj, const uint8_t **key, Py_ssize_t *klen) {
    if (*klen < m->skip) {
        PyErr_Format(PyExc_ValueError, "a key of %zd bytes is shorter than skip (%zd)", *klen, m->skip);
        return -1;
    }
    if (*key_obj != NULL) {  /* a run's key: `key` is kbuf, a copy of it */
        Py_CLEAR(*key_obj);
    }
    *key += m->skip;
    *klen -= m->skip;
    return 0;
}

static PyObject *merge_step(MergeScan *m) {
    while (!m->finished && m->remaining != 0) {
        int alone;
        Source *best = next_source(m, &alone);
        if (best == NULL)
            break;
        Py_ssize_t klen = best->klen;
        const uint8_t *key;
        PyObject *value = NULL, *key_obj = NULL, *t = NULL, *held = NULL, *old;
        if (alone && best->kind == SRC_TABLE && !m->keys_only && m->skip == 0 && (t = free_pair(m)) != NULL
                && (old = rewritable_key(t, klen)) != NULL) {
            /* A table's key alone (a series' points): written straight into the free pair's
             * key object, which outlives the block the advance below may leave -- instead of
             * into kbuf first and from there into the key object.  The pair is held (a
             * Python call during the advance may run), and refilled below only if nothing
             * else took it meanwhile. */
            held = Py_NewRef(t);
            key_obj = rewrite_key(old, best->key, klen);
            key = bytes_ptr(key_obj);
        } else {
            t = NULL;
            if (keep_key(m, best->key, klen) < 0)
                return NULL;
            key = m->kbuf;
        }
        /* every entry of the key: keep the newest visible one (only `best` has the key when
         * it is alone) */
        int have = 0;
        uint64_t have_v = 0;
        Py_ssize_t from = alone ? best - m->src : 0, to = alone ? from + 1 : m->nsrc;
        for (Py_ssize_t i = from; i < to; i++) {
            Source *s = &m->src[i];
            int head = alone;  /* the lone source's head is the key itself: no comparison */
            while (!s->done && (head || keyeq(s->key, s->klen, key, klen))) {
                head = 0;
                uint64_t v = s->version;
                if (v <= m->version && (!have || v > have_v)) {
                    PyObject *val = head_value(m, s, &key_obj);
                    if (val == NULL)
                        goto error;
                    Py_XSETREF(value, val);
                    have = 1;
                    have_v = v;
                }
                if (source_advance(m, s) < 0)
                    goto error;
            }
        }
        if (held != NULL) {  /* the pair taken above: still free if only the scan and we hold it */
            if (Py_REFCNT(held) != 2)
                t = NULL;  /* emit_pair makes a new tuple (the key object stays as it is) */
            Py_CLEAR(held);
        }
        if (!have || value == Py_None || have_v < m->floor) {
            Py_XDECREF(value);
            Py_XDECREF(key_obj);
            continue;
        }
        if (m->skip && skip_key(m, &key_obj, &key, &klen) < 0)
            goto error;
        /* (no Python code runs from here to emit_pair: `t` stays free) */
        if (t == NULL && key_obj == NULL && !m->keys_only)
            t = free_pair(m);
        if (key_obj == NULL && (key_obj = entry_key(t, key, klen)) == NULL)
            goto error;
        if (m->remaining > 0)
            m->remaining--;
        if (m->keys_only) {
            Py_DECREF(value);
            return key_obj;
        }
        PyObject *pair = emit_pair(m, t, key_obj, value);
        if (pair == NULL)
            merge_clear(m);
        return pair;
    error:
        Py_XDECREF(value);
        Py_XDECREF(key_obj);
        Py_XDECREF(held);
        merge_clear(m);
        return NULL;
    }
    if (!m->finished)
        merge_clear(m);  /* release blocks and iterators as soon as the scan ends */
    return NULL;
}

static PyTypeObject MergeScanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.MergeScan",
    .tp_basicsize = sizeof(MergeScan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "MergeScan(sources, start, end, version, floor, reverse=False, limit=None, "
              "keys_only=False, keepalive=None, guard=None, skip=0): an iterator of the live (key, value) pairs of "
              "sources (newest first: TableCore objects or iterators of runs) in [start, end), each key without "
              "its first `skip` bytes; `guard()` runs "
              "before the first entry, every 16 to 1024 entries after, at the end and after an IO error",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)merge_init,
    .tp_vectorcall = merge_vectorcall,
    .tp_dealloc = (destructor)merge_dealloc,
    .tp_traverse = (traverseproc)merge_traverse,
    .tp_clear = (inquiry)merge_gc_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)merge_next,
};

/* ---------------------------------------------------------------------------------------- */
/* the write path: WAL record payloads, the flush's key sort and columns                     */
/*
 * WAL record payload (lsm/wal.py is the authoritative grammar; little-endian):
 *
 *   record := format:u8 (=1) flags:u8 (=0) count:u32 version:u64 commit_ms:u64
 *             entry{count}
 *   entry  := kind:u8 (1 value, 2 tombstone) keyspace:u32 key_len:u32 value_len:u32 key value
 */

enum { WAL_HEADER = BS_WAL_HEADER, WAL_ENTRY = BS_WAL_ENTRY };  /* native/walrecord.h */

static int as_u64(PyObject *o, const char *name, uint64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    *out = PyLong_AsUnsignedLongLong(o);
    if (*out == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s does not fit in 64 unsigned bits", name);
        return -1;
    }
    return 0;
}

static int as_u32(PyObject *o, const char *name, uint32_t *out) {
    uint64_t v;
    if (as_u64(o, name, &v) < 0)
        return -1;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s does not fit in 32 unsigned bits", name);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* checks an entry's key and value; returns its encoded size or -1 */
static Py_ssize_t wal_entry_size(PyObject *key, PyObject *value) {
    if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
        PyErr_SetString(PyExc_TypeError, "WAL keys and values must be bytes (value None: a tombstone)");
        return -1;
    }
    Py_ssize_t k = PyBytes_GET_SIZE(key), v = value == Py_None ? 0 : PyBytes_GET_SIZE(value);
    if ((uint64_t)k > UINT32_MAX || (uint64_t)v > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "WAL key or value of 4 GiB or more");
        return -1;
    }
    return WAL_ENTRY + k + v;
}

static uint8_t *wal_put_entry(uint8_t *p, uint32_t ks, PyObject *key, PyObject *value) {
    return bs_wal_put_entry(p, ks, PyBytes_AS_STRING(key), (uint32_t)PyBytes_GET_SIZE(key),
                            value == Py_None ? NULL : PyBytes_AS_STRING(value),
                            value == Py_None ? 0 : (uint32_t)PyBytes_GET_SIZE(value));
}

static void wal_put_header(uint8_t *p, uint32_t count, uint64_t version, uint64_t ms) {
    bs_wal_put_header(p, count, version, ms);
}

/* wal_encode_one(version, commit_ms, keyspace, key, value) -> bytes: lsm.wal.encode_one */
static PyObject *native_wal_encode_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "wal_encode_one(version, commit_ms, keyspace, key, value)");
        return NULL;
    }
    uint64_t version, ms;
    uint32_t ks;
    if (as_u64(args[0], "version", &version) < 0 || as_u64(args[1], "commit_ms", &ms) < 0
            || as_u32(args[2], "keyspace", &ks) < 0)
        return NULL;
    Py_ssize_t size = wal_entry_size(args[3], args[4]);
    if (size < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, WAL_HEADER + size);
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    wal_put_header(p, 1, version, ms);
    wal_put_entry(p + WAL_HEADER, ks, args[3], args[4]);
    return out;
}

/* wal_encode_batch(version, commit_ms, ops) -> bytes: lsm.wal.encode_batch; ops is a list
 * of (keyspace, key, value) tuples */
static PyObject *native_wal_encode_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wal_encode_batch(version, commit_ms, ops)");
        return NULL;
    }
    uint64_t version, ms;
    if (as_u64(args[0], "version", &version) < 0 || as_u64(args[1], "commit_ms", &ms) < 0)
        return NULL;
    PyObject *ops = PySequence_Fast(args[2], "ops must be a sequence of (keyspace, key, value)");
    if (ops == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ops), total = WAL_HEADER;
    PyObject *out = NULL;
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many ops in one WAL record");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = PySequence_Fast_GET_ITEM(ops, i);
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) != 3) {
            PyErr_SetString(PyExc_TypeError, "each op must be a (keyspace, key, value) tuple");
            goto done;
        }
        uint32_t ks;
        if (as_u32(PyTuple_GET_ITEM(op, 0), "keyspace", &ks) < 0)
            goto done;
        Py_ssize_t size = wal_entry_size(PyTuple_GET_ITEM(op, 1), PyTuple_GET_ITEM(op, 2));
        if (size < 0)
            goto done;
        total += size;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    wal_put_header(p, (uint32_t)n, version, ms);
    p += WAL_HEADER;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = PySequence_Fast_GET_ITEM(ops, i);
        p = wal_put_entry(p, (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(op, 0)),
                          PyTuple_GET_ITEM(op, 1), PyTuple_GET_ITEM(op, 2));
    }
done:
    Py_DECREF(ops);
    return out;
}

/* -- the flush: sorting keys with the GIL released ---------------------------------------- */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    PyObject *obj;
} KeyRef;

static int keyref_cmp(const void *a, const void *b) {
    const KeyRef *x = a, *y = b;
    return keycmp(x->p, x->n, y->p, y->n);
}

/* sort_keys(keys: list[bytes]) -> a new sorted list.  The sort runs with the GIL released
 * (bytes are immutable and the input list keeps them alive), so a flush's sort does not
 * stop the writer's thread.  Equal keys keep no particular order (callers pass distinct
 * keys). */
static PyObject *native_sort_keys(PyObject *self, PyObject *arg) {
    if (!PyList_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "sort_keys(keys: list[bytes])");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    KeyRef *refs = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(KeyRef));
    if (refs == NULL)
        return PyErr_NoMemory();
    PyObject *keep = PyList_GetSlice(arg, 0, n);  /* a private copy: the caller may mutate arg */
    if (keep == NULL) {
        PyMem_RawFree(refs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keep, i);
        if (!PyBytes_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "sort_keys: every key must be bytes");
            Py_DECREF(keep);
            PyMem_RawFree(refs);
            return NULL;
        }
        refs[i].p = (const uint8_t *)PyBytes_AS_STRING(k);
        refs[i].n = PyBytes_GET_SIZE(k);
        refs[i].obj = k;
    }
    Py_BEGIN_ALLOW_THREADS
    qsort(refs, (size_t)n, sizeof(KeyRef), keyref_cmp);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(refs[i].obj);
        PyObject *old = PyList_GET_ITEM(keep, i);
        PyList_SET_ITEM(keep, i, refs[i].obj);
        Py_DECREF(old);
    }
    PyMem_RawFree(refs);
    return keep;
}

/* flush_columns(data: dict[bytes, tuple | list], keys: list[bytes]) -> (keys, versions, values):
 * a memtable's entries in table order (lsm/memtable.py: a key's entries are flat and
 * ascending, (v1, value1) or [v1, value1, v2, value2, ...]; a key's versions go out
 * newest first). */
static PyObject *native_flush_columns(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "flush_columns(data: dict, keys: list)");
        return NULL;
    }
    PyObject *data = args[0], *keys = args[1];
    Py_ssize_t n = PyList_GET_SIZE(keys), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lst = PyDict_GetItemWithError(data, PyList_GET_ITEM(keys, i));
        if (lst == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "flush_columns: a key is not in the memtable");
            return NULL;
        }
        if (!(PyList_CheckExact(lst) || PyTuple_CheckExact(lst)) || PySequence_Fast_GET_SIZE(lst) < 2
                || PySequence_Fast_GET_SIZE(lst) % 2) {
            PyErr_SetString(PyExc_ValueError, "flush_columns: a memtable entry list is malformed");
            return NULL;
        }
        total += PySequence_Fast_GET_SIZE(lst) / 2;
    }
    PyObject *ok = PyList_New(total), *ov = PyList_New(total), *ox = PyList_New(total);
    if (ok == NULL || ov == NULL || ox == NULL)
        goto fail;
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        PyObject *lst = PyDict_GetItem(data, k);  /* present: checked above */
        if (lst != NULL && !PyList_CheckExact(lst) && !PyTuple_CheckExact(lst)) {
            PyErr_SetString(PyExc_RuntimeError, "flush_columns: the memtable changed");
            goto fail;
        }
        Py_ssize_t m = lst == NULL ? 0 : PySequence_Fast_GET_SIZE(lst);
        for (Py_ssize_t e = m - 2; e >= 0; e -= 2) {
            if (j >= total) {  /* the memtable changed under us: it must be immutable */
                PyErr_SetString(PyExc_RuntimeError, "flush_columns: the memtable changed");
                goto fail;
            }
            PyList_SET_ITEM(ok, j, Py_NewRef(k));
            PyList_SET_ITEM(ov, j, Py_NewRef(PySequence_Fast_GET_ITEM(lst, e)));
            PyList_SET_ITEM(ox, j, Py_NewRef(PySequence_Fast_GET_ITEM(lst, e + 1)));
            j++;
        }
    }
    if (j != total) {
        PyErr_SetString(PyExc_RuntimeError, "flush_columns: the memtable changed");
        goto fail;
    }
    return Py_BuildValue("(NNN)", ok, ov, ox);
fail:
    Py_XDECREF(ok);
    Py_XDECREF(ov);
    Py_XDECREF(ox);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"bind", native_bind, METH_VARARGS,
     "bind(Block, CorruptionError, hash_fn, MISS, posix_file_type=None, lazy_block_type=None): "
     "hand over the Python objects the core uses (a cache miss builds a lazy_block_type)"},
    {"block_lookup", (PyCFunction)(void (*)(void))native_block_lookup, METH_FASTCALL,
     "block_lookup(block, key, version) -> (found, value, version) | MISS: Block.lookup"},
    {"lz4_decompress", native_lz4_decompress, METH_O,
     "lz4_decompress(body) -> bytes | None: an lz4 block body (u32le size + block) as a table read "
     "decodes it; None where it leaves the body to the lz4 package (damage)"},
    {"block_from_payload", native_block_from_payload, METH_O,
     "block_from_payload(data) -> Block: the cached form a cache miss builds (tests)"},
    {"block_lookup_payload", (PyCFunction)(void (*)(void))native_block_lookup_payload, METH_FASTCALL,
     "block_lookup_payload(data, key, version) -> (found, value, version) | MISS"},
    {"wal_encode_one", (PyCFunction)(void (*)(void))native_wal_encode_one, METH_FASTCALL,
     "wal_encode_one(version, commit_ms, keyspace, key, value) -> bytes: lsm.wal.encode_one"},
    {"wal_encode_batch", (PyCFunction)(void (*)(void))native_wal_encode_batch, METH_FASTCALL,
     "wal_encode_batch(version, commit_ms, ops) -> bytes: lsm.wal.encode_batch"},
    {"sort_keys", native_sort_keys, METH_O,
     "sort_keys(keys) -> sorted copy; sorts with the GIL released"},
    {"flush_columns", (PyCFunction)(void (*)(void))native_flush_columns, METH_FASTCALL,
     "flush_columns(data, sorted_keys) -> (keys, versions, values) in table order"},
    {"tables_get", (PyCFunction)(void (*)(void))native_tables_get, METH_FASTCALL,
     "tables_get(cores, key, version) -> value | None: the newest table answer"},
    {"tables_entry", (PyCFunction)(void (*)(void))native_tables_entry, METH_FASTCALL,
     "tables_entry(cores, key, version) -> (found, value, version) | MISS"},
    {"tables_multi_get", (PyCFunction)(void (*)(void))native_tables_multi_get, METH_FASTCALL,
     "tables_multi_get(cores, keys, version, read_batch) -> [(found, value, version) | MISS]: "
     "multi_get's tables part, the misses read with one read_batch call"},
    {NULL}
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "banyanstore._native",
    "The optional compiled core of banyanstore (see banyanstore.accel).", -1, native_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&CountersType) < 0 || PyType_Ready(&TableCoreType) < 0
            || PyType_Ready(&MergeScanType) < 0)
        return NULL;
    str_path = PyUnicode_InternFromString("path");
    str_offset = PyUnicode_InternFromString("offset");
    str_fd = PyUnicode_InternFromString("fd");
    zero = PyLong_FromLong(0);
    if (str_path == NULL || str_offset == NULL || str_fd == NULL || zero == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Counters", (PyObject *)&CountersType) < 0
            || PyModule_AddObjectRef(m, "TableCore", (PyObject *)&TableCoreType) < 0
            || PyModule_AddObjectRef(m, "MergeScan", (PyObject *)&MergeScanType) < 0
            || bs_logframe_init(m) < 0
            || bs_memtable_init(m) < 0
            || bs_blockcache_init(m) < 0
            || bs_tablebuild_init(m) < 0
            || bs_mergebuild_init(m) < 0
            || bs_putpath_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

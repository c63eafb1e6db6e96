/* banyanstore._native.TableBuild: a flush's table contents built from a flush buffer in C.
 *
 * A memtable flush hands the table builder ONE flush buffer (lsm/flushbuf.py):
 *
 *   flush_buffer := magic:"BSMF" format:u32(=1) count:u64 entry{count}
 *   entry        := version:u64 klen:u32 vlen:u32 key:(klen bytes) value:(vlen bytes)
 *                   (vlen = 0xFFFFFFFF: a tombstone, no value bytes)
 *
 * TableBuild(buf, ...) checks the buffer as decode_flush_buffer() does (same ValueError
 * texts), then everything TableBuilder.add_sorted_columns checks (key order, version runs,
 * key and value sizes, the version range: the same ValueError texts, in the same order),
 * cuts the entries into data blocks at exactly the entries add_sorted_columns cuts at,
 * and builds the bloom filter payload (sstable/bloom.py's build_filter, byte for byte).
 * Iterating it yields each data block's payload, byte for byte what sstable/block.py's
 * encode_block makes of the same entries:
 *
 *   block  := count:u32 key_width:u32 value_width:u32 flags:u32
 *             versions:(count x u64)
 *             keys    (flags & 1 ? count x key_width : offsets:(count+1) x u32 heap)
 *             values  (flags & 2 ? count x value_width : offsets:(count+1) x u32 heap)
 *             kinds   (flags & 4 ? count x u8, 1 = tombstone)
 *   filter := k:u32 table_bits:u32 word_count:u64 words:(word_count x u64)
 *
 * Compressing and checksumming a block stays with the Python caller (format.wrap_block),
 * so the table file is the pure builder's, byte for byte.  encode_block(keys, versions,
 * values) is the same block encoder for the table builder's other entries (compaction's
 * output, given one by one), from Python lists.
 *
 * The filter hash is xxh3_64 of the key.  It is called straight through the C function
 * the xxhash package's extension exports (XXH3_64bits, looked up once with dlsym and
 * checked against xxhash.xxh3_64_intdigest on 0..300-byte inputs first), so hashing runs
 * with the GIL released; where that symbol is missing or disagrees, every distinct key
 * goes through xxhash.xxh3_64_intdigest with the GIL held.
 *
 * Concurrency: the buffer must be bytes (immutable), so the passes over it run with the
 * GIL released: the validation pass (which also hashes), the filter, each block's fill.
 * A TableBuild is used by one thread (the flush's).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "byteorder.h"
#include "tablebuild.h"

enum {
    FLUSH_HEADER = 16, FLUSH_ENTRY = 16,
    BLOCK_HEADER = 16, PER_ENTRY = 17,       /* u64 version + two u32 offsets + a kind byte */
    EMPTY_BLOCK = BLOCK_HEADER + 8,          /* header + the extra offset of each offsets array */
    FIXED_KEYS = 1, FIXED_VALUES = 2, TOMBSTONES = 4,
    MAX_TOMBSTONE_PADDING = 4096,            /* sstable/block.py's _MAX_TOMBSTONE_PADDING */
    TABLE_BITS = 14, MAX_PROBES = 16,        /* sstable/bloom.py */
    HASH_CHECK_LEN = 300,
};
#define TOMBSTONE_LEN 0xFFFFFFFFu


/* ---------------------------------------------------------------------------------------- */
/* the filter hash                                                                          */

typedef uint64_t (*xxh3_fn)(const void *, size_t);
static xxh3_fn direct_xxh3 = NULL;   /* XXH3_64bits of the xxhash extension, once checked */
static PyObject *py_xxh3 = NULL;     /* xxhash.xxh3_64_intdigest */
static int hash_ready = 0;

static int py_hash(const uint8_t *p, size_t n, uint64_t *out) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (key == NULL)
        return -1;
    PyObject *h = PyObject_CallOneArg(py_xxh3, key);
    Py_DECREF(key);
    if (h == NULL)
        return -1;
    *out = PyLong_AsUnsignedLongLong(h);
    Py_DECREF(h);
    return *out == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* Find xxhash's own XXH3_64bits and keep it only if it agrees with xxh3_64_intdigest on
 * inputs of every length XXH3 treats differently (0..16, 17..128, 129..240, longer). */
int bs_key_hash(const uint8_t *p, size_t n, int direct, uint64_t *out) {
    if (direct && direct_xxh3 != NULL) {
        *out = direct_xxh3(p, n);
        return 0;
    }
    return py_hash(p, n, out);
}

static xxh3_fn find_direct_xxh3(PyObject *ext) {
    PyObject *file = PyObject_GetAttrString(ext, "__file__");
    if (file == NULL || !PyUnicode_Check(file)) {
        Py_XDECREF(file);
        PyErr_Clear();
        return NULL;
    }
    const char *path = PyUnicode_AsUTF8(file);
    void *lib = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    Py_DECREF(file);
    PyErr_Clear();
    if (lib == NULL)
        return NULL;
    xxh3_fn fn;
    *(void **)&fn = dlsym(lib, "XXH3_64bits");
    if (fn == NULL)
        return NULL;  /* the handle stays open: the extension is loaded for good anyway */
    uint8_t sample[HASH_CHECK_LEN];
    for (int i = 0; i < HASH_CHECK_LEN; i++)
        sample[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= HASH_CHECK_LEN; n++) {
        uint64_t want;
        if (py_hash(sample, n, &want) < 0) {
            PyErr_Clear();
            return NULL;
        }
        if (fn(sample, n) != want)
            return NULL;
    }
    return fn;
}

int bs_hash_init(void) {
    if (hash_ready)
        return 0;
    PyObject *mod = PyImport_ImportModule("xxhash");
    if (mod == NULL)
        return -1;
    py_xxh3 = PyObject_GetAttrString(mod, "xxh3_64_intdigest");
    Py_DECREF(mod);
    if (py_xxh3 == NULL)
        return -1;
    PyObject *ext = PyImport_ImportModule("xxhash._xxhash");
    if (ext == NULL)
        PyErr_Clear();
    else {
        direct_xxh3 = find_direct_xxh3(ext);
        Py_DECREF(ext);
    }
    hash_ready = 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* the object                                                                               */

typedef struct {
    PyObject_HEAD
    PyObject *buf;             /* the flush buffer (bytes) */
    const uint8_t *base;
    uint64_t *entry_at;        /* entry i's header offset in buf */
    Py_ssize_t *block_end;     /* block b holds entries [block_end[b-1], block_end[b]) */
    Py_ssize_t entries, blocks, next_block;
    EntryRef *refs;            /* the next block's entries (scratch) */
    Py_ssize_t refs_cap;
    unsigned long long tombstones, keys, raw_size, min_version, max_version;
    PyObject *smallest, *largest, *filter, *last_keys, *last_versions;
} TableBuildObject;

static inline uint32_t entry_klen(const TableBuildObject *t, Py_ssize_t i) {
    return bs_load_le32(t->base + t->entry_at[i] + 8);
}

static inline uint32_t entry_vlen(const TableBuildObject *t, Py_ssize_t i) {
    return bs_load_le32(t->base + t->entry_at[i] + 12);
}

static inline const uint8_t *entry_key(const TableBuildObject *t, Py_ssize_t i) {
    return t->base + t->entry_at[i] + FLUSH_ENTRY;
}

static inline uint64_t entry_version(const TableBuildObject *t, Py_ssize_t i) {
    return bs_load_le64(t->base + t->entry_at[i]);
}

/* What the validation pass found (filled with the GIL released, raised after). */
typedef struct {
    Py_ssize_t bad_offset;      /* >= 0: the buffer does not parse there ... */
    const char *bad_why;        /* ... for this reason */
    int descending;             /* some key is below the key before it */
    Py_ssize_t bad_run;         /* > 0: entry repeating its key with a version not below */
    uint64_t max_klen, max_vlen;
    uint64_t *hashes;           /* one per distinct key when hashing directly, else NULL */
} Scan;

static int keycmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen) {
    uint32_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (alen > blen) - (alen < blen);
}

/* One pass over the buffer (no Python objects: GIL released): the entries' offsets, the
 * block cuts, the properties, the order checks and (directly) the key hashes. */
static void scan_buffer(TableBuildObject *t, Py_ssize_t size, Py_ssize_t block_size, Scan *s) {
    const uint8_t *base = t->base;
    Py_ssize_t off = FLUSH_HEADER, n = t->entries, block_start = 0;
    long long budget = (long long)block_size - EMPTY_BLOCK, acc = 0;
    const uint8_t *prev_key = NULL;
    uint32_t prev_klen = 0;
    uint64_t prev_version = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (size - off < FLUSH_ENTRY) {
            s->bad_offset = off;
            s->bad_why = "entry header past the end";
            return;
        }
        uint64_t version = bs_load_le64(base + off);
        uint32_t klen = bs_load_le32(base + off + 8), vlen = bs_load_le32(base + off + 12);
        uint64_t vsize = vlen == TOMBSTONE_LEN ? 0 : vlen;
        if ((uint64_t)(size - off - FLUSH_ENTRY) < klen + vsize) {
            s->bad_offset = off;
            s->bad_why = "entry past the end";
            return;
        }
        const uint8_t *key = base + off + FLUSH_ENTRY;
        t->entry_at[i] = (uint64_t)off;
        int c = prev_key == NULL ? 1 : keycmp(key, klen, prev_key, prev_klen);
        if (c < 0)
            s->descending = 1;
        else if (c == 0) {
            if (version >= prev_version && !s->bad_run)
                s->bad_run = i;
        } else {
            if (s->hashes)
                s->hashes[t->keys] = direct_xxh3(key, klen);
            t->keys++;
        }
        prev_key = key;
        prev_klen = klen;
        prev_version = version;
        if (vlen == TOMBSTONE_LEN)
            t->tombstones++;
        if (klen > s->max_klen)
            s->max_klen = klen;
        if (vsize > s->max_vlen)
            s->max_vlen = vsize;
        if (version < t->min_version)
            t->min_version = version;
        if (version > t->max_version)
            t->max_version = version;
        t->raw_size += klen + vsize;
        acc += (long long)(klen + vsize) + PER_ENTRY;
        if (acc >= budget) {  /* add_sorted_columns closes the block after this entry */
            t->block_end[t->blocks++] = i + 1;
            block_start = i + 1;
            acc = 0;
        }
        off += FLUSH_ENTRY + (Py_ssize_t)(klen + vsize);
    }
    if (block_start < n)
        t->block_end[t->blocks++] = n;
    if (off != size) {
        s->bad_offset = off;
        s->bad_why = "trailing bytes";
    }
}

static PyObject *key_bytes(TableBuildObject *t, Py_ssize_t i) {
    return PyBytes_FromStringAndSize((const char *)entry_key(t, i), entry_klen(t, i));
}

/* The ValueError add_sorted_columns raises for what the scan found, or 0. */
static int raise_scan_error(TableBuildObject *t, const Scan *s, unsigned long long max_key,
                            unsigned long long max_value) {
    if (s->bad_offset >= 0) {
        PyErr_Format(PyExc_ValueError, "flush buffer: %s at offset %zd", s->bad_why, s->bad_offset);
        return -1;
    }
    if (s->descending) {
        PyErr_SetString(PyExc_ValueError, "keys are not in ascending order");
        return -1;
    }
    if (s->bad_run) {
        PyObject *key = key_bytes(t, s->bad_run);
        if (key == NULL)
            return -1;
        PyErr_Format(PyExc_ValueError, "out of order: %R@%llu after %R@%llu", key,
                     (unsigned long long)entry_version(t, s->bad_run), key,
                     (unsigned long long)entry_version(t, s->bad_run - 1));
        Py_DECREF(key);
        return -1;
    }
    if (s->max_klen > max_key) {
        PyErr_Format(PyExc_ValueError, "key of %llu bytes exceeds max_key_size %llu",
                     (unsigned long long)s->max_klen, max_key);
        return -1;
    }
    if (s->max_vlen > max_value) {
        PyErr_Format(PyExc_ValueError, "value of %llu bytes exceeds max_value_size %llu",
                     (unsigned long long)s->max_vlen, max_value);
        return -1;
    }
    if (t->entries && t->min_version == 0) {
        PyErr_SetString(PyExc_ValueError, "versions must be in 1 .. 2**64-1");
        return -1;
    }
    return 0;
}

/* The hashes of the distinct keys through xxh3_64_intdigest (GIL held): when the direct
 * function is not there. */
static int hash_in_python(TableBuildObject *t, uint64_t *hashes) {
    Py_ssize_t h = 0;
    for (Py_ssize_t i = 0; i < t->entries; i++) {
        if (i && keycmp(entry_key(t, i), entry_klen(t, i), entry_key(t, i - 1), entry_klen(t, i - 1)) == 0)
            continue;
        if (py_hash(entry_key(t, i), entry_klen(t, i), &hashes[h++]) < 0)
            return -1;
    }
    return 0;
}

/* build_filter(hashes, keys, bits_per_key) of sstable/bloom.py with its mask table. */
PyObject *bs_build_filter(const uint64_t *hashes, uint64_t count, unsigned bits_per_key,
                              unsigned k, const uint64_t *masks) {
    uint64_t nwords = (count * bits_per_key + 63) / 64;
    if (nwords < 1)
        nwords = 1;
    if (nwords > (uint64_t)(PY_SSIZE_T_MAX - 16) / 8)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(16 + 8 * nwords));
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    bs_store_le32(p, k);
    bs_store_le32(p + 4, TABLE_BITS);
    bs_store_le64(p + 8, nwords);
    Py_BEGIN_ALLOW_THREADS
    uint64_t *words = PyMem_RawCalloc((size_t)nwords, 8);
    if (words != NULL) {
        for (uint64_t i = 0; i < count; i++) {
            uint64_t h = hashes[i];
            words[h % nwords] |= bs_load_le64(masks + (h >> (64 - TABLE_BITS)));
        }
        for (uint64_t w = 0; w < nwords; w++)
            bs_store_le64(p + 16 + 8 * w, words[w]);
        PyMem_RawFree(words);
    }
    else
        p = NULL;
    Py_END_ALLOW_THREADS
    if (p == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return out;
}

/* the index's lists: each block's last key and version */
static int index_lists(TableBuildObject *t) {
    t->last_keys = PyList_New(t->blocks);
    t->last_versions = PyList_New(t->blocks);
    if (t->last_keys == NULL || t->last_versions == NULL)
        return -1;
    for (Py_ssize_t b = 0; b < t->blocks; b++) {
        Py_ssize_t last = t->block_end[b] - 1;
        PyObject *key = key_bytes(t, last);
        if (key == NULL)
            return -1;
        PyList_SET_ITEM(t->last_keys, b, key);
        PyObject *v = PyLong_FromUnsignedLongLong(entry_version(t, last));
        if (v == NULL)
            return -1;
        PyList_SET_ITEM(t->last_versions, b, v);
    }
    t->smallest = key_bytes(t, 0);
    t->largest = Py_NewRef(PyList_GET_ITEM(t->last_keys, t->blocks - 1));
    return t->smallest == NULL ? -1 : 0;
}

static void TableBuild_dealloc(TableBuildObject *t) {
    Py_XDECREF(t->buf);
    Py_XDECREF(t->smallest);
    Py_XDECREF(t->largest);
    Py_XDECREF(t->filter);
    Py_XDECREF(t->last_keys);
    Py_XDECREF(t->last_versions);
    PyMem_RawFree(t->entry_at);
    PyMem_RawFree(t->block_end);
    PyMem_RawFree(t->refs);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* Check and take the arguments; -1 with TypeError/ValueError naming the bad one. */
static int parse_args(PyObject *args, PyObject *kwargs, PyObject **buf, Py_ssize_t *block_size,
                      unsigned long long *max_key, unsigned long long *max_value,
                      unsigned *bits_per_key, unsigned *k, Py_buffer *masks, int *direct) {
    static char *kwlist[] = {"buf", "block_size", "max_key_size", "max_value_size",
                             "bloom_bits_per_key", "probes", "masks", "direct_hash", NULL};
    PyObject *masks_obj;
    long long bs, mk, mv, bits, probes;
    *direct = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!LLLLLO|p:TableBuild", kwlist, &PyBytes_Type,
                                     buf, &bs, &mk, &mv, &bits, &probes, &masks_obj, direct))
        return -1;
    const char *bad = bs < 1 ? "block_size" : mk < 0 ? "max_key_size" : mv < 0 ? "max_value_size"
                    : bits < 0 || bits > 1024 ? "bloom_bits_per_key"
                    : bits && (probes < 1 || probes > MAX_PROBES) ? "probes" : NULL;
    if (bad) {
        PyErr_Format(PyExc_ValueError, "TableBuild: %s is out of range", bad);
        return -1;
    }
    masks->obj = NULL;
    if (bits) {
        if (PyObject_GetBuffer(masks_obj, masks, PyBUF_SIMPLE) < 0)
            return -1;
        if (masks->len != (Py_ssize_t)8 << TABLE_BITS) {
            PyBuffer_Release(masks);
            PyErr_SetString(PyExc_ValueError, "TableBuild: masks must hold 2**14 u64 masks");
            return -1;
        }
    }
    *block_size = (Py_ssize_t)bs;
    *max_key = (unsigned long long)mk;
    *max_value = (unsigned long long)mv;
    *bits_per_key = (unsigned)bits;
    *k = (unsigned)probes;
    return 0;
}

static PyObject *TableBuild_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *buf;
    Py_ssize_t block_size;
    unsigned long long max_key, max_value;
    unsigned bits_per_key, k;
    Py_buffer masks;
    int direct;
    if (bs_hash_init() < 0
            || parse_args(args, kwargs, &buf, &block_size, &max_key, &max_value, &bits_per_key, &k,
                          &masks, &direct) < 0)
        return NULL;
    TableBuildObject *t = (TableBuildObject *)type->tp_alloc(type, 0);
    uint64_t *hashes = NULL;
    if (t == NULL)
        goto fail;
    t->buf = Py_NewRef(buf);
    t->base = (const uint8_t *)PyBytes_AS_STRING(buf);
    t->min_version = UINT64_MAX;
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    if (size < FLUSH_HEADER || memcmp(t->base, "BSMF", 4) != 0) {
        PyErr_SetString(PyExc_ValueError, "flush buffer: bad magic or short header at offset 0");
        goto fail;
    }
    if (bs_load_le32(t->base + 4) != 1) {
        PyErr_SetString(PyExc_ValueError, "flush buffer: unknown format at offset 4");
        goto fail;
    }
    uint64_t count = bs_load_le64(t->base + 8);
    if (count > (uint64_t)(size - FLUSH_HEADER) / FLUSH_ENTRY) {
        PyErr_SetString(PyExc_ValueError, "flush buffer: count larger than the buffer at offset 8");
        goto fail;
    }
    t->entries = (Py_ssize_t)count;
    size_t slots = count ? (size_t)count : 1;
    t->entry_at = PyMem_RawMalloc(slots * sizeof(uint64_t));
    t->block_end = PyMem_RawMalloc(slots * sizeof(Py_ssize_t));
    if (bits_per_key)
        hashes = PyMem_RawMalloc(slots * sizeof(uint64_t));
    if (t->entry_at == NULL || t->block_end == NULL || (bits_per_key && hashes == NULL)) {
        PyErr_NoMemory();
        goto fail;
    }
    Scan s = {.bad_offset = -1, .hashes = direct_xxh3 && direct ? hashes : NULL};
    Py_BEGIN_ALLOW_THREADS
    scan_buffer(t, size, block_size, &s);
    Py_END_ALLOW_THREADS
    if (raise_scan_error(t, &s, max_key, max_value) < 0)
        goto fail;
    if (t->entries) {
        if (bits_per_key) {
            if (s.hashes == NULL && hash_in_python(t, hashes) < 0)
                goto fail;
            t->filter = bs_build_filter(hashes, t->keys, bits_per_key, k, masks.buf);
            if (t->filter == NULL)
                goto fail;
        }
        if (index_lists(t) < 0)
            goto fail;
    } else
        t->min_version = 0;
    if (t->filter == NULL)
        t->filter = Py_NewRef(Py_None);
    if (t->smallest == NULL) {
        t->smallest = PyBytes_FromStringAndSize("", 0);
        t->largest = Py_XNewRef(t->smallest);
        t->last_keys = PyList_New(0);
        t->last_versions = PyList_New(0);
        if (t->smallest == NULL || t->last_keys == NULL || t->last_versions == NULL)
            goto fail;
    }
    PyMem_RawFree(hashes);
    if (masks.obj)
        PyBuffer_Release(&masks);
    return (PyObject *)t;
fail:
    PyMem_RawFree(hashes);
    if (masks.obj)
        PyBuffer_Release(&masks);
    Py_XDECREF(t);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* data blocks                                                                              */

typedef struct {
    Py_ssize_t count;
    uint32_t kw, vw, flags, tombstones;
    uint64_t size;
} Layout;

/* What encode_block chooses for entries e[0:count): widths, flags and the payload size;
 * -1 with ValueError when a heap would not fit its u32 offsets. */
static int block_layout(const EntryRef *e, Py_ssize_t count, Layout *l) {
    uint32_t kw = e[0].klen;
    int fixed_keys = 1, fixed_values = 1, have_live = 0;
    uint64_t key_heap = 0, value_heap = 0;
    uint32_t vw = 0, tombstones = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        key_heap += e[i].klen;
        fixed_keys &= e[i].klen == kw;
        if (e[i].value == NULL) {
            tombstones++;
            continue;
        }
        value_heap += e[i].vlen;
        if (!have_live) {
            vw = e[i].vlen;
            have_live = 1;
        }
        fixed_values &= e[i].vlen == vw;
    }
    if (fixed_values && (uint64_t)tombstones * vw > MAX_TOMBSTONE_PADDING)
        fixed_values = 0;
    uint64_t n = (uint64_t)count;
    l->count = count;
    l->tombstones = tombstones;
    l->flags = (fixed_keys ? FIXED_KEYS : 0) | (fixed_values ? FIXED_VALUES : 0)
             | (tombstones ? TOMBSTONES : 0);
    l->kw = fixed_keys ? kw : 0;
    l->vw = fixed_values ? vw : 0;
    if ((!fixed_keys && key_heap > UINT32_MAX) || (!fixed_values && value_heap > UINT32_MAX)
            || n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a data block's heap exceeds 4 GiB");
        return -1;
    }
    l->size = BLOCK_HEADER + 8 * n
            + (fixed_keys ? n * kw : 4 * (n + 1) + key_heap)
            + (fixed_values ? n * vw : 4 * (n + 1) + value_heap)
            + (tombstones ? n : 0);
    if (l->size > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Write the payload of entries e[0:l->count) into p[0:l->size) (no Python objects: safe
 * with the GIL released when e points into immutable memory). */
static void fill_block(const EntryRef *e, const Layout *l, uint8_t *p) {
    Py_ssize_t n = l->count;
    bs_store_le32(p, (uint32_t)n);
    bs_store_le32(p + 4, l->kw);
    bs_store_le32(p + 8, l->vw);
    bs_store_le32(p + 12, l->flags);
    p += BLOCK_HEADER;
    for (Py_ssize_t i = 0; i < n; i++, p += 8)
        bs_store_le64(p, e[i].version);
    if (!(l->flags & FIXED_KEYS)) {
        uint32_t at = 0;
        for (Py_ssize_t i = 0; i < n; i++, p += 4) {
            bs_store_le32(p, at);
            at += e[i].klen;
        }
        bs_store_le32(p, at);
        p += 4;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(p, e[i].key, e[i].klen);
        p += e[i].klen;
    }
    if (!(l->flags & FIXED_VALUES)) {
        uint32_t at = 0;
        for (Py_ssize_t i = 0; i < n; i++, p += 4) {
            bs_store_le32(p, at);
            at += e[i].vlen;  /* 0 for a tombstone */
        }
        bs_store_le32(p, at);
        p += 4;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (e[i].value == NULL) {
            if (l->flags & FIXED_VALUES) {  /* a tombstone's slot: value_width zero bytes */
                memset(p, 0, l->vw);
                p += l->vw;
            }
            continue;
        }
        memcpy(p, e[i].value, e[i].vlen);
        p += e[i].vlen;
    }
    if (l->tombstones)
        for (Py_ssize_t i = 0; i < n; i++)
            *p++ = e[i].value == NULL;
}

/* the payload of e[0:count) as a new bytes object; the fill with the GIL released when
 * ``release`` (e points into immutable memory that outlives the call) */
PyObject *bs_encode_entries(const EntryRef *e, Py_ssize_t count, int release) {
    Layout l;
    if (block_layout(e, count, &l) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)l.size);
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    if (release) {
        Py_BEGIN_ALLOW_THREADS
        fill_block(e, &l, p);
        Py_END_ALLOW_THREADS
    } else
        fill_block(e, &l, p);
    return out;
}

/* next(table_build) -> the next data block's payload */
static PyObject *TableBuild_next(TableBuildObject *t) {
    if (t->next_block >= t->blocks)
        return NULL;  /* StopIteration */
    Py_ssize_t b = t->next_block, start = b ? t->block_end[b - 1] : 0;
    Py_ssize_t count = t->block_end[b] - start;
    if (count > t->refs_cap) {
        EntryRef *refs = PyMem_RawRealloc(t->refs, (size_t)count * sizeof(EntryRef));
        if (refs == NULL)
            return PyErr_NoMemory();
        t->refs = refs;
        t->refs_cap = count;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *at = t->base + t->entry_at[start + i];
        uint32_t klen = bs_load_le32(at + 8), vlen = bs_load_le32(at + 12);
        t->refs[i] = (EntryRef){.key = at + FLUSH_ENTRY, .klen = klen,
                                .value = vlen == TOMBSTONE_LEN ? NULL : at + FLUSH_ENTRY + klen,
                                .vlen = vlen == TOMBSTONE_LEN ? 0 : vlen,
                                .version = bs_load_le64(at)};
    }
    PyObject *out = bs_encode_entries(t->refs, count, 1);
    if (out != NULL)
        t->next_block = b + 1;
    return out;
}

/* encode_block(keys, versions, values) -> bytes | None: sstable/block.py's encode_block for
 * three equal, non-empty lists (the GIL held: the lists are the caller's); None where an
 * item is not what the table builder passes (bytes keys, bytes or None values, int
 * versions in u64) -- the caller then encodes in Python. */
static PyObject *native_encode_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])
            || !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "encode_block(keys: list, versions: list, values: list)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    if (n == 0 || PyList_GET_SIZE(args[1]) != n || PyList_GET_SIZE(args[2]) != n) {
        PyErr_SetString(PyExc_ValueError, "encode_block: keys, versions and values must be equal, "
                                          "non-empty lists");
        return NULL;
    }
    EntryRef *e = PyMem_New(EntryRef, n);
    if (e == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(args[0], i), *v = PyList_GET_ITEM(args[1], i);
        PyObject *x = PyList_GET_ITEM(args[2], i);
        if (!PyBytes_CheckExact(k) || !PyLong_CheckExact(v) || (x != Py_None && !PyBytes_CheckExact(x))
                || PyBytes_GET_SIZE(k) > UINT32_MAX || (x != Py_None && PyBytes_GET_SIZE(x) > UINT32_MAX))
            goto done;
        e[i].version = PyLong_AsUnsignedLongLong(v);
        if (e[i].version == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto done;
        }
        e[i].key = (const uint8_t *)PyBytes_AS_STRING(k);
        e[i].klen = (uint32_t)PyBytes_GET_SIZE(k);
        e[i].value = x == Py_None ? NULL : (const uint8_t *)PyBytes_AS_STRING(x);
        e[i].vlen = x == Py_None ? 0 : (uint32_t)PyBytes_GET_SIZE(x);
    }
    PyObject *out = bs_encode_entries(e, n, 0);
    PyMem_Free(e);
    return out;
done:
    PyMem_Free(e);
    Py_RETURN_NONE;
}

static PyMemberDef TableBuild_members[] = {
    {"entries", T_PYSSIZET, offsetof(TableBuildObject, entries), READONLY, "entries in the buffer"},
    {"tombstones", T_ULONGLONG, offsetof(TableBuildObject, tombstones), READONLY, "point tombstones"},
    {"keys", T_ULONGLONG, offsetof(TableBuildObject, keys), READONLY, "distinct user keys"},
    {"raw_size", T_ULONGLONG, offsetof(TableBuildObject, raw_size), READONLY,
     "key and value bytes together"},
    {"min_version", T_ULONGLONG, offsetof(TableBuildObject, min_version), READONLY,
     "the smallest version (0 without entries)"},
    {"max_version", T_ULONGLONG, offsetof(TableBuildObject, max_version), READONLY,
     "the largest version (0 without entries)"},
    {"blocks", T_PYSSIZET, offsetof(TableBuildObject, blocks), READONLY, "data blocks"},
    {"smallest", T_OBJECT_EX, offsetof(TableBuildObject, smallest), READONLY, "the first key"},
    {"largest", T_OBJECT_EX, offsetof(TableBuildObject, largest), READONLY, "the last key"},
    {"filter", T_OBJECT_EX, offsetof(TableBuildObject, filter), READONLY,
     "the filter block's payload, or None (bloom_bits_per_key 0)"},
    {"last_keys", T_OBJECT_EX, offsetof(TableBuildObject, last_keys), READONLY,
     "each data block's last key (for the index)"},
    {"last_versions", T_OBJECT_EX, offsetof(TableBuildObject, last_versions), READONLY,
     "each data block's last version (for the index)"},
    {NULL}
};

static PyObject *TableBuild_direct_hash(PyObject *cls, PyObject *unused) {
    if (bs_hash_init() < 0)
        return NULL;
    return PyBool_FromLong(direct_xxh3 != NULL);
}

static PyMethodDef TableBuild_methods[] = {
    {"direct_hash", TableBuild_direct_hash, METH_NOARGS | METH_CLASS,
     "direct_hash() -> bool: whether keys are hashed through xxhash's C function directly"},
    {NULL}
};

static PyTypeObject TableBuildType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.TableBuild",
    .tp_basicsize = sizeof(TableBuildObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TableBuild(buf, block_size, max_key_size, max_value_size, bloom_bits_per_key, "
              "probes, masks, direct_hash=True): a flush buffer checked and cut into data blocks "
              "(iterate for their payloads), with the filter and the index's lists",
    .tp_new = TableBuild_new,
    .tp_dealloc = (destructor)TableBuild_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)TableBuild_next,
    .tp_members = TableBuild_members,
    .tp_methods = TableBuild_methods,
};

static PyMethodDef tablebuild_functions[] = {
    {"encode_block", (PyCFunction)(void (*)(void))native_encode_block, METH_FASTCALL,
     "encode_block(keys, versions, values) -> bytes | None: sstable.block.encode_block, or None "
     "for items it leaves to Python"},
    {NULL}
};

int bs_tablebuild_init(PyObject *module) {
    if (PyType_Ready(&TableBuildType) < 0 || PyModule_AddFunctions(module, tablebuild_functions) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "TableBuild", (PyObject *)&TableBuildType);
}

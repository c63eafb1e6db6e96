/* banyanstore._native.Memtable: the memtable's entries in C (lsm/memtable.py wraps it).
 *
 * Memory: keys and values are copied into an arena of chunks that are never moved or
 * freed before the memtable itself (mapped from the kernel, doubling from 4 KiB to 1 MiB;
 * an entry larger than a quarter chunk gets a chunk of its own), so one add costs one
 * bump of a pointer instead of five CPython objects.  Per key:
 *
 *   KeyNode := newest:Entry* hash:i64 klen:i64 key:(klen bytes)      24 + klen, 8-aligned
 *   Entry   := older:Entry* version:u64 vlen:i64 value:(vlen bytes)  24 + vlen, 8-aligned
 *              (vlen = -1: a tombstone, no value bytes)
 *              vlen > BIG_VALUE: value:PyObject* instead, a reference to an exact bytes
 *              object of the value (the caller's own), held in the memtable's `held` list
 *
 * A big value is held, not copied: bytes never change, and a copy was a second instance
 * of a value of megabytes for the memtable's whole life (a 64 MiB put held 128 MiB once
 * the caller kept its own; the pure-Python memtable holds the caller's object), and a
 * get of it made a third.  The threshold is the arena's own-chunk size, so small entries
 * stay one bump of a pointer.  Reading a held object's bytes needs no GIL (the flush
 * copy): the memtable's reference keeps it alive and nothing can change it.
 *
 * A key's entries form a chain, newest first: exactly the order a table stores them in.
 * Indexes: an open-addressing hash table of KeyNode* (linear probing, at most half full;
 * the hash is CPython's bytes hash, cached in the key object) for point lookups; the
 * KeyNode* in arrival order; and a sorted array of KeyNode* built lazily for scans and
 * flushes (only the keys that arrived since the last sort are sorted -- with the GIL
 * released, over a private copy of their pointers -- and merged in).  A sorted array is
 * immutable once built and reference-counted, so a SortedKeys view handed to a scan stays
 * valid while writers go on.
 *
 * Concurrency: one writer and any number of readers, serialised by the GIL.  Every
 * operation that touches the shared structures runs with the GIL held from start to end;
 * the GIL is released only around work on private or immutable data: the sort and merge
 * of pointer arrays (keys never change once written) and the copy of a frozen memtable
 * into a flush buffer (or straight to a worker's pipe: flush_to_fd).  A memtable is
 * frozen by freeze(), flush_piece() or flush_to_fd(): later adds raise.
 *
 * The flush buffer, the memtable in table order (key ascending, version descending) for
 * the table builder, in this process or a worker (all integers little-endian):
 *
 *   flush_buffer := magic:"BSMF" format:u32(=1) count:u64 entry{count}
 *   entry        := version:u64 klen:u32 vlen:u32 key:(klen bytes) value:(vlen bytes)
 *                   (vlen = 0xFFFFFFFF: a tombstone, no value bytes)
 *
 * decode_flush_buffer() checks every length against the buffer's size, the count and
 * that nothing trails; a buffer that does not add up raises ValueError.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pythread.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <errno.h>
#include <unistd.h>

#include "byteorder.h"
#include "memtable.h"

typedef struct Entry {
    struct Entry *older;
    uint64_t version;
    int64_t vlen;            /* -1: tombstone */
} Entry;

typedef struct KeyNode {
    Entry *newest;
    int64_t hash;
    int64_t klen;
} KeyNode;

_Static_assert(sizeof(Entry) == 24, "Entry header is 24 bytes");
_Static_assert(sizeof(KeyNode) == 24, "KeyNode header is 24 bytes");

#define CHUNK_MAX_ (1 << 20)
#define BIG_VALUE (CHUNK_MAX_ / 4)  /* longer values are held by reference (see above) */
#define ENTRY_HELD(e) (*(PyObject *const *)((e) + 1))
#define ENTRY_VALUE(e) ((e)->vlen > BIG_VALUE ? (const char *)PyBytes_AS_STRING(ENTRY_HELD(e)) \
                                              : (const char *)((e) + 1))
#define NODE_KEY(k) ((const char *)((k) + 1))
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* Bytes charged per new key beyond its KeyNode: the hash slot (8 B at a load between a
 * quarter and a half: 16-32 B, 24 on average), its place in the arrival order (8 B) and
 * in the sorted array (8 B). */
#define INDEX_BYTES_PER_KEY 40
#define CHUNK_MIN 4096       /* sizes of the mappings, header included */
#define CHUNK_MAX CHUNK_MAX_
#define PAGE 4096
#define TOMBSTONE_LEN 0xFFFFFFFFu
#define MAX_LEN 0xFFFFFFFEu

typedef struct Chunk {
    struct Chunk *prev;
    size_t size;             /* bytes of data */
    size_t used;
    size_t mapped;           /* bytes of the mapping, this header included */
    /* data follows, 8-aligned */
} Chunk;

_Static_assert(sizeof(Chunk) % 8 == 0, "chunk data stays 8-aligned");

/* A sorted array of keys, shared by the memtable and the views handed out. */
typedef struct {
    Py_ssize_t refs;         /* changed with the GIL held only */
    Py_ssize_t n;
    KeyNode *nodes[];
} NodeArray;

typedef struct {
    PyObject_HEAD
    Chunk *chunk;            /* the newest chunk; older ones are linked through prev */
    size_t next_chunk;
    KeyNode **slots;         /* hash table, NULL = empty */
    size_t mask;
    KeyNode **order;         /* keys in arrival order */
    Py_ssize_t n_keys, order_cap;
    NodeArray *sorted;       /* order[0:sorted->n] sorted; NULL before the first sort */
    PyThread_type_lock sort_lock;
    int frozen;
    long long entries;
    long long approx_bytes;
    long long data_bytes;    /* keys and values as written (approximate_range's figure) */
    long long arena_bytes;
    uint64_t live;           /* entries in the chains (a same-version replacement is not one) */
    PyObject *held;          /* list of the big values' bytes objects: made with the memtable,
                              * as creating it inside add() could start a collection, whose
                              * finalizers run Python code between the slot found and filled */
} MemtableObject;

typedef struct {
    PyObject_HEAD
    MemtableObject *mem;     /* keeps the arena alive */
    NodeArray *array;
    Py_ssize_t lo, n;        /* the view: array->nodes[lo:lo+n] */
} SortedKeysObject;

static PyTypeObject MemtableType;
static PyTypeObject SortedKeysType;
static PyObject *missing = NULL;  /* lsm/memtable.py's MISSING, handed over by memtable_bind */

/* ---------------------------------------------------------------------------------------- */
/* the arena                                                                                 */

/* Chunks are mapped from the kernel, not malloc'd, so a dropped memtable's memory goes
 * back at once (malloc would serve 1 MiB requests from its heap once one was freed, and
 * keep them after). */
static Chunk *chunk_map(size_t mapped) {
    void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    Chunk *c = p;
    c->mapped = mapped;
    c->size = mapped - sizeof(Chunk);
    c->used = 0;
    return c;
}

static void *arena_alloc(MemtableObject *m, size_t n) {
    n = ALIGN8(n);
    Chunk *c = m->chunk;
    if (c != NULL && c->size - c->used >= n) {
        void *p = (char *)(c + 1) + c->used;
        c->used += n;
        return p;
    }
    int own = n > CHUNK_MAX / 4;  /* a big entry: its own chunk, the current one stays open */
    size_t mapped = m->next_chunk;
    if (own || mapped < n + sizeof(Chunk))
        mapped = (n + sizeof(Chunk) + PAGE - 1) / PAGE * PAGE;
    Chunk *fresh = chunk_map(mapped);
    if (fresh == NULL)
        return NULL;
    fresh->used = n;
    if (own && c != NULL) {
        fresh->prev = c->prev;
        c->prev = fresh;
    } else {
        fresh->prev = c;
        m->chunk = fresh;
        if (m->next_chunk < CHUNK_MAX)
            m->next_chunk *= 2;
    }
    m->arena_bytes += (long long)mapped;
    return fresh + 1;
}

/* The index arrays (hash slots, arrival order, sorted keys) are mapped from the kernel
 * too once they reach INDEX_MAPPED bytes, for the arena's reason and one more: glibc
 * raises its mmap threshold to the size of each mapped block freed (up to 32 MiB), so
 * after the first dropped memtable the next ones' arrays would come from the heap and
 * keep it resident after they are gone (measured at 1M puts: a heap of 62 MB at the
 * peak of fillrandom, 5 MB with the arrays mapped).  Smaller arrays use malloc, so a
 * small memtable does not cost a page per array. */
#define INDEX_MAPPED (64 * 1024)

static void *index_alloc(size_t n, int zeroed) {
    if (n < INDEX_MAPPED)
        return zeroed ? PyMem_RawCalloc(1, n) : PyMem_RawMalloc(n);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;  /* fresh mappings are zero-filled */
}

static void index_free(void *p, size_t n) {
    if (p == NULL)
        return;
    if (n < INDEX_MAPPED)
        PyMem_RawFree(p);
    else
        munmap(p, n);
}

/* ``p`` (``old`` bytes, or NULL) grown to ``n`` bytes; NULL (``p`` untouched) on failure. */
static void *index_realloc(void *p, size_t old, size_t n) {
    if (p == NULL)
        return index_alloc(n, 0);
    if (old < INDEX_MAPPED && n < INDEX_MAPPED)
        return PyMem_RawRealloc(p, n);
    if (old >= INDEX_MAPPED && n >= INDEX_MAPPED) {
        void *q = mremap(p, old, n, MREMAP_MAYMOVE);
        return q == MAP_FAILED ? NULL : q;
    }
    void *q = index_alloc(n, 0);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    index_free(p, old);
    return q;
}

static size_t node_array_bytes(Py_ssize_t n) {
    return sizeof(NodeArray) + (size_t)n * sizeof(KeyNode *);
}

static void array_release(NodeArray *a) {
    if (a != NULL && --a->refs == 0)
        index_free(a, node_array_bytes(a->n));
}

/* ---------------------------------------------------------------------------------------- */
/* keys                                                                                       */

static inline int key_cmp(const KeyNode *a, const char *key, Py_ssize_t klen) {
    Py_ssize_t n = a->klen < klen ? a->klen : klen;
    int c = n ? memcmp(NODE_KEY(a), key, (size_t)n) : 0;
    if (c)
        return c;
    return a->klen < klen ? -1 : a->klen > klen;
}

static int node_cmp(const void *pa, const void *pb) {
    const KeyNode *a = *(KeyNode *const *)pa, *b = *(KeyNode *const *)pb;
    return key_cmp(a, NODE_KEY(b), (Py_ssize_t)b->klen);
}

static int check_key(PyObject *key) {
    if (!PyBytes_Check(key)) {
        PyErr_Format(PyExc_TypeError, "key must be bytes, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    return 0;
}

/* The slot of ``key`` (hash ``h``): its node, or the empty slot where it would go. */
static KeyNode **find_slot(MemtableObject *m, const char *key, Py_ssize_t klen, int64_t h) {
    size_t i = (size_t)h & m->mask;
    for (;;) {
        KeyNode *k = m->slots[i];
        if (k == NULL || (k->hash == h && k->klen == klen && memcmp(NODE_KEY(k), key, (size_t)klen) == 0))
            return &m->slots[i];
        i = (i + 1) & m->mask;
    }
}

static KeyNode *lookup(MemtableObject *m, PyObject *key) {
    if (m->slots == NULL)
        return NULL;
    Py_hash_t h = PyBytes_Type.tp_hash(key);
    if (h == -1)
        return NULL;
    return *find_slot(m, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), (int64_t)h);
}

static int grow_slots(MemtableObject *m) {
    size_t cap = m->slots == NULL ? 16 : (m->mask + 1) * 2;
    KeyNode **slots = index_alloc(cap * sizeof(KeyNode *), 1);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    KeyNode **old = m->slots;
    size_t old_bytes = old == NULL ? 0 : (m->mask + 1) * sizeof(KeyNode *);
    m->slots = slots;
    m->mask = cap - 1;
    for (Py_ssize_t i = 0; i < m->n_keys; i++) {
        KeyNode *k = m->order[i];
        *find_slot(m, NODE_KEY(k), (Py_ssize_t)k->klen, k->hash) = k;
    }
    index_free(old, old_bytes);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Memtable                                                                                   */

static PyObject *Memtable_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    MemtableObject *m = (MemtableObject *)type->tp_alloc(type, 0);
    if (m == NULL)
        return NULL;
    m->next_chunk = CHUNK_MIN;
    if ((m->held = PyList_New(0)) == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    m->sort_lock = PyThread_allocate_lock();
    if (m->sort_lock == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    return (PyObject *)m;
}

static void Memtable_dealloc(MemtableObject *m) {
    Chunk *c = m->chunk;
    while (c != NULL) {
        Chunk *prev = c->prev;
        munmap(c, c->mapped);
        c = prev;
    }
    if (m->slots != NULL)
        index_free(m->slots, (m->mask + 1) * sizeof(KeyNode *));
    index_free(m->order, (size_t)m->order_cap * sizeof(KeyNode *));
    array_release(m->sorted);
    Py_XDECREF(m->held);  /* after the chunks: nothing refers to the values any more */
    if (m->sort_lock != NULL)
        PyThread_free_lock(m->sort_lock);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *Memtable_add(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "add(key, version, value)");
        return NULL;
    }
    PyObject *key = args[0], *value = args[2];
    if (check_key(key) < 0)
        return NULL;
    if (value != Py_None && !PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "value must be bytes or None, not %.100s", Py_TYPE(value)->tp_name);
        return NULL;
    }
    unsigned long long version = PyLong_AsUnsignedLongLong(args[1]);
    if (version == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "version must be an int in 0 .. 2**64-1");
        return NULL;
    }
    if (m->frozen) {
        PyErr_SetString(PyExc_RuntimeError, "the memtable is frozen (it is being flushed)");
        return NULL;
    }
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    Py_ssize_t vlen = value == Py_None ? -1 : PyBytes_GET_SIZE(value);
    if ((size_t)klen > MAX_LEN || (vlen > 0 && (size_t)vlen > MAX_LEN)) {
        PyErr_SetString(PyExc_ValueError, "key or value longer than 4 GiB");
        return NULL;
    }
    Py_hash_t h = PyBytes_Type.tp_hash(key);
    if (h == -1)
        return NULL;
    /* room first, so a failed allocation changes nothing */
    if (m->slots == NULL || (size_t)(m->n_keys + 1) * 2 > m->mask + 1) {
        if (grow_slots(m) < 0)
            return NULL;
    }
    KeyNode **slot = find_slot(m, PyBytes_AS_STRING(key), klen, (int64_t)h);
    KeyNode *node = *slot;
    size_t charge = ALIGN8(sizeof(Entry) + (size_t)(vlen > 0 ? vlen : 0));
    if (node == NULL) {
        if (m->n_keys == m->order_cap) {
            Py_ssize_t cap = m->order_cap ? m->order_cap * 2 : 16;
            KeyNode **order = index_realloc(m->order, (size_t)m->order_cap * sizeof(KeyNode *),
                                            (size_t)cap * sizeof(KeyNode *));
            if (order == NULL)
                return PyErr_NoMemory();
            m->order = order;
            m->order_cap = cap;
        }
        node = arena_alloc(m, sizeof(KeyNode) + (size_t)klen);
        if (node == NULL)
            return PyErr_NoMemory();
        node->newest = NULL;
        node->hash = (int64_t)h;
        node->klen = klen;
        memcpy((char *)(node + 1), PyBytes_AS_STRING(key), (size_t)klen);
        charge += ALIGN8(sizeof(KeyNode) + (size_t)klen) + INDEX_BYTES_PER_KEY;
    }
    int big = vlen > BIG_VALUE;
    Entry *e = arena_alloc(m, sizeof(Entry) + (big ? sizeof(PyObject *) : (size_t)(vlen > 0 ? vlen : 0)));
    if (e == NULL)
        return PyErr_NoMemory();  /* a fresh node stays unpublished: no index points to it */
    e->version = version;
    e->vlen = vlen;
    if (big) {
        /* held, not copied -- a bytes subclass (which could carry mutable state) as an exact copy */
        PyObject *obj = PyBytes_CheckExact(value) ? Py_NewRef(value)
                        : PyBytes_FromStringAndSize(PyBytes_AS_STRING(value), vlen);
        if (obj == NULL)
            return NULL;  /* nothing published */
        int r = PyList_Append(m->held, obj);  /* (runs no Python code: `slot` stays valid) */
        Py_DECREF(obj);
        if (r < 0)
            return NULL;
        *(PyObject **)(e + 1) = obj;
    } else if (vlen > 0) {
        memcpy((char *)(e + 1), PyBytes_AS_STRING(value), (size_t)vlen);
    }
    Entry *newest = node->newest;
    if (newest != NULL && newest->version == version) {
        e->older = newest->older;  /* the same key twice in one batch: the last op wins */
    } else {
        e->older = newest;
        m->live++;
    }
    node->newest = e;  /* published whole: readers run under the GIL */
    if (*slot == NULL) {
        *slot = node;
        m->order[m->n_keys++] = node;
    }
    m->entries += 1;
    m->approx_bytes += (long long)charge;
    m->data_bytes += (long long)klen + (vlen > 0 ? (long long)vlen : 0);
    return PyLong_FromSize_t(charge);
}

static Entry *visible(const KeyNode *k, uint64_t version) {
    Entry *e = k->newest;
    while (e != NULL && e->version > version)
        e = e->older;
    return e;
}

static PyObject *entry_value(const Entry *e) {
    if (e->vlen < 0)
        Py_RETURN_NONE;
    if (e->vlen > BIG_VALUE)
        return Py_NewRef(ENTRY_HELD(e));
    return PyBytes_FromStringAndSize(ENTRY_VALUE(e), (Py_ssize_t)e->vlen);
}

/* A read's version: 1 -> nothing can be visible (a negative version); 0 -> *version set
 * (versions past 2**64-1 see everything); -1 -> error (not an int). */
static int parse_version(PyObject *obj, uint64_t *version) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        PyObject *zero = PyLong_FromLong(0);
        int negative = zero == NULL ? -1 : PyObject_RichCompareBool(obj, zero, Py_LT);
        Py_XDECREF(zero);
        if (negative < 0)
            return -1;
        if (negative)
            return 1;
        v = UINT64_MAX;
    }
    *version = v;
    return 0;
}

static int parse_key_version(PyObject *const *args, Py_ssize_t nargs, const char *sig,
                             uint64_t *version) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, sig);
        return -1;
    }
    if (check_key(args[0]) < 0)
        return -1;
    return parse_version(args[1], version);
}

/* the entry of (key, version) that a read sees, into *out (NULL: none); -1 on a bad argument */
static int find_visible(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs, const char *sig,
                        Entry **out) {
    uint64_t version;
    int r = parse_key_version(args, nargs, sig, &version);
    if (r < 0)
        return -1;
    KeyNode *k = r ? NULL : lookup(m, args[0]);
    if (PyErr_Occurred())
        return -1;
    *out = k == NULL ? NULL : visible(k, version);
    return 0;
}

static PyObject *Memtable_get(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Entry *e;
    if (find_visible(m, args, nargs, "get(key, version)", &e) < 0)
        return NULL;
    if (e == NULL)
        return Py_NewRef(missing != NULL ? missing : Py_None);
    return entry_value(e);
}

static PyObject *Memtable_get_entry(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Entry *e;
    if (find_visible(m, args, nargs, "get_entry(key, version)", &e) < 0)
        return NULL;
    if (e == NULL)
        Py_RETURN_NONE;
    PyObject *v = PyLong_FromUnsignedLongLong(e->version), *x = entry_value(e);
    if (v == NULL || x == NULL) {
        Py_XDECREF(v);
        Py_XDECREF(x);
        return NULL;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(v);
        Py_DECREF(x);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, v);
    PyTuple_SET_ITEM(t, 1, x);
    return t;
}

static PyObject *Memtable_history(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t version;
    int r = parse_key_version(args, nargs, "history(key, version)", &version);
    if (r < 0)
        return NULL;
    KeyNode *k = r ? NULL : lookup(m, args[0]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL || k == NULL)
        return out;
    for (Entry *e = visible(k, version); e != NULL; e = e->older) {
        if (e->version > version)
            continue;  /* added out of order: older in the chain, newer in version */
        PyObject *t = Py_BuildValue("(KN)", (unsigned long long)e->version, entry_value(e));
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

/* Sorting keys: a quicksort of (8 key bytes, node) pairs, whole keys compared only for ties.
 *
 * qsort over KeyNode pointers dereferenced two nodes at scattered addresses per
 * comparison, through a function pointer: 0.25 s for the 322,000 random 16-byte keys of
 * a 64 MiB memtable, most of a flush's time in this process; and it took a scratch
 * array from malloc, whose free raised glibc's mmap threshold.  Here each key is read
 * once, in arena order, for the 8 bytes that follow the prefix every key of the batch
 * shares, and the pairs are sorted in place (no scratch: the pairs are the sorter's
 * only array, 16 bytes a key where the pointers and qsort's scratch took as much). */
typedef struct {
    uint64_t prefix;  /* 8 key bytes from the shared prefix on, big-endian, zero-padded */
    KeyNode *node;
} SortItem;

/* Keys whose prefixes differ compare as the prefixes do (a key that ends sorts first,
 * and its padding is 0: at worst a tie), so only equal prefixes need the keys. */
static uint64_t key_prefix(const KeyNode *k, size_t skip) {
    const unsigned char *p = (const unsigned char *)NODE_KEY(k);
    size_t len = (size_t)k->klen;
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = (v << 8) | (skip + i < len ? p[skip + i] : 0);
    return v;
}

static size_t shared_prefix(const SortItem *items, Py_ssize_t n) {
    size_t lcp = n > 0 ? (size_t)items[0].node->klen : 0;
    const char *first = n > 0 ? NODE_KEY(items[0].node) : NULL;
    for (Py_ssize_t i = 1; i < n && lcp > 0; i++) {
        const char *key = NODE_KEY(items[i].node);
        size_t len = (size_t)items[i].node->klen < lcp ? (size_t)items[i].node->klen : lcp;
        size_t j = 0;
        while (j < len && key[j] == first[j])
            j++;
        lcp = j;
    }
    return lcp;
}

static inline int item_less(const SortItem *a, const SortItem *b) {
    if (a->prefix != b->prefix)
        return a->prefix < b->prefix;
    return node_cmp(&a->node, &b->node) < 0;
}

static int item_cmp(const void *pa, const void *pb) {
    return item_less(pa, pb) ? -1 : item_less(pb, pa) ? 1 : 0;
}

static inline void item_swap(SortItem *a, SortItem *b) {
    SortItem t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(SortItem *a, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        SortItem x = a[i];
        Py_ssize_t j = i;
        while (j > 0 && item_less(&x, &a[j - 1])) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Quicksort (median of three, Hoare's partition, the smaller side first); past
 * ``depth`` levels a range goes to qsort, so a bad case stays O(n log n). */
static void quick_sort(SortItem *a, Py_ssize_t n, int depth) {
    while (n > 16) {
        if (depth-- == 0) {
            qsort(a, (size_t)n, sizeof(SortItem), item_cmp);
            return;
        }
        Py_ssize_t mid = (n - 1) / 2;
        if (item_less(&a[mid], &a[0]))
            item_swap(&a[mid], &a[0]);
        if (item_less(&a[n - 1], &a[mid])) {
            item_swap(&a[n - 1], &a[mid]);
            if (item_less(&a[mid], &a[0]))
                item_swap(&a[mid], &a[0]);
        }
        SortItem pivot = a[mid];
        Py_ssize_t i = -1, j = n;
        for (;;) {
            do
                i++;
            while (item_less(&a[i], &pivot));
            do
                j--;
            while (item_less(&pivot, &a[j]));
            if (i >= j)
                break;
            item_swap(&a[i], &a[j]);
        }
        Py_ssize_t left = j + 1;  /* a[0:left] <= pivot <= a[left:n] */
        if (left < n - left) {
            quick_sort(a, left, depth);
            a += left;
            n -= left;
        } else {
            quick_sort(a + left, n - left, depth);
            n = left;
        }
    }
    insertion_sort(a, n);
}

/* Sort the pairs' nodes by key (distinct keys; ``items[i].node`` set).  Needs no
 * Python: runs with the GIL released. */
static void sort_items(SortItem *items, Py_ssize_t n) {
    size_t skip = shared_prefix(items, n);
    int depth = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        items[i].prefix = key_prefix(items[i].node, skip);
    for (Py_ssize_t k = n; k > 1; k >>= 1)
        depth += 2;
    quick_sort(items, n, depth);
}

/* Make m->sorted cover every key.  The new keys' pointers are copied with the GIL held,
 * then sorted and merged with the current (immutable) array with the GIL released; one
 * sorter at a time (sort_lock), so no work is done twice. */
static int ensure_sorted(MemtableObject *m) {
    Py_ssize_t done = m->sorted == NULL ? 0 : m->sorted->n;
    if (done == m->n_keys && m->sorted != NULL)
        return 0;
    if (!PyThread_acquire_lock(m->sort_lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(m->sort_lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    NodeArray *old = m->sorted;
    done = old == NULL ? 0 : old->n;
    Py_ssize_t fresh = m->n_keys - done;
    if (fresh == 0 && old != NULL) {
        PyThread_release_lock(m->sort_lock);
        return 0;
    }
    size_t add_bytes = (size_t)(fresh ? fresh : 1) * sizeof(SortItem);
    SortItem *add = index_alloc(add_bytes, 0);
    NodeArray *out = index_alloc(node_array_bytes(done + fresh), 0);
    if (add == NULL || out == NULL) {
        index_free(add, add_bytes);
        index_free(out, node_array_bytes(done + fresh));
        PyThread_release_lock(m->sort_lock);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < fresh; k++)
        add[k].node = m->order[done + k];
    if (old != NULL)
        old->refs++;  /* ours while the GIL is released */
    out->refs = 1;
    out->n = done + fresh;
    int release = fresh > 512;
    PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
    sort_items(add, fresh);
    Py_ssize_t i = 0, j = 0, o = 0;
    while (i < done && j < fresh) {
        if (node_cmp(&old->nodes[i], &add[j].node) <= 0)
            out->nodes[o++] = old->nodes[i++];
        else
            out->nodes[o++] = add[j++].node;
    }
    while (i < done)
        out->nodes[o++] = old->nodes[i++];
    while (j < fresh)
        out->nodes[o++] = add[j++].node;
    index_free(add, add_bytes);
    if (release)
        PyEval_RestoreThread(ts);
    if (old != NULL)
        old->refs--;  /* the memtable's own reference is dropped below */
    m->sorted = out;
    array_release(old);
    PyThread_release_lock(m->sort_lock);
    return 0;
}

static PyObject *sorted_view(MemtableObject *m, NodeArray *a, Py_ssize_t lo, Py_ssize_t n) {
    SortedKeysObject *s = PyObject_New(SortedKeysObject, &SortedKeysType);
    if (s == NULL)
        return NULL;
    s->mem = (MemtableObject *)Py_NewRef((PyObject *)m);
    a->refs++;
    s->array = a;
    s->lo = lo;
    s->n = n;
    return (PyObject *)s;
}

static PyObject *Memtable_sorted_keys(MemtableObject *m, PyObject *unused) {
    if (ensure_sorted(m) < 0)
        return NULL;
    return sorted_view(m, m->sorted, 0, m->sorted->n);
}

static PyObject *visible_tuple(const KeyNode *k, const Entry *e) {
    PyObject *key = PyBytes_FromStringAndSize(NODE_KEY(k), (Py_ssize_t)k->klen);
    PyObject *v = PyLong_FromUnsignedLongLong(e->version);
    PyObject *x = entry_value(e);
    PyObject *t = key && v && x ? PyTuple_New(3) : NULL;
    if (t == NULL) {
        Py_XDECREF(key);
        Py_XDECREF(v);
        Py_XDECREF(x);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, key);
    PyTuple_SET_ITEM(t, 1, v);
    PyTuple_SET_ITEM(t, 2, x);
    return t;
}

/* visible_entries(keys, version): (key, entry_version, value) of the newest entry <=
 * version for each of keys that has one; keys is a view from sorted_keys() (walked in
 * place) or a sequence of bytes keys of this memtable (KeyError for a missing one). */
static PyObject *Memtable_visible_entries(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "visible_entries(keys, version)");
        return NULL;
    }
    uint64_t version;
    int none_visible = parse_version(args[1], &version);
    if (none_visible < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL || none_visible)
        return out;
    if (Py_TYPE(args[0]) == &SortedKeysType && ((SortedKeysObject *)args[0])->mem == m) {
        SortedKeysObject *s = (SortedKeysObject *)args[0];
        KeyNode **nodes = s->array->nodes + s->lo;
        for (Py_ssize_t i = 0; i < s->n; i++) {
            Entry *e = visible(nodes[i], version);
            if (e == NULL)
                continue;
            PyObject *t = visible_tuple(nodes[i], e);
            if (t == NULL || PyList_Append(out, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(t);
        }
        return out;
    }
    PyObject *seq = PySequence_Fast(args[0], "visible_entries: keys must be a sequence");
    if (seq == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(seq, i);
        KeyNode *k = check_key(key) < 0 ? NULL : lookup(m, key);
        if (k == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, key);
            goto fail;
        }
        Entry *e = visible(k, version);
        if (e == NULL)
            continue;
        PyObject *t = visible_tuple(k, e);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out);
    return NULL;
}

#define FLUSH_HEADER 16
#define FLUSH_ENTRY_HEADER 16

static void encode_entries(char *p, KeyNode *const *nodes, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const KeyNode *k = nodes[i];
        for (const Entry *e = k->newest; e != NULL; e = e->older) {
            bs_store_le64(p, e->version);
            bs_store_le32(p + 8, (uint32_t)k->klen);
            bs_store_le32(p + 12, e->vlen < 0 ? TOMBSTONE_LEN : (uint32_t)e->vlen);
            p += FLUSH_ENTRY_HEADER;
            memcpy(p, NODE_KEY(k), (size_t)k->klen);
            p += k->klen;
            if (e->vlen > 0) {
                memcpy(p, ENTRY_VALUE(e), (size_t)e->vlen);
                p += e->vlen;
            }
        }
    }
}

static size_t key_bytes(const KeyNode *k) {
    size_t size = 0;
    for (const Entry *e = k->newest; e != NULL; e = e->older)
        size += FLUSH_ENTRY_HEADER + (size_t)k->klen + (size_t)(e->vlen > 0 ? e->vlen : 0);
    return size;
}

/* The end of the piece that begins at sorted key ``start``: as many whole keys as fit in
 * ``max_bytes`` (at least one); *size gets its bytes, the header included in the piece of
 * start 0.  Reads only a frozen memtable's entries: safe with the GIL released. */
static Py_ssize_t piece_end(const NodeArray *a, Py_ssize_t start, Py_ssize_t max_bytes,
                            size_t *size) {
    size_t n = start == 0 ? FLUSH_HEADER : 0;
    Py_ssize_t end = start;
    while (end < a->n) {
        size_t more = key_bytes(a->nodes[end]);
        if (end > start && n + more > (size_t)(max_bytes > 0 ? max_bytes : 0))
            break;
        n += more;
        end++;
    }
    *size = n;
    return end;
}

static char *put_flush_header(char *p, uint64_t live) {
    memcpy(p, "BSMF", 4);
    bs_store_le32(p + 4, 1);
    bs_store_le64(p + 8, live);
    return p + FLUSH_HEADER;
}

/* flush_piece(start, max_bytes) -> (bytes, next): the flush buffer (grammar at the top)
 * piece by piece -- the entries of the sorted keys from index ``start`` on, as many whole
 * keys as fit in ``max_bytes`` (at least one), the header first in the piece of start 0;
 * ``next`` is the next piece's start, None after the last.  The pieces joined are the
 * whole buffer, so a flush never holds a second copy of the memtable at once.  Freezes
 * the memtable; the copy runs with the GIL released (nothing changes a frozen memtable's
 * entries, and the sorted array is held). */
static PyObject *Memtable_flush_piece(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t start, max_bytes;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "flush_piece(start, max_bytes)");
        return NULL;
    }
    if ((start = PyNumber_AsSsize_t(args[0], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    if ((max_bytes = PyNumber_AsSsize_t(args[1], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    m->frozen = 1;
    if (ensure_sorted(m) < 0)
        return NULL;
    NodeArray *a = m->sorted;
    if (start < 0 || start > a->n) {
        PyErr_Format(PyExc_ValueError, "start must be in 0 .. %zd", a->n);
        return NULL;
    }
    size_t size;
    Py_ssize_t end = piece_end(a, start, max_bytes, &size);
    if (size > (size_t)PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    PyObject *buf = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (buf == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(buf);
    if (start == 0)
        p = put_flush_header(p, m->live);
    int last = end == a->n;
    a->refs++;
    Py_BEGIN_ALLOW_THREADS
    encode_entries(p, a->nodes + start, end - start);
    Py_END_ALLOW_THREADS
    array_release(a);
    if (last)
        return Py_BuildValue("(NO)", buf, Py_None);
    return Py_BuildValue("(Nn)", buf, end);
}

#define FRAME_HEADER 8

/* All of ``n`` bytes to ``fd``; 0 or an errno.  Called with the GIL released. */
static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The frames of flush_to_fd, written with the GIL released: 0, an errno, or -1 when a
 * key's entries did not fit and no memory was left to grow the buffer. */
static int write_frames(int fd, const NodeArray *a, Py_ssize_t max_bytes, uint64_t live,
                        char **bufp, size_t *capp) {
    Py_ssize_t start = 0;
    do {  /* a frame even for no keys: the header */
        size_t size;
        Py_ssize_t end = piece_end(a, start, max_bytes, &size);
        if (FRAME_HEADER + size > *capp) {  /* one key larger than a piece */
            char *grown = PyMem_RawRealloc(*bufp, FRAME_HEADER + size);
            if (grown == NULL)
                return -1;
            *bufp = grown;
            *capp = FRAME_HEADER + size;
        }
        char *p = *bufp + FRAME_HEADER;
        bs_store_le64(*bufp, size);
        if (start == 0)
            p = put_flush_header(p, live);
        encode_entries(p, a->nodes + start, end - start);
        int err = write_all(fd, *bufp, FRAME_HEADER + size);
        if (err)
            return err;
        start = end;
    } while (start < a->n);
    bs_store_le64(*bufp, 0);
    return write_all(fd, *bufp, FRAME_HEADER);
}

/* flush_to_fd(fd, piece_bytes): the flush buffer's pieces (those of flush_piece with
 * max_bytes ``piece_bytes``) written to ``fd`` as frames -- length:u64 (little-endian)
 * piece -- then a frame of length 0.  Sorting, copying and writing run with the GIL
 * released from the first piece to the last: a flush streamed piece by piece through
 * Python waited for the GIL at every piece, behind a busy writer thread (up to a switch
 * interval each time), which made the flush of a 64 MiB memtable during a fill take
 * 1.0-1.9 s instead of 0.6-0.8 s, with the memtable resident all that time.  Freezes the memtable.  OSError if a
 * write fails (say the reader went away: EPIPE), MemoryError if a buffer cannot be had;
 * then the frames written so far end mid-stream. */
static PyObject *Memtable_flush_to_fd(MemtableObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "flush_to_fd(fd, piece_bytes)");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    Py_ssize_t piece_bytes = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (piece_bytes == -1 && PyErr_Occurred())
        return NULL;
    if (piece_bytes <= 0 || (size_t)piece_bytes > ((size_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "piece_bytes must be in 1 .. 2**40");
        return NULL;
    }
    m->frozen = 1;
    if (ensure_sorted(m) < 0)
        return NULL;
    size_t cap = FRAME_HEADER + FLUSH_HEADER + (size_t)piece_bytes;
    char *buf = PyMem_RawMalloc(cap);
    if (buf == NULL)
        return PyErr_NoMemory();
    NodeArray *a = m->sorted;
    a->refs++;
    uint64_t live = m->live;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = write_frames(fd, a, piece_bytes, live, &buf, &cap);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(buf);
    array_release(a);
    if (err == -1)
        return PyErr_NoMemory();
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static Py_ssize_t Memtable_len(MemtableObject *m) {
    return (Py_ssize_t)m->entries;
}

static PyObject *Memtable_freeze(MemtableObject *m, PyObject *unused) {
    m->frozen = 1;
    Py_RETURN_NONE;
}

static PyObject *Memtable_get_live(MemtableObject *m, void *closure) {
    return PyLong_FromUnsignedLongLong(m->live);
}

static PyObject *Memtable_get_keys(MemtableObject *m, void *closure) {
    return PyLong_FromSsize_t(m->n_keys);
}

static PyObject *Memtable_get_frozen(MemtableObject *m, void *closure) {
    return PyBool_FromLong(m->frozen);
}

static PyObject *Memtable_get_arena_bytes(MemtableObject *m, void *closure) {
    return PyLong_FromLongLong(m->arena_bytes);
}

int bs_memtable_type_adds(PyObject *type) {
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &MemtableType))
        return 0;
    PyObject *own = PyObject_GetAttrString((PyObject *)&MemtableType, "add");
    if (own == NULL)
        return -1;
    PyObject *add = PyObject_GetAttrString(type, "add");
    int same = add == own;
    Py_DECREF(own);
    if (add == NULL)
        return -1;
    Py_DECREF(add);
    return same;
}

PyObject *bs_memtable_add(PyObject *mem, PyObject *const *args, Py_ssize_t nargs) {
    if (!PyObject_TypeCheck(mem, &MemtableType)) {
        PyErr_SetString(PyExc_TypeError, "not a compiled Memtable");
        return NULL;
    }
    return Memtable_add((MemtableObject *)mem, args, nargs);
}

static PyMethodDef Memtable_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Memtable_add, METH_FASTCALL,
     "add(key, version, value) -> bytes charged; value None is a tombstone"},
    {"get", (PyCFunction)(void (*)(void))Memtable_get, METH_FASTCALL,
     "get(key, version) -> newest value <= version, None for a tombstone, MISSING"},
    {"get_entry", (PyCFunction)(void (*)(void))Memtable_get_entry, METH_FASTCALL,
     "get_entry(key, version) -> (entry_version, value) | None"},
    {"history", (PyCFunction)(void (*)(void))Memtable_history, METH_FASTCALL,
     "history(key, version) -> [(entry_version, value)], newest first"},
    {"sorted_keys", (PyCFunction)Memtable_sorted_keys, METH_NOARGS,
     "sorted_keys() -> an immutable sequence of the keys in ascending order"},
    {"visible_entries", (PyCFunction)(void (*)(void))Memtable_visible_entries, METH_FASTCALL,
     "visible_entries(keys, version) -> [(key, entry_version, value)]"},
    {"freeze", (PyCFunction)Memtable_freeze, METH_NOARGS,
     "freeze(): from now on add raises RuntimeError (the memtable is being flushed)"},
    {"flush_piece", (PyCFunction)(void (*)(void))Memtable_flush_piece, METH_FASTCALL,
     "flush_piece(start, max_bytes) -> (bytes, next | None): the flush buffer in pieces"},
    {"flush_to_fd", (PyCFunction)(void (*)(void))Memtable_flush_to_fd, METH_FASTCALL,
     "flush_to_fd(fd, piece_bytes): the flush buffer's pieces written to fd as frames"},
    {NULL}
};

static PyMemberDef Memtable_members[] = {
    {"entries", T_LONGLONG, offsetof(MemtableObject, entries), 0,
     "entries added (and range tombstones, counted by the Python side)"},
    {"approx_bytes", T_LONGLONG, offsetof(MemtableObject, approx_bytes), 0,
     "bytes charged: arena bytes of the entries plus the indexes' share"},
    {"data_bytes", T_LONGLONG, offsetof(MemtableObject, data_bytes), 0,
     "bytes of the keys and values added (and range tombstones' bounds, added by the Python side)"},
    {NULL}
};

static PyGetSetDef Memtable_getset[] = {
    {"key_count", (getter)Memtable_get_keys, NULL, "distinct keys", NULL},
    {"live_entries", (getter)Memtable_get_live, NULL,
     "entries a flush writes (a same-version replacement is not one)", NULL},
    {"frozen", (getter)Memtable_get_frozen, NULL, "True once flush_piece() was called", NULL},
    {"arena_bytes", (getter)Memtable_get_arena_bytes, NULL, "bytes of the arena's chunks", NULL},
    {NULL}
};

static PySequenceMethods Memtable_as_sequence = {
    .sq_length = (lenfunc)Memtable_len,
};

static PyTypeObject MemtableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.Memtable",
    .tp_basicsize = sizeof(MemtableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A keyspace's recent writes, every version, in an arena (see lsm/memtable.py).",
    .tp_new = Memtable_new,
    .tp_dealloc = (destructor)Memtable_dealloc,
    .tp_methods = Memtable_methods,
    .tp_members = Memtable_members,
    .tp_getset = Memtable_getset,
    .tp_as_sequence = &Memtable_as_sequence,
};

/* ---------------------------------------------------------------------------------------- */
/* SortedKeys: an immutable view of a sorted array, a sequence of bytes                       */

static void SortedKeys_dealloc(SortedKeysObject *s) {
    array_release(s->array);
    Py_DECREF(s->mem);
    PyObject_Free(s);
}

static Py_ssize_t SortedKeys_len(SortedKeysObject *s) {
    return s->n;
}

static PyObject *SortedKeys_item(SortedKeysObject *s, Py_ssize_t i) {
    if (i < 0 || i >= s->n) {
        PyErr_SetString(PyExc_IndexError, "sorted keys index out of range");
        return NULL;
    }
    const KeyNode *k = s->array->nodes[s->lo + i];
    return PyBytes_FromStringAndSize(NODE_KEY(k), (Py_ssize_t)k->klen);
}

static PyObject *SortedKeys_subscript(SortedKeysObject *s, PyObject *item) {
    if (PyIndex_Check(item)) {
        Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (i < 0)
            i += s->n;
        return SortedKeys_item(s, i);
    }
    if (!PySlice_Check(item)) {
        PyErr_Format(PyExc_TypeError, "sorted keys indices must be integers or slices, not %.100s",
                     Py_TYPE(item)->tp_name);
        return NULL;
    }
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(item, &start, &stop, &step) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(s->n, &start, &stop, step);
    if (step == 1)
        return sorted_view(s->mem, s->array, s->lo + start, n);
    PyObject *out = PyList_New(n);  /* any other step: a plain list */
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *k = SortedKeys_item(s, start + i * step);
        if (k == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, k);
    }
    return out;
}

/* bisect_left(key) -> the first index whose key is >= key (no key objects made). */
static PyObject *SortedKeys_bisect_left(SortedKeysObject *s, PyObject *key) {
    if (check_key(key) < 0)
        return NULL;
    const char *p = PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key), lo = 0, hi = s->n;
    KeyNode **nodes = s->array->nodes + s->lo;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (key_cmp(nodes[mid], p, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return PyLong_FromSsize_t(lo);
}

static PyObject *SortedKeys_richcompare(PyObject *a, PyObject *b, int op) {
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *la = PySequence_List(a), *lb = la == NULL ? NULL : PySequence_List(b);
    if (lb == NULL) {
        Py_XDECREF(la);
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r = PyObject_RichCompare(la, lb, op);
    Py_DECREF(la);
    Py_DECREF(lb);
    return r;
}

static PyMethodDef SortedKeys_methods[] = {
    {"bisect_left", (PyCFunction)SortedKeys_bisect_left, METH_O,
     "bisect_left(key) -> the first index whose key is >= key"},
    {NULL}
};

static PySequenceMethods SortedKeys_as_sequence = {
    .sq_length = (lenfunc)SortedKeys_len,
    .sq_item = (ssizeargfunc)SortedKeys_item,
};

static PyMappingMethods SortedKeys_as_mapping = {
    .mp_length = (lenfunc)SortedKeys_len,
    .mp_subscript = (binaryfunc)SortedKeys_subscript,
};

static PyTypeObject SortedKeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.SortedKeys",
    .tp_basicsize = sizeof(SortedKeysObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A memtable's keys in ascending order as of one moment (immutable).",
    .tp_dealloc = (destructor)SortedKeys_dealloc,
    .tp_as_sequence = &SortedKeys_as_sequence,
    .tp_as_mapping = &SortedKeys_as_mapping,
    .tp_richcompare = SortedKeys_richcompare,
    .tp_methods = SortedKeys_methods,
};

/* ---------------------------------------------------------------------------------------- */
/* module functions                                                                           */

static PyObject *native_memtable_bind(PyObject *self, PyObject *arg) {
    Py_XSETREF(missing, Py_NewRef(arg));
    Py_RETURN_NONE;
}

static PyObject *flush_error(Py_ssize_t offset, const char *why) {
    PyErr_Format(PyExc_ValueError, "flush buffer: %s at offset %zd", why, offset);
    return NULL;
}

/* decode_flush_buffer(buf) -> (keys, versions, values): the columns of a flush buffer;
 * a key with several versions is one bytes object shared by its entries. */
static PyObject *native_decode_flush_buffer(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *base = view.buf;
    Py_ssize_t size = view.len;
    PyObject *keys = NULL, *versions = NULL, *values = NULL, *result = NULL;
    if (size < FLUSH_HEADER || memcmp(base, "BSMF", 4) != 0) {
        flush_error(0, "bad magic or short header");
        goto done;
    }
    if (bs_load_le32(base + 4) != 1) {
        flush_error(4, "unknown format");
        goto done;
    }
    uint64_t count = bs_load_le64(base + 8);
    if (count > (uint64_t)(size - FLUSH_HEADER) / FLUSH_ENTRY_HEADER) {
        flush_error(8, "count larger than the buffer");
        goto done;
    }
    keys = PyList_New((Py_ssize_t)count);
    versions = PyList_New((Py_ssize_t)count);
    values = PyList_New((Py_ssize_t)count);
    if (keys == NULL || versions == NULL || values == NULL)
        goto done;
    Py_ssize_t off = FLUSH_HEADER;
    PyObject *prev = NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)count; i++) {
        if (size - off < FLUSH_ENTRY_HEADER) {
            flush_error(off, "entry header past the end");
            goto done;
        }
        uint64_t version = bs_load_le64(base + off);
        uint32_t klen = bs_load_le32(base + off + 8), vlen = bs_load_le32(base + off + 12);
        Py_ssize_t body = (Py_ssize_t)klen + (vlen == TOMBSTONE_LEN ? 0 : (Py_ssize_t)vlen);
        if (size - off - FLUSH_ENTRY_HEADER < body) {
            flush_error(off, "entry past the end");
            goto done;
        }
        const char *kp = base + off + FLUSH_ENTRY_HEADER;
        PyObject *k;
        if (prev != NULL && PyBytes_GET_SIZE(prev) == (Py_ssize_t)klen
                && memcmp(PyBytes_AS_STRING(prev), kp, klen) == 0)
            k = Py_NewRef(prev);
        else
            k = PyBytes_FromStringAndSize(kp, (Py_ssize_t)klen);
        if (k == NULL)
            goto done;
        PyList_SET_ITEM(keys, i, k);
        prev = k;
        PyObject *v = PyLong_FromUnsignedLongLong(version);
        if (v == NULL)
            goto done;
        PyList_SET_ITEM(versions, i, v);
        PyObject *x = vlen == TOMBSTONE_LEN ? Py_NewRef(Py_None)
                                            : PyBytes_FromStringAndSize(kp + klen, (Py_ssize_t)vlen);
        if (x == NULL)
            goto done;
        PyList_SET_ITEM(values, i, x);
        off += FLUSH_ENTRY_HEADER + body;
    }
    if (off != size) {
        flush_error(off, "trailing bytes");
        goto done;
    }
    result = PyTuple_Pack(3, keys, versions, values);
done:
    Py_XDECREF(keys);
    Py_XDECREF(versions);
    Py_XDECREF(values);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef memtable_functions[] = {
    {"memtable_bind", native_memtable_bind, METH_O,
     "memtable_bind(MISSING): the object Memtable.get returns when nothing is visible"},
    {"decode_flush_buffer", native_decode_flush_buffer, METH_O,
     "decode_flush_buffer(buf) -> (keys, versions, values) in table order"},
    {NULL}
};

int bs_memtable_init(PyObject *module) {
    if (PyType_Ready(&MemtableType) < 0 || PyType_Ready(&SortedKeysType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Memtable", (PyObject *)&MemtableType) < 0
            || PyModule_AddObjectRef(module, "SortedKeys", (PyObject *)&SortedKeysType) < 0)
        return -1;
    return PyModule_AddFunctions(module, memtable_functions);
}

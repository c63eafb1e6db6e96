/* banyanstore._native.ClockCache: the block cache's bookkeeping (sstable/cache.py) in C.
 *
 * The same cache as sstable/cache.py's BlockCache -- CLOCK (second chance) over decoded
 * blocks charged ``block.nbytes``, keyed by one integer (table id << 32 | block number),
 * each entry optionally owning a reader's slot (``slots[no]``), which is set on insert and
 * reset to None when the block is evicted -- with the same results operation for
 * operation (tests/sstable/test_cache.py runs both).  A cache miss in the compiled core
 * calls bs_blockcache_put() directly, so the per-miss cost of the Python put (a frame, the
 * lock, an OrderedDict pop/insert/popitem, a tuple per entry: about a quarter of a
 * cold seek) goes.
 *
 * Layout: entries live in one array (indices stay valid when it grows; freed entries form
 * a list), linked in clock order (oldest -> youngest) through their indices; a hash table
 * of entry indices (open addressing, linear probing, at most half full, deletion by
 * backward shift) finds a key.
 *
 * Concurrency: every operation runs with the GIL held from start to end.  Blocks of the
 * bound Block type are read and marked through their slots, so no Python code runs inside
 * an operation; the references an operation drops (evicted and replaced blocks, their
 * slot lists) are released only after the structure is consistent again, because a
 * release may run arbitrary code.  Any other object (tests) is read through its
 * ``nbytes`` / ``ref`` attributes; a call that re-enters the cache from such code raises
 * RuntimeError.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "blockcache.h"

#define NIL UINT32_MAX
enum { TABLE_ID_SHIFT = 32, MIN_TABLE = 64, DOOMED_INLINE = 32 };

static PyTypeObject *bk_type = NULL;   /* sstable.block.Block (borrowed from bind's owner) */
static PyTypeObject *bk_lazy_type = NULL;  /* its LazyBlock subclass (the same slots) */
static Py_ssize_t bk_ref_off = -1, bk_nbytes_off = -1;
static PyObject *str_ref = NULL, *str_nbytes = NULL;

typedef struct {
    uint64_t key;
    PyObject *block;    /* strong; NULL in a free entry */
    PyObject *slots;    /* strong, or NULL: no slot to keep */
    int64_t nbytes;     /* the charge, as read at insert */
    uint32_t no;        /* the slot's index */
    uint32_t older, younger;  /* clock order; a free entry's next free is `younger` */
} CacheEntry;

typedef struct {
    PyObject_HEAD
    long long capacity, usage, hits, misses, evictions;
    long long limit;          /* what the blocks may take now: capacity, or less (set_limit) */
    CacheEntry *ent;
    uint32_t nent, cap_ent;   /* entries ever used, allocated */
    uint32_t count;           /* live entries */
    uint32_t free_head;
    uint32_t oldest, youngest;
    uint32_t *table;          /* entry index or NIL */
    uint32_t tmask;           /* table size - 1 (a power of two); table NULL: 0 */
    uint8_t *door;            /* the admission doorkeeper's bits (see admit), or NULL until used */
    uint32_t door_mask;       /* its bits - 1 */
    uint64_t door_keys;       /* keys it took since it was cleared */
    int busy;
} ClockCache;

/* References an operation drops, released once it is done (see the file comment). */
typedef struct {
    PyObject *inline_refs[DOOMED_INLINE];
    PyObject **refs;
    size_t n, cap;
} Doomed;

static void doomed_init(Doomed *d) {
    d->refs = d->inline_refs;
    d->n = 0;
    d->cap = DOOMED_INLINE;
}

/* Take over a reference (NULL is ignored).  If no memory is left to hold it, it is
 * released at once (the structure is consistent between the steps that call this). */
static void doomed_add(Doomed *d, PyObject *o) {
    if (o == NULL)
        return;
    if (d->n == d->cap) {
        size_t cap = d->cap * 2;
        PyObject **refs = PyMem_Malloc(cap * sizeof(PyObject *));
        if (refs == NULL) {
            Py_DECREF(o);
            return;
        }
        memcpy(refs, d->refs, d->n * sizeof(PyObject *));
        if (d->refs != d->inline_refs)
            PyMem_Free(d->refs);
        d->refs = refs;
        d->cap = cap;
    }
    d->refs[d->n++] = o;
}

static void doomed_release(Doomed *d) {
    for (size_t i = 0; i < d->n; i++)
        Py_DECREF(d->refs[i]);
    if (d->refs != d->inline_refs)
        PyMem_Free(d->refs);
    d->n = 0;
}

/* -- the blocks' charge and reference bit ------------------------------------------------- */

static inline int is_bound_block(PyObject *o) {
    return Py_TYPE(o) == bk_type || Py_TYPE(o) == bk_lazy_type;
}

static inline PyObject **slot_at(PyObject *o, Py_ssize_t off) {
    return (PyObject **)((char *)o + off);
}

static int read_nbytes(PyObject *block, long long *out) {
    PyObject *v;
    if (is_bound_block(block)) {
        v = Py_XNewRef(*slot_at(block, bk_nbytes_off));
        if (v == NULL) {
            PyErr_SetString(PyExc_AttributeError, "nbytes");
            return -1;
        }
    } else if ((v = PyObject_GetAttr(block, str_nbytes)) == NULL) {
        return -1;
    }
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int is_referenced(PyObject *block) {
    if (is_bound_block(block)) {
        PyObject *v = *slot_at(block, bk_ref_off);
        return v == Py_True || (v != NULL && v != Py_False && v != Py_None && PyObject_IsTrue(v) > 0);
    }
    PyObject *v = PyObject_GetAttr(block, str_ref);
    int r = v != NULL ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    if (r < 0) {  /* an unreadable bit counts as clear: the block is evicted */
        PyErr_Clear();
        return 0;
    }
    return r;
}

static int set_referenced(PyObject *block, int on, Doomed *d) {
    PyObject *v = on ? Py_True : Py_False;
    if (is_bound_block(block)) {
        PyObject **slot = slot_at(block, bk_ref_off);
        PyObject *old = *slot;
        *slot = Py_NewRef(v);
        doomed_add(d, old);
        return 0;
    }
    return PyObject_SetAttr(block, str_ref, v);
}

/* -- the hash table ---------------------------------------------------------------------- */

static inline uint32_t home(uint64_t key, uint32_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (uint32_t)key & mask;
}

/* The table position holding `key`, or NIL. */
static uint32_t find(const ClockCache *c, uint64_t key) {
    if (c->table == NULL)
        return NIL;
    for (uint32_t i = home(key, c->tmask);; i = (i + 1) & c->tmask) {
        uint32_t e = c->table[i];
        if (e == NIL)
            return NIL;
        if (c->ent[e].key == key)
            return i;
    }
}

static void table_place(ClockCache *c, uint32_t e) {
    uint32_t i = home(c->ent[e].key, c->tmask);
    while (c->table[i] != NIL)
        i = (i + 1) & c->tmask;
    c->table[i] = e;
}

/* Room in the table for one more key (at most half full). */
static int table_reserve(ClockCache *c) {
    uint64_t size = c->table == NULL ? 0 : (uint64_t)c->tmask + 1;
    if (((uint64_t)c->count + 1) * 2 <= size)
        return 0;
    uint64_t grown = size ? size * 2 : MIN_TABLE;
    if (grown > ((uint64_t)1 << 31)) {
        PyErr_SetString(PyExc_MemoryError, "the block cache holds too many blocks");
        return -1;
    }
    uint32_t *t = PyMem_Malloc((size_t)grown * sizeof(uint32_t));
    if (t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(t, 0xFF, (size_t)grown * sizeof(uint32_t));  /* NIL everywhere */
    PyMem_Free(c->table);
    c->table = t;
    c->tmask = (uint32_t)(grown - 1);
    for (uint32_t e = c->oldest; e != NIL; e = c->ent[e].younger)
        table_place(c, e);
    return 0;
}

/* Remove the key at table position `i`; later keys of its probe run shift back. */
static void table_remove(ClockCache *c, uint32_t i) {
    uint32_t mask = c->tmask;
    c->table[i] = NIL;
    for (uint32_t j = (i + 1) & mask; c->table[j] != NIL; j = (j + 1) & mask) {
        uint32_t h = home(c->ent[c->table[j]].key, mask);
        /* the key at j may move to i unless its home lies cyclically in (i, j] */
        int stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            c->table[i] = c->table[j];
            c->table[j] = NIL;
            i = j;
        }
    }
}

/* -- the clock order --------------------------------------------------------------------- */

static void link_youngest(ClockCache *c, uint32_t e) {
    c->ent[e].older = c->youngest;
    c->ent[e].younger = NIL;
    if (c->youngest != NIL)
        c->ent[c->youngest].younger = e;
    else
        c->oldest = e;
    c->youngest = e;
}

static void unlink_entry(ClockCache *c, uint32_t e) {
    CacheEntry *x = &c->ent[e];
    if (x->older != NIL)
        c->ent[x->older].younger = x->younger;
    else
        c->oldest = x->younger;
    if (x->younger != NIL)
        c->ent[x->younger].older = x->older;
    else
        c->youngest = x->older;
}

/* A free entry's index (the array may move: callers hold indices, not pointers). */
static int entry_alloc(ClockCache *c, uint32_t *out) {
    if (c->free_head != NIL) {
        *out = c->free_head;
        c->free_head = c->ent[*out].younger;
        return 0;
    }
    if (c->nent == c->cap_ent) {
        uint64_t cap = c->cap_ent ? (uint64_t)c->cap_ent * 2 : 64;
        if (cap >= NIL) {
            PyErr_SetString(PyExc_MemoryError, "the block cache holds too many blocks");
            return -1;
        }
        CacheEntry *ent = PyMem_Realloc(c->ent, (size_t)cap * sizeof(CacheEntry));
        if (ent == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->ent = ent;
        c->cap_ent = (uint32_t)cap;
    }
    *out = c->nent++;
    return 0;
}

/* Drop live entry `e` found at table position `pos`: out of the table and the order, its
 * references handed to `d`, the entry freed.  Usage and counters are the caller's. */
static void entry_drop(ClockCache *c, uint32_t e, uint32_t pos, Doomed *d) {
    table_remove(c, pos);
    unlink_entry(c, e);
    CacheEntry *x = &c->ent[e];
    doomed_add(d, x->block);
    doomed_add(d, x->slots);
    x->block = x->slots = NULL;
    x->younger = c->free_head;
    c->free_head = e;
    c->count--;
}

/* Reset the owner's slot if it still holds the entry's block (as cache.py's _drop). */
static void release_slot(CacheEntry *x, Doomed *d) {
    if (x->slots == NULL || (Py_ssize_t)x->no >= PyList_GET_SIZE(x->slots))
        return;
    if (PyList_GET_ITEM(x->slots, x->no) == x->block) {
        doomed_add(d, x->block);  /* takes over the slot's reference */
        PyList_SET_ITEM(x->slots, x->no, Py_NewRef(Py_None));
    }
}

/* Evict (or give a second chance to) the oldest entries until usage fits the limit. */
static void evict_to_fit(ClockCache *c, Doomed *d) {
    long long evicted = 0;
    while (c->usage > c->limit && c->oldest != NIL) {
        uint32_t e = c->oldest;
        CacheEntry *x = &c->ent[e];
        if (is_referenced(x->block)) {  /* second chance */
            if (set_referenced(x->block, 0, d) == 0) {
                unlink_entry(c, e);
                link_youngest(c, e);
                continue;
            }
            PyErr_Clear();  /* a bit that cannot be cleared: evicted instead of looping */
        }
        c->usage -= x->nbytes;
        evicted++;
        release_slot(x, d);
        entry_drop(c, e, find(c, x->key), d);
    }
    c->evictions += evicted;
}

static int enter(ClockCache *c) {
    if (c->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the block cache was re-entered during an operation");
        return -1;
    }
    c->busy = 1;
    return 0;
}

static int key_arg(PyObject *o, uint64_t *key) {
    *key = PyLong_AsUnsignedLongLong(o);
    return *key == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* -- the operations ---------------------------------------------------------------------- */

static int cache_put_impl(ClockCache *c, uint64_t key, PyObject *block, PyObject *slots, uint32_t no) {
    if (slots != NULL && (!PyList_CheckExact(slots) || (Py_ssize_t)no >= PyList_GET_SIZE(slots))) {
        PyErr_SetString(PyList_CheckExact(slots) ? PyExc_IndexError : PyExc_TypeError,
                        "slots must be a list with an item `no`");
        return -1;
    }
    long long nbytes;
    if (read_nbytes(block, &nbytes) < 0)
        return -1;
    if (nbytes > c->limit)
        return 0;
    Doomed d;
    doomed_init(&d);
    if (enter(c) < 0)
        return -1;
    int r = -1;
    if (set_referenced(block, 0, &d) < 0 || table_reserve(c) < 0)
        goto done;
    uint32_t pos = find(c, key);
    if (pos != NIL) {  /* a replaced key: recharged, its slot left to the new block */
        uint32_t old = c->table[pos];
        c->usage -= c->ent[old].nbytes;
        entry_drop(c, old, pos, &d);
    }
    uint32_t e;
    if (entry_alloc(c, &e) < 0)
        goto done;
    CacheEntry *x = &c->ent[e];
    x->key = key;
    x->block = Py_NewRef(block);
    x->slots = Py_XNewRef(slots);
    x->nbytes = nbytes;
    x->no = no;
    table_place(c, e);
    link_youngest(c, e);
    c->count++;
    c->usage += nbytes;
    if (slots != NULL) {
        doomed_add(&d, PyList_GET_ITEM(slots, no));  /* the slot's old reference */
        PyList_SET_ITEM(slots, no, Py_NewRef(block));
    }
    evict_to_fit(c, &d);
    r = 1;
done:
    c->busy = 0;
    doomed_release(&d);
    return r;
}

int bs_blockcache_put(PyObject *cache, uint64_t key, PyObject *block, PyObject *slots, uint32_t no) {
    return cache_put_impl((ClockCache *)cache, key, block, slots, no);
}

/* -- admission of blocks a scan reads ahead ---------------------------------------------- */

/* The doorkeeper (TinyLFU's): a Bloom filter of the keys refused once, two bits a key, one
 * bit per DOOR_BYTES_PER_BIT of capacity (a power of two, at least DOOR_MIN_BITS), cleared
 * whenever it has taken one key per 8 bits -- about twice the blocks the cache holds, so a
 * block's first miss is remembered for about as long as the cache would have kept it (and
 * at most ~5% of first misses pass as second ones). */
enum { DOOR_BYTES_PER_BIT = 256, DOOR_MIN_BITS = 8192 };

static inline uint64_t mix64(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return key;
}

static int door_open(ClockCache *c) {
    uint64_t want = (uint64_t)(c->capacity > 0 ? c->capacity : 0) / DOOR_BYTES_PER_BIT, n = DOOR_MIN_BITS;
    while (n < want && n < ((uint64_t)1 << 31))
        n <<= 1;
    uint8_t *door = PyMem_Calloc((size_t)(n / 8), 1);
    if (door == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->door = door;
    c->door_mask = (uint32_t)(n - 1);
    c->door_keys = 0;
    return 0;
}

static inline int door_bit(const uint8_t *door, uint32_t i) {
    return door[i >> 3] >> (i & 7) & 1;
}

/* The cache "has room" while a ROOM_PART-th of its limit is free (once full, evictions
 * keep it within a block of full). */
enum { ROOM_PART = 16 };

/* A scan's read-ahead is admitted within the first limit / SCAN_PART stored bytes of each
 * table's range only (sstable/cache.py: SCAN_PART): a scan longer than the cache would
 * otherwise evict, pass after pass, the blocks it cached a moment before. */
enum { SCAN_PART = 2 };

/* Whether a block read ahead by a scan (not yet cached) enters the cache: at once while
 * the cache has room (an insert then evicts nothing); never when `scanned` (the stored
 * bytes of the table's blocks the scan passed before it) exceeds limit / SCAN_PART; else
 * on its second miss within a while, not its first.  A block a scan reads once -- most of
 * a long or a one-off range scan -- then costs no insert, no eviction of a block that was
 * in use, no free of that block's payload.  1 yes, 0 no, -1 on error. */
static int cache_admit_impl(ClockCache *c, uint64_t key, uint64_t scanned) {
    if (c->usage <= c->limit - c->limit / ROOM_PART)
        return 1;
    if (scanned > (uint64_t)(c->limit / SCAN_PART))
        return 0;
    if (c->door == NULL && door_open(c) < 0)
        return -1;
    uint64_t h = mix64(key);
    uint32_t i = (uint32_t)h & c->door_mask, j = (uint32_t)(h >> 32) & c->door_mask;
    if (door_bit(c->door, i) && door_bit(c->door, j))
        return 1;
    c->door[i >> 3] |= (uint8_t)(1u << (i & 7));
    c->door[j >> 3] |= (uint8_t)(1u << (j & 7));
    if (++c->door_keys >= ((uint64_t)c->door_mask + 1) / 8) {
        memset(c->door, 0, ((size_t)c->door_mask + 1) / 8);
        c->door_keys = 0;
    }
    return 0;
}

int bs_blockcache_admit(PyObject *cache, uint64_t key, uint64_t scanned) {
    return cache_admit_impl((ClockCache *)cache, key, scanned);
}

/* admit(key, scanned=0) -> bool */
static PyObject *cache_admit(ClockCache *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "admit(key, scanned=0)");
        return NULL;
    }
    uint64_t key, scanned = 0;
    if (key_arg(args[0], &key) < 0)
        return NULL;
    if (nargs == 2) {
        if (!PyLong_Check(args[1])) {
            PyErr_Format(PyExc_TypeError, "scanned must be an int, not %s", Py_TYPE(args[1])->tp_name);
            return NULL;
        }
        scanned = PyLong_AsUnsignedLongLong(args[1]);
        if (scanned == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "scanned must be between 0 and 2**64 - 1");
            return NULL;
        }
    }
    int r = cache_admit_impl(c, key, scanned);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* put(key, block, slots=None, no=0) -> bool */
static PyObject *cache_put(ClockCache *c, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "put(key, block, slots=None, no=0)");
        return NULL;
    }
    uint64_t key;
    if (key_arg(args[0], &key) < 0)
        return NULL;
    PyObject *slots = nargs > 2 && args[2] != Py_None ? args[2] : NULL;
    unsigned long no = 0;
    if (nargs > 3) {
        no = PyLong_AsUnsignedLong(args[3]);
        if (no == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        if (no >= NIL) {
            PyErr_SetString(PyExc_IndexError, "block number out of range");
            return NULL;
        }
    }
    int r = cache_put_impl(c, key, args[1], slots, (uint32_t)no);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* get(key) -> block | None: marks the block referenced; counts the hit or miss */
static PyObject *cache_get(ClockCache *c, PyObject *arg) {
    uint64_t key;
    if (key_arg(arg, &key) < 0)
        return NULL;
    uint32_t pos = find(c, key);
    if (pos == NIL) {
        c->misses++;
        Py_RETURN_NONE;
    }
    PyObject *block = Py_NewRef(c->ent[c->table[pos]].block);
    Doomed d;
    doomed_init(&d);
    int r = set_referenced(block, 1, &d);
    doomed_release(&d);
    if (r < 0) {
        Py_DECREF(block);
        return NULL;
    }
    c->hits++;
    return block;
}

/* peek(key) -> block | None: neither counts nor marks */
static PyObject *cache_peek(ClockCache *c, PyObject *arg) {
    uint64_t key;
    if (key_arg(arg, &key) < 0)
        return NULL;
    uint32_t pos = find(c, key);
    if (pos == NIL)
        Py_RETURN_NONE;
    return Py_NewRef(c->ent[c->table[pos]].block);
}

/* Drop every entry of table `id` (key >> TABLE_ID_SHIFT == id), not counted as
 * evictions; the count. */
static Py_ssize_t drop_table(ClockCache *c, uint64_t id, Doomed *d) {
    Py_ssize_t n = 0;
    uint32_t e = c->oldest;
    while (e != NIL) {
        uint32_t next = c->ent[e].younger;
        CacheEntry *x = &c->ent[e];
        if (x->key >> TABLE_ID_SHIFT == id) {
            c->usage -= x->nbytes;
            release_slot(x, d);
            entry_drop(c, e, find(c, x->key), d);
            n++;
        }
        e = next;
    }
    return n;
}

/* evict_table(table_id) -> int: drop every block of that table (closed or deleted) */
static PyObject *cache_evict_table(ClockCache *c, PyObject *arg) {
    uint64_t id;
    if (key_arg(arg, &id) < 0)
        return NULL;
    Doomed d;
    doomed_init(&d);
    if (enter(c) < 0)
        return NULL;
    Py_ssize_t n = drop_table(c, id, &d);
    c->busy = 0;
    doomed_release(&d);
    return PyLong_FromSsize_t(n);
}

/* set_limit(limit) -> int: let the blocks take at most `limit` bytes (0 <= limit <=
 * capacity) from now on, evicting (CLOCK order) down to it at once; the bytes freed */
static PyObject *cache_set_limit(ClockCache *c, PyObject *arg) {
    long long limit = PyLong_AsLongLong(arg);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 0 || limit > c->capacity) {
        PyErr_Format(PyExc_ValueError, "limit must be between 0 and the capacity (%lld), not %lld",
                     c->capacity, limit);
        return NULL;
    }
    Doomed d;
    doomed_init(&d);
    if (enter(c) < 0)
        return NULL;
    long long before = c->usage;
    c->limit = limit;
    evict_to_fit(c, &d);
    long long freed = before - c->usage;
    c->busy = 0;
    doomed_release(&d);
    return PyLong_FromLongLong(freed);
}

/* clear(): drop every block */
static PyObject *cache_clear_all(ClockCache *c, PyObject *unused) {
    Doomed d;
    doomed_init(&d);
    if (enter(c) < 0)
        return NULL;
    while (c->oldest != NIL) {
        uint32_t e = c->oldest;
        CacheEntry *x = &c->ent[e];
        c->usage -= x->nbytes;
        release_slot(x, &d);
        entry_drop(c, e, find(c, x->key), &d);
    }
    c->busy = 0;
    doomed_release(&d);
    Py_RETURN_NONE;
}

static Py_ssize_t cache_len(ClockCache *c) {
    return (Py_ssize_t)c->count;
}

/* -- the type ---------------------------------------------------------------------------- */

static int cache_init(ClockCache *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity_bytes", NULL};
    long long capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:ClockCache", kwlist, &capacity))
        return -1;
    if (capacity < 0) {
        PyErr_SetString(PyExc_ValueError, "capacity_bytes must be >= 0");
        return -1;
    }
    if (c->count != 0 || c->ent != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ClockCache is already initialised");
        return -1;
    }
    c->capacity = c->limit = capacity;
    c->free_head = c->oldest = c->youngest = NIL;
    return 0;
}

static PyObject *cache_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
    ClockCache *c = (ClockCache *)tp->tp_alloc(tp, 0);
    if (c != NULL)
        c->free_head = c->oldest = c->youngest = NIL;
    return (PyObject *)c;
}

static int cache_traverse(ClockCache *c, visitproc visit, void *arg) {
    for (uint32_t e = c->oldest; e != NIL; e = c->ent[e].younger) {
        Py_VISIT(c->ent[e].block);
        Py_VISIT(c->ent[e].slots);
    }
    return 0;
}

static int cache_gc_clear(ClockCache *c) {
    Doomed d;
    doomed_init(&d);
    while (c->oldest != NIL) {
        uint32_t e = c->oldest;
        c->usage -= c->ent[e].nbytes;
        entry_drop(c, e, find(c, c->ent[e].key), &d);
    }
    doomed_release(&d);
    return 0;
}

/* (a Python subclass's instances come here through subtype_dealloc, which releases the
 * subclass itself) */
static void cache_dealloc(ClockCache *c) {
    PyObject_GC_UnTrack(c);
    cache_gc_clear(c);
    PyMem_Free(c->ent);
    PyMem_Free(c->table);
    PyMem_Free(c->door);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef cache_methods[] = {
    {"put", (PyCFunction)(void (*)(void))cache_put, METH_FASTCALL,
     "put(key, block, slots=None, no=0) -> bool: cache `block` charged block.nbytes (False: larger "
     "than the capacity, nothing cached); with `slots`, slots[no] = block until it is evicted"},
    {"get", (PyCFunction)cache_get, METH_O, "get(key) -> block | None: marks it referenced, counts"},
    {"admit", (PyCFunction)(void (*)(void))cache_admit, METH_FASTCALL,
     "admit(key, scanned=0) -> bool: whether a block a scan reads ahead may be cached (while the "
     "cache has room, yes; past limit // 2 scanned bytes of its table, no; else on its second "
     "miss within a while: a doorkeeper)"},
    {"peek", (PyCFunction)cache_peek, METH_O, "peek(key) -> block | None: neither counts nor marks"},
    {"evict_table", (PyCFunction)cache_evict_table, METH_O,
     "evict_table(table_id) -> int: drop every block of that table"},
    {"clear", (PyCFunction)cache_clear_all, METH_NOARGS, "clear(): drop every block"},
    {"set_limit", (PyCFunction)cache_set_limit, METH_O,
     "set_limit(limit) -> int: the blocks may take at most `limit` bytes (0..capacity) from now "
     "on; evicts down to it at once and returns the bytes freed"},
    {NULL}
};

static PyMemberDef cache_members[] = {
    {"capacity", T_LONGLONG, offsetof(ClockCache, capacity), READONLY, "bytes the blocks may take"},
    {"limit", T_LONGLONG, offsetof(ClockCache, limit), READONLY,
     "bytes the blocks may take now (the capacity unless set_limit lowered it)"},
    {"usage", T_LONGLONG, offsetof(ClockCache, usage), READONLY, "bytes charged for the cached blocks"},
    {"hits", T_LONGLONG, offsetof(ClockCache, hits), 0, "hits counted by Python code"},
    {"misses", T_LONGLONG, offsetof(ClockCache, misses), 0, "misses counted by Python code"},
    {"evictions", T_LONGLONG, offsetof(ClockCache, evictions), 0, "blocks evicted for room"},
    {NULL}
};

static PySequenceMethods cache_as_sequence = {
    .sq_length = (lenfunc)cache_len,
};

static PyTypeObject ClockCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.ClockCache",
    .tp_basicsize = sizeof(ClockCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ClockCache(capacity_bytes): decoded blocks bounded by their charge (CLOCK); "
              "sstable/cache.py's BlockCache in C",
    .tp_new = cache_new,
    .tp_init = (initproc)cache_init,
    .tp_dealloc = (destructor)cache_dealloc,
    .tp_traverse = (traverseproc)cache_traverse,
    .tp_clear = (inquiry)cache_gc_clear,
    .tp_methods = cache_methods,
    .tp_members = cache_members,
    .tp_as_sequence = &cache_as_sequence,
};

void bs_blockcache_bind(PyTypeObject *block_type, PyTypeObject *lazy_type, Py_ssize_t ref_off,
                        Py_ssize_t nbytes_off) {
    bk_type = block_type;
    bk_lazy_type = lazy_type;
    bk_ref_off = ref_off;
    bk_nbytes_off = nbytes_off;
}

int bs_blockcache_of_put(PyObject *put, PyObject **cache) {
    if (!PyCFunction_Check(put) || PyCFunction_GET_FUNCTION(put) != (PyCFunction)(void (*)(void))cache_put)
        return 0;
    PyObject *self = PyCFunction_GET_SELF(put);
    if (self == NULL || !PyObject_TypeCheck(self, &ClockCacheType))
        return 0;
    *cache = self;
    return 1;
}

int bs_blockcache_init(PyObject *module) {
    str_ref = PyUnicode_InternFromString("ref");
    str_nbytes = PyUnicode_InternFromString("nbytes");
    if (str_ref == NULL || str_nbytes == NULL || PyType_Ready(&ClockCacheType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "ClockCache", (PyObject *)&ClockCacheType);
}

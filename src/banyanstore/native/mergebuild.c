/* banyanstore._native.MergeBuild: a compaction merge's output data blocks built in C.
 *
 * What lsm/merge.py's merge_entries feeding sstable/builder.py's add_many does, for inputs
 * without range tombstones, in one pass with no Python object per entry: the entries of the
 * input tables merged in internal order (key ascending, version descending), each key's
 * versions reclaimed by merge.reclaim's rules, the survivors checked as add_many checks them
 * (same ValueError texts), cut into data blocks exactly where add_many cuts them and encoded
 * byte for byte as encode_block encodes them (tablebuild.c's encoder).  Compressing,
 * checksumming and writing each block stay with the Python caller (TableBuilder), so the
 * table file is the pure merge's, byte for byte.
 *
 *   MergeBuild(sources, paths, points, floor, ttl_floor, bottom, block_size, max_key_size,
 *              max_value_size, bloom_bits_per_key, probes, masks, direct_hash=True,
 *              check=None)
 *
 *   sources  one iterator per input table, newest table first, yielding (offset, payload) for
 *            each of its data blocks in order: the payload checked and decompressed by the
 *            table's reader, the offset where the block is stored (for error messages)
 *   paths    the tables' paths (error messages)
 *   points   the merge's reader points, ascending (MergeSpec.reader_points())
 *   check    None or a callable run before each input block is taken; what it raises
 *            stops the merge (a store closing: a merge that drops most of its input
 *            may read many blocks between two output blocks)
 *
 * Iterating yields each output data block's payload.  Once it is exhausted the properties
 * (entries, keys, tombstones, raw_size, min_version, max_version, smallest, largest), the
 * index lists (last_keys, last_versions) and the filter payload (None without a filter) are
 * set; before that they are None.
 *
 * Reclamation, per key (entries newest first; see lsm/merge.py for why): an entry below the
 * TTL floor ends the key's group (it and all older ones go); one at or above the floor is
 * kept; one below it is kept if the first reader point at or above its version lies below
 * the next newer entry's version.  In a bottom merge, kept tombstones below the floor at the
 * end of the group go (nothing older exists to hide): they wait in ``pending`` until a later
 * kept entry of the key shows they are not at the end.
 *
 * Memory safety: payloads are parsed by bs_block_parse and read through blockview.h's
 * bounds-checked accessors; damage is CorruptionError naming the table and the block's
 * offset.  Each source must run in strictly increasing internal order (else
 * CorruptionError): the merge's order rests on it.  A survivor's key and value are copied
 * into the output block's arena, so a source lets go of each block as it leaves it.
 *
 * Concurrency: runs with the GIL held (it asks the sources' Python iterators for blocks)
 * except while filling an output block's payload; one thread uses a MergeBuild (a next()
 * while another is running -- another thread's, or a callback's -- raises ValueError).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "blockview.h"
#include "corruption.h"
#include "mergebuild.h"
#include "tablebuild.h"

enum { EMPTY_BLOCK = BLOCK_HEADER + 8, PER_ENTRY = 17, TABLE_BITS = 14, MAX_PROBES = 16 };

/* One input table: its current block and head entry. */
typedef struct {
    PyObject *iter;            /* (offset, payload) pairs */
    PyObject *payload;         /* the current block's payload (strong); NULL once done */
    long long offset;          /* where that block is stored */
    BlockView bv;
    uint32_t pos;              /* the head entry's index in the block */
    const uint8_t *key, *value;  /* the head entry (value NULL: a tombstone) */
    Py_ssize_t klen, vlen;
    uint64_t version;
} Source;

/* A survivor waiting in the output block: where its bytes are in the arena. */
typedef struct {
    Py_ssize_t at;             /* key, then value */
    uint32_t klen, vlen;
    uint64_t version;
    int tombstone;
} Slot;

typedef struct {
    PyObject_HEAD
    Source *src;
    Py_ssize_t nsrc;
    Py_ssize_t *heap;          /* indexes of the live sources, a binary min-heap */
    Py_ssize_t nheap;
    PyObject *paths;
    PyObject *check;           /* callable or NULL: run before each input block is taken */
    uint64_t *points;
    Py_ssize_t npoints;
    uint64_t floor, ttl_floor;
    int bottom, direct, started, exhausted;
    int running;               /* inside next(): a callback calling next() again is refused */
    long long block_size;
    unsigned long long max_key, max_value;
    unsigned bits_per_key, probes;
    Py_buffer masks;
    /* the key whose versions are being decided */
    uint8_t *gkey;
    Py_ssize_t gklen, gkcap;
    int in_group, group_cut, have_newer;
    uint64_t newer;
    uint64_t *pending;         /* versions of kept tombstones below the floor (bottom merges) */
    Py_ssize_t npending, pending_cap;
    /* the output block being filled */
    uint8_t *arena;
    Py_ssize_t alen, acap;
    Slot *slots;
    Py_ssize_t nslots, slots_cap;
    EntryRef *refs;
    Py_ssize_t refs_cap;
    long long bsize;
    PyObject *ready;           /* finished payloads not yet yielded (list) */
    Py_ssize_t ready_at;
    /* what add_many keeps */
    uint8_t *lkey;             /* the last survivor's key */
    Py_ssize_t lklen, lkcap;
    uint64_t last_version;
    unsigned long long entries, keys, tombstones, raw_size, min_version, max_version;
    uint64_t *hashes;
    Py_ssize_t nhashes, hashes_cap;
    PyObject *first_key;       /* bytes: the first survivor's key */
    PyObject *last_keys, *last_versions;
    /* set once exhausted */
    PyObject *smallest, *largest, *filter, *out_last_keys, *out_last_versions;
} MergeBuildObject;

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                            */

static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap)
        return 0;
    Py_ssize_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)n * item);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static int keycmp(const uint8_t *a, Py_ssize_t alen, const uint8_t *b, Py_ssize_t blen) {
    Py_ssize_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, (size_t)n) : 0;
    return c ? c : (alen > blen) - (alen < blen);
}

static PyObject *source_path(MergeBuildObject *m, Py_ssize_t i) {
    return PyList_GET_ITEM(m->paths, i);
}

/* Whether source a's head comes before source b's: key ascending, then the newer table
 * first -- the order of the pure merge's stable sort by key (each table's versions of a key
 * follow one another, descending; the tables of a merge hold disjoint version ranges, so
 * this is also version order, and where damage breaks that, add_entry's check sees it as
 * add_many does). */
static inline int head_before(const MergeBuildObject *m, Py_ssize_t a, Py_ssize_t b) {
    const Source *x = &m->src[a], *y = &m->src[b];
    int c = keycmp(x->key, x->klen, y->key, y->klen);
    return c ? c < 0 : a < b;
}

static void sift_down(MergeBuildObject *m, Py_ssize_t i) {
    Py_ssize_t n = m->nheap, *h = m->heap;
    for (;;) {
        Py_ssize_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < n && head_before(m, h[l], h[best]))
            best = l;
        if (r < n && head_before(m, h[r], h[best]))
            best = r;
        if (best == i)
            return;
        Py_ssize_t t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* the sources                                                                              */

/* Read the head entry (index s->pos of the current block). */
static int read_head(MergeBuildObject *m, Py_ssize_t i) {
    Source *s = &m->src[i];
    if (block_key(&s->bv, s->pos, &s->key, &s->klen) < 0) {
        bs_raise_corruption(source_path(m, i), s->offset, "data block: key offsets of entry %u are "
                            "out of bounds", s->pos);
        return -1;
    }
    if (block_value(&s->bv, s->pos, &s->value, &s->vlen) < 0) {
        bs_raise_corruption(source_path(m, i), s->offset, "data block: value offsets of entry %u "
                            "are out of bounds", s->pos);
        return -1;
    }
    s->version = block_version(&s->bv, s->pos);
    return 0;
}

/* Make the source's next block current: 1, 0 if it has no more, -1 on error. */
static int next_block(MergeBuildObject *m, Py_ssize_t i) {
    Source *s = &m->src[i];
    if (m->check != NULL) {
        PyObject *r = PyObject_CallNoArgs(m->check);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    PyObject *item = PyIter_Next(s->iter);
    if (item == NULL)
        return PyErr_Occurred() ? -1 : 0;
    long long offset = -1;
    PyObject *payload = NULL;
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2
            && PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
        offset = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 0));
        payload = PyTuple_GET_ITEM(item, 1);
    }
    if (payload == NULL || (offset == -1 && PyErr_Occurred())) {
        Py_DECREF(item);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "MergeBuild: sources must yield (offset: int, "
                                              "payload: bytes) pairs");
        return -1;
    }
    const char *why = NULL;
    BlockView bv;
    if (bs_block_parse((const uint8_t *)PyBytes_AS_STRING(payload),
                       (uint64_t)PyBytes_GET_SIZE(payload), &bv, &why) < 0) {
        bs_raise_corruption(source_path(m, i), offset, "data block does not parse: %s", why);
        Py_DECREF(item);
        return -1;
    }
    Py_INCREF(payload);
    Py_DECREF(item);
    Py_XSETREF(s->payload, payload);
    s->offset = offset;
    s->bv = bv;
    s->pos = 0;
    return 1;
}

/* Move the source past its head; drops it from the heap when it has no more entries.
 * REQUIRES: the source is the heap's top. */
static int source_advance(MergeBuildObject *m) {
    Py_ssize_t i = m->heap[0];
    Source *s = &m->src[i];
    /* the old head stays readable until the order check: hold its block */
    PyObject *held = Py_NewRef(s->payload);
    const uint8_t *pkey = s->key;
    Py_ssize_t pklen = s->klen;
    uint64_t pversion = s->version;
    int rc = 1;
    if (++s->pos >= s->bv.count)
        rc = next_block(m, i);
    if (rc == 1 && read_head(m, i) < 0)
        rc = -1;
    if (rc == 1) {
        int c = keycmp(s->key, s->klen, pkey, pklen);
        if (c < 0 || (c == 0 && s->version >= pversion)) {
            bs_raise_corruption(source_path(m, i), s->offset, "data block: entry %u is out of "
                                "order (not after the entry before it)", s->pos);
            rc = -1;
        }
    }
    Py_DECREF(held);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        Py_CLEAR(s->payload);
        if (m->nheap > 0)
            m->heap[0] = m->heap[--m->nheap];
    }
    sift_down(m, 0);
    return 0;
}

static int start_sources(MergeBuildObject *m) {
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        int rc = next_block(m, i);
        if (rc < 0 || (rc == 1 && read_head(m, i) < 0))
            return -1;
        if (rc == 1)
            m->heap[m->nheap++] = i;
    }
    for (Py_ssize_t i = m->nheap / 2 - 1; i >= 0; i--)
        sift_down(m, i);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* the output: add_many's checks and block cuts                                             */

static int flush_block(MergeBuildObject *m) {
    Py_ssize_t n = m->nslots;
    if (n == 0)
        return 0;
    if (grow((void **)&m->refs, &m->refs_cap, n, sizeof(EntryRef)) < 0)
        return -1;
    EntryRef *refs = m->refs;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Slot *sl = &m->slots[i];
        refs[i] = (EntryRef){.key = m->arena + sl->at, .klen = sl->klen,
                             .value = sl->tombstone ? NULL : m->arena + sl->at + sl->klen,
                             .vlen = sl->tombstone ? 0 : sl->vlen, .version = sl->version};
    }
    PyObject *payload = bs_encode_entries(refs, n, 1);
    const Slot *last = &m->slots[n - 1];
    PyObject *lk = payload ? PyBytes_FromStringAndSize((const char *)m->arena + last->at, last->klen)
                           : NULL;
    PyObject *lv = lk ? PyLong_FromUnsignedLongLong(last->version) : NULL;
    int rc = -1;
    if (lv && PyList_Append(m->last_keys, lk) == 0 && PyList_Append(m->last_versions, lv) == 0
            && PyList_Append(m->ready, payload) == 0)
        rc = 0;
    Py_XDECREF(payload);
    Py_XDECREF(lk);
    Py_XDECREF(lv);
    m->nslots = 0;
    m->alen = 0;
    m->bsize = EMPTY_BLOCK;
    return rc;
}

static PyObject *repr_bytes(const uint8_t *p, Py_ssize_t n) {
    PyObject *b = PyBytes_FromStringAndSize((const char *)p, n);
    if (b == NULL)
        return NULL;
    PyObject *r = PyObject_Repr(b);
    Py_DECREF(b);
    return r;
}

/* The out-of-order ValueError of TableBuilder.add_many. */
static int raise_order(MergeBuildObject *m, const uint8_t *key, Py_ssize_t klen, uint64_t version,
                       int same_key) {
    PyObject *k = repr_bytes(key, klen), *lk = repr_bytes(m->lkey, m->lklen);
    if (k && lk) {
        if (same_key)
            PyErr_Format(PyExc_ValueError, "out of order: %U@%llu after %U@%llu", k,
                         (unsigned long long)version, lk, (unsigned long long)m->last_version);
        else
            PyErr_Format(PyExc_ValueError, "out of order: key %U after %U", k, lk);
    }
    Py_XDECREF(k);
    Py_XDECREF(lk);
    return -1;
}

/* TableBuilder.add_many for one survivor (value NULL: a tombstone). */
static int add_entry(MergeBuildObject *m, const uint8_t *key, Py_ssize_t klen, uint64_t version,
                     const uint8_t *value, Py_ssize_t vlen) {
    if ((unsigned long long)klen > m->max_key) {
        PyErr_Format(PyExc_ValueError, "key of %zd bytes exceeds max_key_size %llu", klen, m->max_key);
        return -1;
    }
    Py_ssize_t size = klen;
    if (value != NULL) {
        if ((unsigned long long)vlen > m->max_value) {
            PyErr_Format(PyExc_ValueError, "value of %zd bytes exceeds max_value_size %llu", vlen,
                         m->max_value);
            return -1;
        }
        size += vlen;
    }
    if (version == 0) {
        PyErr_SetString(PyExc_ValueError, "version 0 is outside 1 .. 2**64-1");
        return -1;
    }
    int c = m->entries ? keycmp(key, klen, m->lkey, m->lklen) : 1;
    if (c == 0) {
        if (version >= m->last_version)
            return raise_order(m, key, klen, version, 1);
    } else if (c > 0) {
        if (m->entries == 0) {
            m->first_key = PyBytes_FromStringAndSize((const char *)key, klen);
            if (m->first_key == NULL)
                return -1;
        }
        if (m->bits_per_key) {
            if (grow((void **)&m->hashes, &m->hashes_cap, m->nhashes + 1, sizeof(uint64_t)) < 0
                    || bs_key_hash(key, (size_t)klen, m->direct, &m->hashes[m->nhashes]) < 0)
                return -1;
            m->nhashes++;
        }
        m->keys++;
        if (grow((void **)&m->lkey, &m->lkcap, klen ? klen : 1, 1) < 0)
            return -1;
        memcpy(m->lkey, key, (size_t)klen);
        m->lklen = klen;
    } else
        return raise_order(m, key, klen, version, 0);
    /* committed */
    m->last_version = version;
    m->entries++;
    m->raw_size += (unsigned long long)size;
    if (value == NULL)
        m->tombstones++;
    if (version < m->min_version)
        m->min_version = version;
    if (version > m->max_version)
        m->max_version = version;
    /* at least one byte: an empty value's pointer into the arena must not be NULL (a tombstone) */
    if (grow((void **)&m->arena, &m->acap, m->alen + size + 1, 1) < 0
            || grow((void **)&m->slots, &m->slots_cap, m->nslots + 1, sizeof(Slot)) < 0)
        return -1;
    Slot *sl = &m->slots[m->nslots++];
    *sl = (Slot){.at = m->alen, .klen = (uint32_t)klen, .vlen = value ? (uint32_t)vlen : 0,
                 .version = version, .tombstone = value == NULL};
    memcpy(m->arena + m->alen, key, (size_t)klen);
    if (value != NULL && vlen)
        memcpy(m->arena + m->alen + klen, value, (size_t)vlen);
    m->alen += size;
    m->bsize += PER_ENTRY + size;
    if (m->bsize >= m->block_size)
        return flush_block(m);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* reclamation                                                                              */

/* The pending tombstones go out after all: a later entry of their key is kept. */
static int release_pending(MergeBuildObject *m) {
    for (Py_ssize_t i = 0; i < m->npending; i++)
        if (add_entry(m, m->gkey, m->gklen, m->pending[i], NULL, 0) < 0)
            return -1;
    m->npending = 0;
    return 0;
}

/* First reader point >= v (may be npoints). */
static Py_ssize_t point_at_or_above(const MergeBuildObject *m, uint64_t v) {
    Py_ssize_t lo = 0, hi = m->npoints;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (m->points[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Decide the heap top's head (the next entry in internal order) and move past it. */
static int step(MergeBuildObject *m) {
    Source *s = &m->src[m->heap[0]];
    if (!m->in_group || keycmp(s->key, s->klen, m->gkey, m->gklen) != 0) {
        m->npending = 0;  /* a finished group's trailing tombstones below the floor go */
        if (grow((void **)&m->gkey, &m->gkcap, s->klen ? s->klen : 1, 1) < 0)
            return -1;
        memcpy(m->gkey, s->key, (size_t)s->klen);
        m->gklen = s->klen;
        m->in_group = 1;
        m->group_cut = 0;
        m->have_newer = 0;
    }
    if (!m->group_cut) {
        uint64_t v = s->version;
        if (v < m->ttl_floor)
            m->group_cut = 1;  /* this and every older version are past the TTL */
        else {
            int keep = v >= m->floor;
            if (!keep) {
                Py_ssize_t p = point_at_or_above(m, v);
                keep = p < m->npoints && (!m->have_newer || m->points[p] < m->newer);
            }
            if (keep) {
                if (m->bottom && s->value == NULL && v < m->floor) {
                    if (grow((void **)&m->pending, &m->pending_cap, m->npending + 1,
                             sizeof(uint64_t)) < 0)
                        return -1;
                    m->pending[m->npending++] = v;
                } else if (release_pending(m) < 0
                           || add_entry(m, s->key, s->klen, v, s->value, s->vlen) < 0)
                    return -1;
            }
            m->newer = v;
            m->have_newer = 1;
        }
    }
    return source_advance(m);
}

/* The properties, once every entry went through. */
static int finish(MergeBuildObject *m) {
    m->npending = 0;
    if (flush_block(m) < 0)
        return -1;
    if (m->entries == 0) {
        m->smallest = PyBytes_FromStringAndSize("", 0);
        m->largest = Py_XNewRef(m->smallest);
        m->min_version = 0;
    } else {
        m->smallest = Py_NewRef(m->first_key);
        m->largest = PyBytes_FromStringAndSize((const char *)m->lkey, m->lklen);
    }
    if (m->smallest == NULL || m->largest == NULL)
        return -1;
    if (m->bits_per_key && m->entries)
        m->filter = bs_build_filter(m->hashes, (uint64_t)m->nhashes, m->bits_per_key, m->probes,
                                    m->masks.buf);
    else
        m->filter = Py_NewRef(Py_None);
    if (m->filter == NULL)
        return -1;
    m->out_last_keys = Py_NewRef(m->last_keys);
    m->out_last_versions = Py_NewRef(m->last_versions);
    m->exhausted = 1;
    return 0;
}

static PyObject *merge_next(MergeBuildObject *m);

/* next(merge_build) -> the next output data block's payload.  Callbacks run inside it (the
 * sources' iterators, check(), a payload's release); one of them calling next() again, or
 * another thread while the GIL is released, is refused as a running generator refuses it. */
static PyObject *MergeBuild_next(MergeBuildObject *m) {
    if (m->running) {
        PyErr_SetString(PyExc_ValueError, "MergeBuild already executing");
        return NULL;
    }
    if (m->ready == NULL)  /* cleared by the garbage collector */
        return NULL;
    m->running = 1;
    PyObject *out = merge_next(m);
    m->running = 0;
    return out;
}

static PyObject *merge_next(MergeBuildObject *m) {
    if (!m->started) {
        m->started = 1;
        if (start_sources(m) < 0)
            goto fail;
    }
    while (m->ready_at >= PyList_GET_SIZE(m->ready)) {
        if (m->exhausted)
            return NULL;  /* StopIteration */
        if (PyList_SetSlice(m->ready, 0, PyList_GET_SIZE(m->ready), NULL) < 0)
            goto fail;
        m->ready_at = 0;
        while (m->nheap > 0 && PyList_GET_SIZE(m->ready) == 0)
            if (step(m) < 0)
                goto fail;
        if (m->nheap == 0 && PyList_GET_SIZE(m->ready) == 0 && finish(m) < 0)
            goto fail;
    }
    return Py_NewRef(PyList_GET_ITEM(m->ready, m->ready_at++));
fail:
    m->nheap = 0;  /* a failed merge yields nothing more, and has no properties */
    m->exhausted = 1;
    Py_CLEAR(m->smallest);
    PyList_SetSlice(m->ready, 0, PyList_GET_SIZE(m->ready), NULL);
    m->ready_at = 0;
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* construction and lifetime                                                                */

static int MergeBuild_traverse(MergeBuildObject *m, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        Py_VISIT(m->src[i].iter);
        Py_VISIT(m->src[i].payload);
    }
    Py_VISIT(m->paths);
    Py_VISIT(m->check);
    Py_VISIT(m->ready);
    Py_VISIT(m->last_keys);
    Py_VISIT(m->last_versions);
    Py_VISIT(m->out_last_keys);
    Py_VISIT(m->out_last_versions);
    return 0;
}

static int MergeBuild_clear(MergeBuildObject *m) {
    for (Py_ssize_t i = 0; i < m->nsrc; i++) {
        Py_CLEAR(m->src[i].iter);
        Py_CLEAR(m->src[i].payload);
    }
    m->nheap = 0;
    m->exhausted = 1;
    m->started = 1;
    Py_CLEAR(m->paths);
    Py_CLEAR(m->check);
    Py_CLEAR(m->ready);
    Py_CLEAR(m->last_keys);
    Py_CLEAR(m->last_versions);
    Py_CLEAR(m->out_last_keys);
    Py_CLEAR(m->out_last_versions);
    return 0;
}

static void MergeBuild_dealloc(MergeBuildObject *m) {
    PyObject_GC_UnTrack(m);
    MergeBuild_clear(m);
    if (m->masks.obj)
        PyBuffer_Release(&m->masks);
    PyMem_Free(m->src);
    PyMem_Free(m->heap);
    PyMem_Free(m->points);
    PyMem_Free(m->gkey);
    PyMem_Free(m->pending);
    PyMem_Free(m->arena);
    PyMem_Free(m->slots);
    PyMem_Free(m->refs);
    PyMem_Free(m->lkey);
    PyMem_Free(m->hashes);
    Py_XDECREF(m->first_key);
    Py_XDECREF(m->smallest);
    Py_XDECREF(m->largest);
    Py_XDECREF(m->filter);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int bad_arg(const char *name) {
    PyErr_Format(PyExc_ValueError, "MergeBuild: %s is out of range", name);
    return -1;
}

/* The reader points: a list of ints, ascending, each in 0 .. 2**64-1. */
static int take_points(MergeBuildObject *m, PyObject *points) {
    if (!PyList_Check(points)) {
        PyErr_SetString(PyExc_TypeError, "MergeBuild: points must be a list of ints");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(points);
    m->points = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (m->points == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(points, i));
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (i && v <= m->points[i - 1])
            return bad_arg("points (not strictly ascending)");
        m->points[i] = v;
    }
    m->npoints = n;
    return 0;
}

static int take_iterators(MergeBuildObject *m, PyObject *sources, PyObject *paths);

static int take_sources(MergeBuildObject *m, PyObject *sources_list, PyObject *paths) {
    if (!PyList_Check(sources_list) || !PyList_Check(paths)) {
        PyErr_SetString(PyExc_TypeError, "MergeBuild: sources and paths must be lists");
        return -1;
    }
    /* a copy: an __iter__ below runs Python code, which may change the caller's list */
    PyObject *sources = PyList_AsTuple(sources_list);
    if (sources == NULL)
        return -1;
    int rc = take_iterators(m, sources, paths);
    Py_DECREF(sources);
    return rc;
}

static int take_iterators(MergeBuildObject *m, PyObject *sources, PyObject *paths) {
    Py_ssize_t n = PyTuple_GET_SIZE(sources);
    if (PyList_GET_SIZE(paths) != n)
        return bad_arg("paths (not one per source)");
    m->src = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Source));
    m->heap = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    if (m->src == NULL || m->heap == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    m->paths = PyList_GetSlice(paths, 0, n);
    if (m->paths == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        m->src[i].iter = PyObject_GetIter(PyTuple_GET_ITEM(sources, i));
        if (m->src[i].iter == NULL)
            return -1;
        m->nsrc = i + 1;
    }
    return 0;
}

static int take_masks(MergeBuildObject *m, PyObject *masks) {
    if (!m->bits_per_key)
        return 0;
    if (PyObject_GetBuffer(masks, &m->masks, PyBUF_SIMPLE) < 0)
        return -1;
    if (m->masks.len != (Py_ssize_t)8 << TABLE_BITS) {
        PyErr_SetString(PyExc_ValueError, "MergeBuild: masks must hold 2**14 u64 masks");
        return -1;
    }
    return 0;
}

static PyObject *MergeBuild_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"sources", "paths", "points", "floor", "ttl_floor", "bottom",
                             "block_size", "max_key_size", "max_value_size", "bloom_bits_per_key",
                             "probes", "masks", "direct_hash", "check", NULL};
    PyObject *sources, *paths, *points, *masks, *check = Py_None;
    PyObject *floor_obj, *ttl_obj;
    unsigned long long floor, ttl_floor;
    long long block_size, max_key, max_value, bits, probes;
    int bottom, direct = 1;
    if (bs_hash_init() < 0
            || !PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOpLLLLLO|pO:MergeBuild", kwlist,
                                            &sources, &paths, &points, &floor_obj, &ttl_obj, &bottom,
                                            &block_size, &max_key, &max_value, &bits, &probes,
                                            &masks, &direct, &check))
        return NULL;
    /* versions are u64: a floor past them raises OverflowError instead of wrapping */
    floor = PyLong_AsUnsignedLongLong(floor_obj);
    if (floor == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    ttl_floor = PyLong_AsUnsignedLongLong(ttl_obj);
    if (ttl_floor == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (check != Py_None && !PyCallable_Check(check)) {
        PyErr_SetString(PyExc_TypeError, "MergeBuild: check must be callable or None");
        return NULL;
    }
    const char *bad = block_size < 1 ? "block_size" : max_key < 0 ? "max_key_size"
                    : max_value < 0 ? "max_value_size"
                    : bits < 0 || bits > 1024 ? "bloom_bits_per_key"
                    : bits && (probes < 1 || probes > MAX_PROBES) ? "probes" : NULL;
    if (bad) {
        bad_arg(bad);
        return NULL;
    }
    MergeBuildObject *m = (MergeBuildObject *)type->tp_alloc(type, 0);
    if (m == NULL)
        return NULL;
    m->floor = floor;
    m->ttl_floor = ttl_floor;
    m->bottom = bottom;
    m->direct = direct;
    m->block_size = block_size;
    m->max_key = (unsigned long long)max_key;
    m->max_value = (unsigned long long)max_value;
    m->bits_per_key = (unsigned)bits;
    m->probes = (unsigned)probes;
    m->check = check == Py_None ? NULL : Py_NewRef(check);
    m->bsize = EMPTY_BLOCK;
    m->min_version = UINT64_MAX;
    m->ready = PyList_New(0);
    m->last_keys = PyList_New(0);
    m->last_versions = PyList_New(0);
    if (m->ready == NULL || m->last_keys == NULL || m->last_versions == NULL
            || take_points(m, points) < 0 || take_sources(m, sources, paths) < 0
            || take_masks(m, masks) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

/* the properties: None until the merge is exhausted */
static PyObject *when_done(MergeBuildObject *m, PyObject *v) {
    return Py_NewRef(m->exhausted && v != NULL ? v : Py_None);
}

static PyObject *when_done_int(MergeBuildObject *m, unsigned long long v) {
    if (!(m->exhausted && m->smallest != NULL))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(v);
}

#define GETTER(name, expr) \
    static PyObject *get_##name(MergeBuildObject *m, void *unused) { return expr; }
GETTER(smallest, when_done(m, m->smallest))
GETTER(largest, when_done(m, m->largest))
GETTER(filter, when_done(m, m->filter))
GETTER(last_keys, when_done(m, m->out_last_keys))
GETTER(last_versions, when_done(m, m->out_last_versions))
GETTER(entries, when_done_int(m, m->entries))
GETTER(keys, when_done_int(m, m->keys))
GETTER(tombstones, when_done_int(m, m->tombstones))
GETTER(raw_size, when_done_int(m, m->raw_size))
GETTER(min_version, when_done_int(m, m->min_version))
GETTER(max_version, when_done_int(m, m->max_version))
#undef GETTER

static PyGetSetDef MergeBuild_getset[] = {
    {"smallest", (getter)get_smallest, NULL, "the first survivor's key (b'' if none)", NULL},
    {"largest", (getter)get_largest, NULL, "the last survivor's key (b'' if none)", NULL},
    {"filter", (getter)get_filter, NULL, "the bloom filter payload, or None", NULL},
    {"last_keys", (getter)get_last_keys, NULL, "each output block's last key", NULL},
    {"last_versions", (getter)get_last_versions, NULL, "each output block's last version", NULL},
    {"entries", (getter)get_entries, NULL, "survivors", NULL},
    {"keys", (getter)get_keys, NULL, "distinct keys among the survivors", NULL},
    {"tombstones", (getter)get_tombstones, NULL, "tombstones among the survivors", NULL},
    {"raw_size", (getter)get_raw_size, NULL, "the survivors' key and value bytes", NULL},
    {"min_version", (getter)get_min_version, NULL, "the survivors' lowest version (0: none)", NULL},
    {"max_version", (getter)get_max_version, NULL, "the survivors' highest version", NULL},
    {NULL},
};

static PyTypeObject MergeBuildType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.MergeBuild",
    .tp_doc = "A compaction merge's output data blocks (see native/mergebuild.c).",
    .tp_basicsize = sizeof(MergeBuildObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = MergeBuild_new,
    .tp_dealloc = (destructor)MergeBuild_dealloc,
    .tp_traverse = (traverseproc)MergeBuild_traverse,
    .tp_clear = (inquiry)MergeBuild_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)MergeBuild_next,
    .tp_getset = MergeBuild_getset,
};

int bs_mergebuild_init(PyObject *module) {
    if (PyType_Ready(&MergeBuildType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "MergeBuild", (PyObject *)&MergeBuildType);
}

/* banyanstore._native.FrameWriter: the hot path of a Log segment writer (log/writer.py).
 *
 * One call stores one record, framed, into the segment's shared mapping: the FULL
 * fragment header, the seq, the data and the CRC-32C over them -- or, for a record
 * that does not fit in the rest of its block, its FIRST/MIDDLE/LAST fragments and
 * the block trailers -- and keeps the segment's sparse index.  The Python class
 * (log/writer.py, NativeSegmentWriter) keeps everything else: sealing, publishing
 * the end to readers, rotation (log/log.py).  The pure-Python SegmentWriter writes
 * the same bytes (tests/log/test_native_framing.py compares them).
 *
 * The byte grammar written here (log/format.py is the authoritative text; all
 * integers little-endian):
 *
 *   block    := fragment* trailer?          blocks of 32768 bytes from file offset 0
 *   trailer  := 0x00 * (1..6)               when fewer than 7 bytes remain in a block
 *   fragment := crc:u32 length:u16 type:u8 payload[length]
 *               crc = CRC-32C(type byte || payload)
 *   type     := 1 FULL | 2 FIRST | 3 MIDDLE | 4 LAST
 *   record   := FULL | FIRST MIDDLE* LAST   the payloads concatenated: seq:u64 || data
 *
 * Not written here: the SEAL fragment (type 5, format 3) that ends a segment with a
 * successor, and the zeros padding its block when it does not fit; log/writer.py
 * stores them once this framing is done with the segment (both engines alike).
 *
 * The window: file bytes [base, base + len(window)) mapped writable by the file's
 * map(start, length) -> (window, base).  It is re-acquired as a buffer on every call
 * and released before returning, so the file may unmap it (seal, close) at any time
 * between calls; a stale window raises the window's own error (ValueError).  Every
 * store is checked against the buffer's length.
 *
 * CRC-32C: SSE4.2's crc32 instruction where the CPU has it (checked at import),
 * else a table-driven loop; both give the crc32c package's values
 * (tests/log/test_native_framing.py checks them against it).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "byteorder.h"
#include "logframe.h"
#include "walrecord.h"

enum {
    BLOCK_SIZE = 32768,
    FRAG_HEADER = 7,            /* crc u32, length u16, type u8 */
    SEQ_SIZE = 8,
    SMALL = FRAG_HEADER + SEQ_SIZE,  /* framing bytes of a one-fragment record */
    FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4,
};

/* -- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) ------------------------------- */

static uint32_t crc_table[8][256];

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

/* the running (inverted) CRC over p[0..n): slicing by 8 */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        lo = __builtin_bswap32(lo);
        hi = __builtin_bswap32(hi);
#endif
        lo ^= c;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF]
            ^ crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24]
            ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF]
            ^ crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c;
}

/* -- appending zeros to a CRC in one step (to combine CRCs computed side by side) ---------- */
/*
 * The CRC register after `len` more zero bytes is a linear function of the register: a
 * 32x32 matrix over GF(2), built by squaring the one-zero-bit operator (as zlib's
 * crc32_combine), then tabulated per byte of the register (M. Adler's crc32c.c).
 */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* zeros[k][b]: the register after `len` (a power of two >= 1) zero bytes from a register
 * holding byte b at byte position k and zeros elsewhere. */
static void crc_zeros_table(uint32_t zeros[4][256], size_t len) {
    uint32_t odd[32], even[32];
    odd[0] = 0x82F63B78u;  /* one zero bit */
    for (int n = 1; n < 32; n++)
        odd[n] = 1u << (n - 1);
    gf2_square(even, odd);  /* two zero bits */
    gf2_square(odd, even);  /* four */
    uint32_t *op = odd;
    for (;;) {  /* each pass doubles: one zero byte first */
        gf2_square(even, odd);
        op = even;
        len >>= 1;
        if (len == 0)
            break;
        gf2_square(odd, even);
        op = odd;
        len >>= 1;
        if (len == 0)
            break;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++)
            zeros[k][n] = gf2_times(op, n << (8 * k));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SSE42_PATH 1

/* The hardware instruction has a latency of three cycles and a throughput of one a cycle,
 * so one dependent chain uses a third of it: long inputs go as three interleaved chains
 * over STRIPE-byte stripes, combined by appending STRIPE zero bytes to the earlier CRCs. */
enum { STRIPE = 256 };
static uint32_t crc_stripe_zeros[4][256];

static inline uint32_t crc_append_stripe(uint32_t c) {
    return crc_stripe_zeros[0][c & 0xFF] ^ crc_stripe_zeros[1][(c >> 8) & 0xFF]
           ^ crc_stripe_zeros[2][(c >> 16) & 0xFF] ^ crc_stripe_zeros[3][c >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 3 * STRIPE) {
        uint64_t c1 = 0, c2 = 0;
        for (const uint8_t *end = p + STRIPE; p < end; p += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + STRIPE, 8);
            memcpy(&w2, p + 2 * STRIPE, 8);
            c64 = __builtin_ia32_crc32di(c64, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
        }
        c64 = crc_append_stripe((uint32_t)c64) ^ (uint32_t)c1;
        c64 = crc_append_stripe((uint32_t)c64) ^ (uint32_t)c2;
        p += 2 * STRIPE;
        n -= 3 * STRIPE;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

static uint32_t (*crc_run)(uint32_t, const uint8_t *, size_t) = crc_sw;

/* crc32c(data, value) of the crc32c package: value is the CRC of the bytes before */
static inline uint32_t crc_extend(uint32_t crc, const uint8_t *p, size_t n) {
    return ~crc_run(~crc, p, n);
}

uint32_t bs_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
    return crc_extend(crc, p, n);
}

/* crc32c(data, value=0) -> int: the crc32c package's function (for tests and tools) */
static PyObject *logframe_crc32c(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c(data, value=0)");
        return NULL;
    }
    unsigned long long value = 0;
    if (nargs == 2) {
        value = PyLong_AsUnsignedLongLong(args[1]);
        if (value == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        if (value > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "value does not fit in 32 unsigned bits");
            return NULL;
        }
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc_extend((uint32_t)value, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* -- FrameWriter ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *map;         /* the file's map(start, length) -> (window, base) */
    PyObject *index_add;   /* the segment's SparseIndex.add(seq, offset) */
    PyObject *window;      /* the mapped window (mmap or memoryview) */
    long long base;        /* file offset of window[0] */
    long long pos;         /* where the next byte goes, in the window */
    long long window_len;  /* len(window) */
    long long left;        /* room in the current block; 0 only when the window ends here */
    long long limit;       /* segment_size: full from this file offset on */
    long long window_size; /* bytes mapped at a time (whole blocks) */
    unsigned long long next_index;
    unsigned long long interval;
} FrameWriter;

static int fw_traverse(FrameWriter *self, visitproc visit, void *arg) {
    Py_VISIT(self->map);
    Py_VISIT(self->index_add);
    Py_VISIT(self->window);
    return 0;
}

static int fw_clear(FrameWriter *self) {
    Py_CLEAR(self->map);
    Py_CLEAR(self->index_add);
    Py_CLEAR(self->window);
    return 0;
}

static void fw_dealloc(FrameWriter *self) {
    PyObject_GC_UnTrack(self);
    fw_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* With an exception set by map(): if it is a full disk (an OSError whose errno is ENOSPC
 * or EDQUOT: a DiskFullError), clear it and return 1; else leave it set and return 0. */
static int fw_disk_full(void) {
    if (!PyErr_ExceptionMatches(PyExc_OSError))
        return 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    long code = -1;
    PyObject *attr = value != NULL ? PyObject_GetAttrString(value, "errno") : NULL;
    if (attr != NULL) {
        code = PyLong_Check(attr) ? PyLong_AsLong(attr) : -1;
        Py_DECREF(attr);
    }
    PyErr_Clear();  /* from a missing or odd errno attribute: the original matters */
    if (code == ENOSPC || code == EDQUOT) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return 1;
    }
    PyErr_Restore(type, value, tb);
    return 0;
}

/* Map the window holding file offset `offset` and at least `need` bytes after it: from
 * the start of offset's block, whole blocks (SegmentWriter._map). */
static int fw_map(FrameWriter *self, long long offset, long long need) {
    long long base = offset - offset % BLOCK_SIZE;
    long long blocks = (offset - base + need + BLOCK_SIZE - 1) / BLOCK_SIZE * BLOCK_SIZE;
    if (blocks < BLOCK_SIZE)
        blocks = BLOCK_SIZE;
    long long length = blocks > self->window_size ? blocks : self->window_size;
    PyObject *r = PyObject_CallFunction(self->map, "LL", base, length);
    if (r == NULL && length > blocks && fw_disk_full()) {
        /* Less free space than a window: reserve only the blocks needed (writer.py's
         * _reserve), else a writer could not open or go on though its records fit. */
        length = blocks;
        r = PyObject_CallFunction(self->map, "LL", base, length);
    }
    if (r == NULL)
        return -1;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "map() must return (window, base)");
        return -1;
    }
    long long got = PyLong_AsLongLong(PyTuple_GET_ITEM(r, 1));
    if (got == -1 && PyErr_Occurred()) {
        Py_DECREF(r);
        return -1;
    }
    if (got != base) {  /* block boundaries are page boundaries */
        Py_DECREF(r);
        PyErr_Format(PyExc_AssertionError, "map(%lld) returned a window at %lld", base, got);
        return -1;
    }
    PyObject *window = PyTuple_GET_ITEM(r, 0);
    Py_ssize_t len = PyObject_Length(window);
    if (len < 0) {
        Py_DECREF(r);
        return -1;
    }
    if (len < length) {
        Py_DECREF(r);
        PyErr_Format(PyExc_AssertionError, "map() returned %zd bytes of %lld", len, length);
        return -1;
    }
    Py_INCREF(window);
    Py_XSETREF(self->window, window);
    Py_DECREF(r);
    self->base = base;
    self->window_len = len;
    self->pos = offset - base;
    self->left = BLOCK_SIZE - offset % BLOCK_SIZE;
    return 0;
}

/* the window as a writable buffer of at least `end` bytes (released by the caller) */
static int fw_buffer(FrameWriter *self, Py_buffer *b, long long end) {
    if (self->window == NULL) {
        PyErr_SetString(PyExc_ValueError, "FrameWriter.__init__ was not called");
        return -1;
    }
    if (PyObject_GetBuffer(self->window, b, PyBUF_WRITABLE) < 0)
        return -1;
    if (b->len < end || b->len < self->window_len) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "the log window shrank to %zd bytes", b->len);
        return -1;
    }
    return 0;
}

/* Fill the rest of the block with a zero trailer (SegmentWriter._pad). */
static int fw_pad(FrameWriter *self) {
    Py_buffer b;
    if (fw_buffer(self, &b, self->pos + self->left) < 0)
        return -1;
    memset((uint8_t *)b.buf + self->pos, 0, (size_t)self->left);
    PyBuffer_Release(&b);
    self->pos += self->left;
    self->left = self->pos < self->window_len ? BLOCK_SIZE : 0;
    return 0;
}

static int fw_init(FrameWriter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"map", "index_add", "start", "segment_size", "window", "next_index",
                             "interval", NULL};
    PyObject *map, *index_add;
    long long start, limit, window;
    unsigned long long next_index, interval;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLLLKK", kwlist, &map, &index_add, &start,
                                     &limit, &window, &next_index, &interval))
        return -1;
    if (start < 0 || limit <= 0 || window <= 0 || window % BLOCK_SIZE || interval == 0) {
        PyErr_SetString(PyExc_ValueError, "FrameWriter: start >= 0, segment_size > 0, window a "
                        "positive multiple of the block size, interval > 0");
        return -1;
    }
    Py_INCREF(map);
    Py_XSETREF(self->map, map);
    Py_INCREF(index_add);
    Py_XSETREF(self->index_add, index_add);
    self->limit = limit;
    self->window_size = window;
    self->next_index = next_index;
    self->interval = interval;
    if (fw_map(self, start, 0) < 0)
        return -1;
    if (self->left < FRAG_HEADER)  /* a fragment header never straddles a block */
        return fw_pad(self);
    return 0;
}

/* At most how many bytes a record of n data bytes takes (SegmentWriter's _framed_bound). */
static long long framed_bound(long long n) {
    long long payload = SEQ_SIZE + n;
    return payload + FRAG_HEADER * (payload / (BLOCK_SIZE - FRAG_HEADER) + 3);
}

/* A record that does not fit in the rest of its block (SegmentWriter._add_slow): map room
 * for all of it first (a full disk fails before any byte is stored), then one fragment
 * per block. */
static int fw_add_slow(FrameWriter *self, uint64_t seq, const uint8_t *data, long long n) {
    long long need = framed_bound(n);
    if (self->pos + need > self->window_len && fw_map(self, self->base + self->pos, need) < 0)
        return -1;
    Py_buffer b;
    if (fw_buffer(self, &b, self->pos + need) < 0)
        return -1;
    uint8_t *w = b.buf;
    uint8_t seqb[SEQ_SIZE];
    bs_store_le64(seqb, seq);
    long long total = SEQ_SIZE + n, done = 0;
    int first = 1;
    for (;;) {
        long long room = self->left - FRAG_HEADER, chunk = total - done;
        if (chunk > room)
            chunk = room;
        int last = done + chunk >= total;
        uint8_t kind = first ? (last ? FULL : FIRST) : (last ? LAST : MIDDLE);
        uint8_t *out = w + self->pos + FRAG_HEADER;
        /* the chunk of seq || data starting at `done` */
        long long from_seq = done < SEQ_SIZE ? SEQ_SIZE - done : 0;
        if (from_seq > chunk)
            from_seq = chunk;
        memcpy(out, seqb + done, (size_t)from_seq);
        long long data_at = done + from_seq - SEQ_SIZE;
        memcpy(out + from_seq, data + data_at, (size_t)(chunk - from_seq));
        uint32_t crc = crc_extend(crc_extend(0, &kind, 1), out, (size_t)chunk);
        uint8_t *h = w + self->pos;
        bs_store_le32(h, crc);
        bs_store_le16(h + 4, (uint16_t)chunk);
        h[6] = kind;
        self->pos += FRAG_HEADER + chunk;
        self->left -= FRAG_HEADER + chunk;
        if (self->left == 0)
            self->left = BLOCK_SIZE;
        done += chunk;
        first = 0;
        if (last)
            break;
    }
    PyBuffer_Release(&b);
    if (self->left < FRAG_HEADER)
        return fw_pad(self);
    if (self->pos == self->window_len)
        self->left = 0;  /* the record ended the window: the next one maps more */
    return 0;
}

/* Record seq at file offset `offset` in the sparse index (before its bytes are stored, as
 * the Python writer does). */
static int fw_index(FrameWriter *self, uint64_t seq, long long offset) {
    PyObject *r = PyObject_CallFunction(self->index_add, "KL", (unsigned long long)seq, offset);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    self->next_index = seq + self->interval;
    return 0;
}

/* Store record seq; 1 stored, 0 the segment is full (nothing stored), -1 error. */
static int fw_store(FrameWriter *self, uint64_t seq, const uint8_t *data, long long n) {
    if (self->window == NULL || self->map == NULL || self->index_add == NULL) {
        PyErr_SetString(PyExc_ValueError, "FrameWriter.__init__ was not called");
        return -1;
    }
    long long pos = self->pos, offset = self->base + pos;
    if (offset >= self->limit)
        return 0;
    if (seq >= self->next_index && fw_index(self, seq, offset) < 0)
        return -1;
    long long size = n + SMALL, left = self->left - size;
    if (left >= FRAG_HEADER) {
        /* one FULL fragment: the fast path */
        Py_buffer b;
        if (fw_buffer(self, &b, pos + size) < 0)
            return -1;
        uint8_t *h = (uint8_t *)b.buf + pos;
        h[6] = FULL;
        bs_store_le64(h + FRAG_HEADER, seq);
        memcpy(h + SMALL, data, (size_t)n);
        uint32_t c = crc_run(~0u, h + 6, 1 + SEQ_SIZE);
        c = ~crc_run(c, data, (size_t)n);
        bs_store_le16(h + 4, (uint16_t)(size - FRAG_HEADER));
        bs_store_le32(h, c);
        PyBuffer_Release(&b);
        self->left = left;
        self->pos = pos + size;
    } else if (fw_add_slow(self, seq, data, n) < 0) {
        return -1;
    }
    return 1;
}

static int as_seq(PyObject *o, uint64_t *seq) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *seq = v;
    return 0;
}

/* add(seq, data) -> bool: SegmentWriter.add */
static PyObject *fw_add(FrameWriter *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t seq;
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "add(seq: int, data: bytes)");
        return NULL;
    }
    if (as_seq(args[0], &seq) < 0)
        return NULL;
    int r = fw_store(self, seq, (const uint8_t *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* add_many(first_seq, records: list[bytes]) -> int stored: SegmentWriter.add_many */
static PyObject *fw_add_many(FrameWriter *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t seq;
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "add_many(first_seq: int, records: list[bytes])");
        return NULL;
    }
    if (as_seq(args[0], &seq) < 0)
        return NULL;
    PyObject *records = args[1];
    Py_ssize_t i = 0;
    for (; i < PyList_GET_SIZE(records); i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(rec)) {
            PyErr_SetString(PyExc_TypeError, "add_many: every record must be bytes");
            return NULL;
        }
        Py_INCREF(rec);  /* the index callback runs Python code that could change the list */
        int r = fw_store(self, seq + (uint64_t)i, (const uint8_t *)PyBytes_AS_STRING(rec),
                         PyBytes_GET_SIZE(rec));
        Py_DECREF(rec);
        if (r < 0)
            return NULL;
        if (r == 0)
            break;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *fw_get_offset(FrameWriter *self, void *closure) {
    return PyLong_FromLongLong(self->base + self->pos);
}

static PyObject *fw_get_full(FrameWriter *self, void *closure) {
    return PyBool_FromLong(self->base + self->pos >= self->limit);
}

static PyMethodDef fw_methods[] = {
    {"add", (PyCFunction)(void (*)(void))fw_add, METH_FASTCALL,
     "add(seq, data) -> bool: store one framed record; False (nothing stored) when full"},
    {"add_many", (PyCFunction)(void (*)(void))fw_add_many, METH_FASTCALL,
     "add_many(first_seq, records) -> how many were stored (fewer only when full)"},
    {NULL}
};

static PyGetSetDef fw_getset[] = {
    {"offset", (getter)fw_get_offset, NULL, "the file offset after the last record stored", NULL},
    {"full", (getter)fw_get_full, NULL, "whether the segment reached segment_size", NULL},
    {NULL}
};

static PyTypeObject FrameWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.FrameWriter",
    .tp_basicsize = sizeof(FrameWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FrameWriter(map, index_add, start, segment_size, window, next_index, interval): "
              "stores framed log records into a segment's shared mapping",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fw_init,
    .tp_dealloc = (destructor)fw_dealloc,
    .tp_traverse = (traverseproc)fw_traverse,
    .tp_clear = (inquiry)fw_clear,
    .tp_methods = fw_methods,
    .tp_getset = fw_getset,
};

/* -- LogTail --------------------------------------------------------------------------------- */
/*
 * The appending state of a writable Log shared with C: the next seq, the number of
 * followers waiting for appends, and the active segment's FrameWriter (None while the
 * Log may not append, or has no writer).  log/log.py keeps the rest (rotation, group
 * commit, failures) and reads and writes these members under its lock.
 *
 * append_put is the store's write path (lsm/writer.py): one call encodes the WAL record
 * of one put or delete (native/walrecord.h) straight into the mapped window with its
 * framing and CRC, under the Log's lock, and returns its seq -- or None, storing
 * nothing, when the record needs the Python path (Log.append): no writer or a failed
 * one, followers to notify, a full segment, a record that does not fit in the rest of
 * its block, or any error before a byte is stored (the Python path meets it again and
 * handles it as append() does).
 */

typedef struct {
    PyObject_HEAD
    unsigned long long next_seq;
    long long followers;
    PyObject *frames;   /* FrameWriter or Py_None */
    PyObject *acquire;  /* the Log's lock */
    PyObject *release;
} LogTail;

static PyTypeObject LogTailType;

static PyTypeObject FrameWriterType;

static int lt_traverse(LogTail *self, visitproc visit, void *arg) {
    Py_VISIT(self->frames);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    return 0;
}

static int lt_clear(LogTail *self) {
    Py_CLEAR(self->frames);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    return 0;
}

static void lt_dealloc(LogTail *self) {
    PyObject_GC_UnTrack(self);
    lt_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int lt_init(LogTail *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"next_seq", "lock", NULL};
    unsigned long long next_seq;
    PyObject *lock;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KO", kwlist, &next_seq, &lock))
        return -1;
    if (bs_lock_methods(lock, &self->acquire, &self->release) < 0)
        return -1;
    Py_INCREF(Py_None);
    Py_XSETREF(self->frames, Py_None);
    self->next_seq = next_seq;
    self->followers = 0;
    return 0;
}

static PyObject *lt_get_frames(LogTail *self, void *closure) {
    return Py_NewRef(self->frames ? self->frames : Py_None);
}

static int lt_set_frames(LogTail *self, PyObject *value, void *closure) {
    if (value == NULL || (value != Py_None && !PyObject_TypeCheck(value, &FrameWriterType))) {
        PyErr_SetString(PyExc_TypeError, "frames must be a FrameWriter or None");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->frames, value);
    return 0;
}

static int lt_unlock(LogTail *self) {
    PyObject *r = PyObject_CallNoArgs(self->release);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Store the FULL fragment of record seq whose data is the WAL record of one entry;
 * 1 stored, 0 not here (the Python path stores it), -1 error.  REQUIRES: the lock. */
static int lt_store_put(FrameWriter *fw, uint64_t seq, uint64_t version, uint64_t ms, uint32_t ks,
                        const char *key, uint32_t k, const char *value, uint32_t v) {
    long long pos = fw->pos, offset = fw->base + pos;
    long long n = BS_WAL_HEADER + BS_WAL_ENTRY + (long long)k + v, size = n + SMALL;
    long long left = fw->left - size;
    if (offset >= fw->limit || left < FRAG_HEADER)
        return 0;  /* a full segment (rotation) or a record crossing its block */
    if (seq >= fw->next_index && fw_index(fw, seq, offset) < 0)
        return -1;
    Py_buffer b;
    if (fw_buffer(fw, &b, pos + size) < 0)
        return -1;
    uint8_t *h = (uint8_t *)b.buf + pos, *data = h + SMALL;
    h[6] = FULL;
    bs_store_le64(h + FRAG_HEADER, seq);
    bs_wal_put_header(data, 1, version, ms);
    bs_wal_put_entry(data + BS_WAL_HEADER, ks, key, k, value, v);
    bs_store_le16(h + 4, (uint16_t)(size - FRAG_HEADER));
    bs_store_le32(h, ~crc_run(~0u, h + 6, (size_t)(size - 6)));
    PyBuffer_Release(&b);
    fw->left = left;
    fw->pos = pos + size;
    return 1;
}

/* append_put(version, commit_ms, keyspace, key, value) -> seq | None (see above) */
static PyObject *lt_append_put(LogTail *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "append_put(version, commit_ms, keyspace, key, value)");
        return NULL;
    }
    unsigned long long version = PyLong_AsUnsignedLongLong(args[0]);
    if (version == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long ms = PyLong_AsUnsignedLongLong(args[1]);
    if (ms == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long ks = PyLong_AsUnsignedLongLong(args[2]);
    if (ks == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *key = args[3], *value = args[4];
    if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
        PyErr_SetString(PyExc_TypeError, "append_put: key and value must be bytes (value None: "
                        "a tombstone)");
        return NULL;
    }
    Py_ssize_t k = PyBytes_GET_SIZE(key), v = value == Py_None ? 0 : PyBytes_GET_SIZE(value);
    if (ks > UINT32_MAX || k >= BLOCK_SIZE || v >= BLOCK_SIZE)
        Py_RETURN_NONE;  /* never fits in a block here: the Python path checks and stores it */
    if (self->frames == NULL || self->frames == Py_None || self->followers)
        Py_RETURN_NONE;
    PyObject *r = PyObject_CallNoArgs(self->acquire);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    /* re-read under the lock: a rotation or a failure may have run while we waited */
    PyObject *frames = self->frames;
    int stored = 0;
    uint64_t seq = self->next_seq;
    if (frames != NULL && frames != Py_None && !self->followers) {
        Py_INCREF(frames);  /* the index callback runs Python code: keep it alive */
        FrameWriter *fw = (FrameWriter *)frames;
        if (fw->window != NULL && fw->index_add != NULL)
            stored = lt_store_put(fw, seq, version, ms, (uint32_t)ks, PyBytes_AS_STRING(key),
                                  (uint32_t)k, value == Py_None ? NULL : PyBytes_AS_STRING(value),
                                  (uint32_t)v);
        Py_DECREF(frames);
        if (stored < 0) {
            PyErr_Clear();  /* nothing was stored: append() meets the error and handles it */
            stored = 0;
        }
    }
    if (stored)
        self->next_seq = seq + 1;
    if (lt_unlock(self) < 0)
        return NULL;
    if (!stored)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(seq);
}

int bs_lock_methods(PyObject *lock, PyObject **acquire, PyObject **release) {
    PyObject *a = PyObject_GetAttrString(lock, "acquire");
    if (a == NULL)
        return -1;
    PyObject *r = PyObject_GetAttrString(lock, "release");
    if (r == NULL) {
        Py_DECREF(a);
        return -1;
    }
    Py_XSETREF(*acquire, a);
    Py_XSETREF(*release, r);
    return 0;
}

PyObject *bs_logtail_of(PyObject *bound) {
    if (!PyCFunction_Check(bound))
        return NULL;
    PyObject *self = PyCFunction_GET_SELF(bound);
    if (self == NULL || !Py_IS_TYPE(self, &LogTailType))
        return NULL;
    return self;
}

PyObject *bs_logtail_append_put(PyObject *tail, PyObject *const *args, Py_ssize_t nargs) {
    if (!Py_IS_TYPE(tail, &LogTailType)) {
        PyErr_SetString(PyExc_TypeError, "not a LogTail");
        return NULL;
    }
    return lt_append_put((LogTail *)tail, args, nargs);
}

static PyMemberDef lt_members[] = {
    {"next_seq", T_ULONGLONG, offsetof(LogTail, next_seq), 0, "the seq the next record gets"},
    {"followers", T_LONGLONG, offsetof(LogTail, followers), 0,
     "threads waiting for appends (appends then take the Python path, which notifies them)"},
    {NULL}
};

static PyGetSetDef lt_getset[] = {
    {"frames", (getter)lt_get_frames, (setter)lt_set_frames,
     "the active segment's FrameWriter, or None: appends take the Python path", NULL},
    {NULL}
};

static PyMethodDef lt_methods[] = {
    {"append_put", (PyCFunction)(void (*)(void))lt_append_put, METH_FASTCALL,
     "append_put(version, commit_ms, keyspace, key, value) -> seq | None: the WAL record of "
     "one put or delete, encoded, framed and stored in one call; None: use Log.append"},
    {NULL}
};

static PyTypeObject LogTailType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "banyanstore._native.LogTail",
    .tp_basicsize = sizeof(LogTail),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "LogTail(next_seq, lock): a writable Log's appending state (log/log.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lt_init,
    .tp_dealloc = (destructor)lt_dealloc,
    .tp_traverse = (traverseproc)lt_traverse,
    .tp_clear = (inquiry)lt_clear,
    .tp_members = lt_members,
    .tp_getset = lt_getset,
    .tp_methods = lt_methods,
};

static PyMethodDef logframe_functions[] = {
    {"crc32c", (PyCFunction)(void (*)(void))logframe_crc32c, METH_FASTCALL,
     "crc32c(data, value=0) -> int: CRC-32C, as the crc32c package computes it"},
    {NULL}
};

int bs_logframe_init(PyObject *module) {
    crc_table_init();
#ifdef HAVE_SSE42_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_zeros_table(crc_stripe_zeros, STRIPE);
        crc_run = crc_hw;
    }
#endif
    if (PyType_Ready(&FrameWriterType) < 0 || PyType_Ready(&LogTailType) < 0
            || PyModule_AddObjectRef(module, "FrameWriter", (PyObject *)&FrameWriterType) < 0
            || PyModule_AddObjectRef(module, "LogTail", (PyObject *)&LogTailType) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "CRC32C_IMPL", crc_run == crc_sw ? "table" : "sse4.2") < 0)
        return -1;
    return PyModule_AddFunctions(module, logframe_functions);
}

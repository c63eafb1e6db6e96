/* A data block's payload seen in place (the grammar: docs/format/sstable.md; the parse:
 * blockview.c), shared by the read path (_native.c) and the compaction merge (mergebuild.c).
 *
 *   block  := count:u32 key_width:u32 value_width:u32 flags:u32
 *             versions:(count x u64)
 *             keys    (flags & 1 ? count x key_width : offsets:(count+1) x u32 heap)
 *             values  (flags & 2 ? count x value_width : offsets:(count+1) x u32 heap)
 *             kinds   (flags & 4 ? count x u8, 1 = tombstone)
 *
 * bs_block_parse checks what Block.__init__ (sstable/block.py) checks -- that the header's
 * sections tile the payload exactly and that each offsets array starts at 0 and never
 * decreases, so every item lies inside its heap -- when a payload read from disk is decoded;
 * bs_block_view checks the tiling alone, for the payload of a Block, checked when it was
 * decoded.  The accessors still check each variable-width offset as they read it, so a
 * payload that was never checked (a Block made without Block.__init__) is read safely. */
#ifndef BANYANSTORE_NATIVE_BLOCKVIEW_H
#define BANYANSTORE_NATIVE_BLOCKVIEW_H

#include <Python.h>
#include <stdint.h>

#include "byteorder.h"

enum { FIXED_KEYS = 1, FIXED_VALUES = 2, TOMBSTONES = 4, KNOWN_FLAGS = 7, BLOCK_HEADER = 16 };

typedef struct {
    const uint8_t *p;
    uint64_t size;
    uint32_t count, kw, vw, flags;
    uint64_t keys_at;    /* fixed keys, or the key offsets array */
    uint64_t kheap_at, kheap_len;
    uint64_t values_at;  /* fixed values, or the value offsets array */
    uint64_t vheap_at, vheap_len;
    uint64_t kinds_at;
} BlockView;

/* Key i of a block: pointer and length; -1 if its offsets are out of bounds. */
static inline int block_key(const BlockView *b, uint32_t i, const uint8_t **k, Py_ssize_t *len) {
    if (b->flags & FIXED_KEYS) {
        *k = b->p + b->kheap_at + (uint64_t)i * b->kw;
        *len = b->kw;
        return 0;
    }
    const uint8_t *off = b->p + b->keys_at + 4 * (uint64_t)i;
    uint32_t a = bs_load_le32(off), e = bs_load_le32(off + 4);
    if (a > e || e > b->kheap_len)
        return -1;
    *k = b->p + b->kheap_at + a;
    *len = (Py_ssize_t)(e - a);
    return 0;
}

static inline uint64_t block_version(const BlockView *b, uint32_t i) {
    return bs_load_le64(b->p + BLOCK_HEADER + 8 * (uint64_t)i);
}

/* Value i: sets *v / *len, *v NULL for a tombstone; -1 if out of bounds. */
static inline int block_value(const BlockView *b, uint32_t i, const uint8_t **v, Py_ssize_t *len) {
    if ((b->flags & TOMBSTONES) && b->p[b->kinds_at + i]) {
        *v = NULL;
        *len = 0;
        return 0;
    }
    if (b->flags & FIXED_VALUES) {
        *v = b->p + b->vheap_at + (uint64_t)i * b->vw;
        *len = b->vw;
        return 0;
    }
    const uint8_t *off = b->p + b->values_at + 4 * (uint64_t)i;
    uint32_t a = bs_load_le32(off), e = bs_load_le32(off + 4);
    if (a > e || e > b->vheap_len)
        return -1;
    *v = b->p + b->vheap_at + a;
    *len = (Py_ssize_t)(e - a);
    return 0;
}

/* Parse a block payload read from disk: its header, that its sections tile the payload
 * exactly, and that its offsets arrays are in order (O(entries)).  The same payloads as
 * Block.__init__ refuses.  Returns 0, or -1 with *why set (no Python exception). */
int bs_block_parse(const uint8_t *p, uint64_t size, BlockView *b, const char **why);

/* bs_block_parse without the order of the offsets (O(1)): for the payload of a Block, which
 * was checked when it was decoded -- every lookup and scan of a cached block parses it
 * again, where a pass over its offsets would cost more than the lookup's search. */
int bs_block_view(const uint8_t *p, uint64_t size, BlockView *b, const char **why);

#endif

/* The parse of a data block's header (blockview.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "blockview.h"

int bs_block_view(const uint8_t *p, uint64_t size, BlockView *b, const char **why) {
    if (size < BLOCK_HEADER) {
        *why = "block is shorter than its header";
        return -1;
    }
    b->p = p;
    b->size = size;
    b->count = bs_load_le32(p);
    b->kw = bs_load_le32(p + 4);
    b->vw = bs_load_le32(p + 8);
    b->flags = bs_load_le32(p + 12);
    if (b->flags & ~(uint32_t)KNOWN_FLAGS) {
        *why = "unknown block flags";
        return -1;
    }
    if (b->count < 1) {
        *why = "empty block";
        return -1;
    }
    uint64_t n = b->count;
    uint64_t pos = BLOCK_HEADER + 8 * n; /* count < 2^32: no overflow in 64 bits */
    if (pos > size) {
        *why = "versions run past the end of the block";
        return -1;
    }
    b->keys_at = pos;
    if (b->flags & FIXED_KEYS) {
        b->kheap_at = pos;
        b->kheap_len = n * b->kw;
        pos += b->kheap_len;
    } else {
        uint64_t heap = pos + 4 * (n + 1);
        if (heap > size) {
            *why = "key offsets run past the end of the block";
            return -1;
        }
        uint32_t first = bs_load_le32(p + pos), last = bs_load_le32(p + heap - 4);
        if (first != 0 || heap + last > size) {
            *why = "key heap bounds are invalid";
            return -1;
        }
        b->kheap_at = heap;
        b->kheap_len = last;
        pos = heap + last;
    }
    if (pos > size) {
        *why = "keys run past the end of the block";
        return -1;
    }
    b->values_at = pos;
    if (b->flags & FIXED_VALUES) {
        b->vheap_at = pos;
        b->vheap_len = n * b->vw;
        pos += b->vheap_len;
    } else {
        uint64_t heap = pos + 4 * (n + 1);
        if (heap > size) {
            *why = "value offsets run past the end of the block";
            return -1;
        }
        uint32_t first = bs_load_le32(p + pos), last = bs_load_le32(p + heap - 4);
        if (first != 0 || heap + last > size) {
            *why = "value heap bounds are invalid";
            return -1;
        }
        b->vheap_at = heap;
        b->vheap_len = last;
        pos = heap + last;
    }
    b->kinds_at = pos;
    if (b->flags & TOMBSTONES)
        pos += n;
    if (pos != size) {
        *why = "block sections do not add up to its size";
        return -1;
    }
    return 0;
}


/* Whether the n + 1 u32 offsets at `off` never decrease (so, starting at 0 and ending at the
 * heap's length, each item lies inside the heap). */
static int offsets_ordered(const uint8_t *off, uint64_t n) {
    uint32_t prev = bs_load_le32(off);
    for (uint64_t i = 1; i <= n; i++) {
        uint32_t next = bs_load_le32(off + 4 * i);
        if (next < prev)
            return 0;
        prev = next;
    }
    return 1;
}

int bs_block_parse(const uint8_t *p, uint64_t size, BlockView *b, const char **why) {
    if (bs_block_view(p, size, b, why) < 0)
        return -1;
    /* the order of the offsets: one pass over each variable-width section's array (a few
     * ns an entry, next to the checksum and the decompression of the block read) */
    if (!(b->flags & FIXED_KEYS) && !offsets_ordered(p + b->keys_at, b->count)) {
        *why = "key offsets are out of order";
        return -1;
    }
    if (!(b->flags & FIXED_VALUES) && !offsets_ordered(p + b->values_at, b->count)) {
        *why = "value offsets are out of order";
        return -1;
    }
    /* a kind byte is 0 (value) or 1 (tombstone), as Block() checks */
    if (b->flags & TOMBSTONES)
        for (uint64_t i = 0; i < b->count; i++)
            if (p[b->kinds_at + i] > 1) {
                *why = "kind bytes other than 0 (value) or 1 (tombstone)";
                return -1;
            }
    return 0;
}

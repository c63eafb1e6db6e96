/* An LZ4 block decoder (lz4block.c) for the compiled core's table reads. */
#ifndef BANYANSTORE_NATIVE_LZ4BLOCK_H
#define BANYANSTORE_NATIVE_LZ4BLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Decode the LZ4 block src[0:n) into exactly dst[0:cap): 0, or -1 if the block is
 * malformed or does not decode to exactly `cap` bytes.  Reads and writes stay inside
 * both buffers whatever the input; no Python object is touched (safe without the GIL). */
int bs_lz4_block_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap);

#endif

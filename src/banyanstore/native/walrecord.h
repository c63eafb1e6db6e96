/* The store's WAL record payload, written by _native.c (wal_encode_one/_batch) and
 * logframe.c (LogTail.append_put): lsm/wal.py is the authoritative grammar.
 *
 *   record := format:u8 (=1) flags:u8 (=0) count:u32 version:u64 commit_ms:u64   22 bytes
 *             entry{count}
 *   entry  := kind:u8 (1 value, 2 tombstone) keyspace:u32 key_len:u32 value_len:u32
 *             key value                                                          13 + n bytes
 */
#ifndef BANYANSTORE_WALRECORD_H
#define BANYANSTORE_WALRECORD_H

#include <stdint.h>
#include <string.h>

#include "byteorder.h"

enum { BS_WAL_FORMAT = 1, BS_WAL_KIND_VALUE = 1, BS_WAL_KIND_TOMBSTONE = 2, BS_WAL_HEADER = 22,
       BS_WAL_ENTRY = 13 };

static inline void bs_wal_put_header(uint8_t *p, uint32_t count, uint64_t version, uint64_t ms) {
    p[0] = BS_WAL_FORMAT;
    p[1] = 0;
    bs_store_le32(p + 2, count);
    bs_store_le64(p + 6, version);
    bs_store_le64(p + 14, ms);
}

/* one entry at p; value NULL is a tombstone; returns the byte after it */
static inline uint8_t *bs_wal_put_entry(uint8_t *p, uint32_t ks, const char *key, uint32_t k,
                                        const char *value, uint32_t v) {
    p[0] = value == NULL ? BS_WAL_KIND_TOMBSTONE : BS_WAL_KIND_VALUE;
    bs_store_le32(p + 1, ks);
    bs_store_le32(p + 5, k);
    bs_store_le32(p + 9, v);
    p += BS_WAL_ENTRY;
    memcpy(p, key, k);
    p += k;
    if (v)
        memcpy(p, value, v);
    return p + v;
}

#endif

/* An LZ4 block decoder: what lz4.block.decompress does for a table's data block, without
 * the Python call and the copy of its output (the lz4 package decodes into a buffer of its
 * own and copies that into the bytes it returns).
 *
 * The block format (sequences until the input ends):
 *
 *   sequence := token:u8 [literal_len_ext] literals [offset:u16le [match_len_ext]]
 *   token    := literal_len:4 (high) match_len:4 (low)   (15 in a field: an extension follows)
 *   ext      := 255* last:u8 (<255)                       (added to the field's 15)
 *   match    := copy of match_len + 4 bytes from `offset` (1 .. bytes written) bytes back,
 *               overlapping its own output when offset < its length
 *
 * The last sequence has literals only.  As the reference decoder requires, a sequence
 * whose literals end within MFLIMIT bytes of the output's end or within 2 + 1 +
 * LASTLITERALS bytes of the input's end is the last one and must end both exactly, and
 * a match must end at least LASTLITERALS bytes before the output's end.  Anything the
 * reference decoder rejects is rejected here too (offset 0 as well); the caller then
 * hands the block to the Python reader, whose lz4 call reports the damage -- so both
 * engines fail with the same error and this decoder never accepts a block they refuse.
 */

#include <string.h>

#include "lz4block.h"

enum { MINMATCH = 4, LASTLITERALS = 5, MFLIMIT = 12, RUN_MASK = 15, WILD = 16 };

/* A sequence whose literal and match lengths need no extension (<= 14 and <= 18 bytes)
 * with at least SHORT_IN bytes of input after its token and SHORT_OUT of output room
 * passes every check of the general path but the offset's: 14 literals + 2 offset bytes
 * leave >= 8 = 2 + 1 + LASTLITERALS of input, and 14 literals + an 18-byte match leave
 * >= LASTLITERALS of output (so it is not the last sequence, and its literals end at least
 * MFLIMIT before the output's end).  16 + 8 also lets the literals be copied 16 at once. */
enum { SHORT_IN = 24, SHORT_OUT = 14 + 18 + LASTLITERALS };

/* Copy n bytes in WILD-byte strides (fixed-size copies the compiler inlines, instead of a
 * libc call per short literal run or match), writing up to WILD - 1 bytes past n.
 * REQUIRES: the caller checked that dst and src have n + WILD - 1 bytes of room, and
 * that src is at least WILD bytes behind dst or does not overlap it. */
static inline void wild_copy(uint8_t *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i += WILD)
        memcpy(dst + i, src + i, WILD);
}

/* Literals are copied two strides at once (input to output: they never overlap), which
 * halves the loop's own work on the long literal runs of values that do not compress.
 * Writes up to WILD_LIT - 1 bytes past n; REQUIRES n + WILD_LIT - 1 bytes of room in both. */
enum { WILD_LIT = 2 * WILD };

static inline void wild_copy_literals(uint8_t *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i += WILD_LIT) {
        memcpy(dst + i, src + i, WILD);
        memcpy(dst + i + WILD, src + i + WILD, WILD);
    }
}

/* Add an length extension (255* last) to *len, reading no further than `limit`. */
static int read_ext(const uint8_t **ip, const uint8_t *limit, size_t *len) {
    unsigned s;
    do {
        if (*ip >= limit)
            return -1;
        s = *(*ip)++;
        *len += s;
        if (*len > ((size_t)1 << 40))  /* far beyond any block: damage */
            return -1;
    } while (s == 255);
    return 0;
}

int bs_lz4_block_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap) {
    const uint8_t *ip = src, *const iend = src + n;
    uint8_t *op = dst, *const oend = dst + cap;
    if (n == 0 || cap == 0)
        return -1;
    /* the last positions with SHORT_IN bytes of input after them and SHORT_OUT of output
     * room (0: none), so that the short path's test is two comparisons, not two
     * subtractions and two comparisons a sequence */
    const uintptr_t ishort = n > SHORT_IN ? (uintptr_t)(iend - SHORT_IN) : 0;
    const uintptr_t oshort = cap >= SHORT_OUT ? (uintptr_t)(oend - SHORT_OUT) : 0;
    /* A token is read only where input is left: n > 0 at the start, a short sequence leaves
     * at least 8 bytes after it, and a long one checks at its end. */
    for (;;) {
        unsigned token = *ip++;
        if ((token >> 4) < RUN_MASK && (token & RUN_MASK) < RUN_MASK && (uintptr_t)ip <= ishort
                && (uintptr_t)op <= oshort) {
            /* A short sequence far from both ends (most of them): the checks below all pass
             * but the offset's, so fixed-size copies do -- the bytes written past the
             * sequence are overwritten by what follows. */
            size_t lit = token >> 4;
            memcpy(op, ip, 16);
            op += lit;
            ip += lit;
            size_t offset = (size_t)ip[0] | (size_t)ip[1] << 8;
            ip += 2;
            if (offset - 1 >= (size_t)(op - dst))  /* offset 0 (wraps round) or before dst */
                return -1;
            size_t len = (token & RUN_MASK) + MINMATCH;
            const uint8_t *match = op - offset;
            if (offset >= 8) {  /* each 8-byte copy reads bytes already written */
                memcpy(op, match, 8);
                memcpy(op + 8, match + 8, 8);
                memcpy(op + 16, match + 16, 2);
            } else {
                for (size_t i = 0; i < len; i++)
                    op[i] = match[i];
            }
            op += len;
            continue;
        }
        size_t lit = token >> 4;
        if (lit == RUN_MASK && read_ext(&ip, iend, &lit) < 0)
            return -1;
        size_t in_left = (size_t)(iend - ip), out_left = (size_t)(oend - op);
        if (lit > in_left)
            return -1;
        if (out_left < MFLIMIT || lit > out_left - MFLIMIT || in_left - lit < 2 + 1 + LASTLITERALS) {
            /* the last sequence: its literals end the input and the output exactly */
            if (lit != in_left || lit != out_left)
                return -1;
            memcpy(op, ip, lit);
            return 0;
        }
        if (lit + WILD_LIT - 1 <= in_left && lit + WILD_LIT - 1 <= out_left)
            wild_copy_literals(op, ip, lit);  /* the bytes past lit are overwritten by what follows */
        else
            memcpy(op, ip, lit);
        op += lit;
        ip += lit;
        size_t offset = (size_t)ip[0] | (size_t)ip[1] << 8;  /* in_left - lit >= 8: inside */
        ip += 2;
        if (offset == 0 || offset > (size_t)(op - dst))
            return -1;
        size_t len = token & 15;
        if (len == RUN_MASK && read_ext(&ip, iend - LASTLITERALS + 1, &len) < 0)
            return -1;
        len += MINMATCH;
        out_left = (size_t)(oend - op);
        if (len > out_left || out_left - len < LASTLITERALS)
            return -1;
        const uint8_t *match = op - offset;
        if (offset >= WILD && len + WILD - 1 <= out_left) {
            wild_copy(op, match, len);  /* each stride reads bytes already written */
        } else if (offset >= len) {
            memcpy(op, match, len);
        } else {  /* overlapping: the pattern of `offset` bytes repeats */
            for (size_t i = 0; i < len; i++)
                op[i] = match[i];
        }
        op += len;
        if (ip >= iend)
            return -1;
    }
}

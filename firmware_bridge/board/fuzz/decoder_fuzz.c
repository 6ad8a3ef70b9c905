/*
 * Feeds test streams to the board's stream decoder and reports what it
 * accepted, so tests can compare with the Python decoder byte for byte.
 * stdin: records of [u32 little-endian length][bytes]. Each record goes to a
 * fresh decoder followed by one 0x00 delimiter.
 * stdout, per record: [u8 n_results] then per result
 *   [u8 status (0 = frame, else sindyrl_err_t)][u8 type][u8 seq][u16 LE len][payload]
 */
#include <stdio.h>
#include <stdlib.h>

#include "../sindyrl_protocol.h"

static sindyrl_rx_t rx;
static sindyrl_frame_t frame;

static void put(int c)
{
    if (putchar(c) == EOF) {
        exit(3);
    }
}

int main(void)
{
    static uint8_t results[64 * (5 + SINDYRL_MAX_PAYLOAD)];
    unsigned char hdr[4];
    while (fread(hdr, 1, 4, stdin) == 4) {
        size_t len = (size_t)hdr[0] | ((size_t)hdr[1] << 8) | ((size_t)hdr[2] << 16) | ((size_t)hdr[3] << 24);
        size_t i, w = 0;
        unsigned n = 0;
        sindyrl_rx_init(&rx);
        for (i = 0; i <= len; i++) {
            int c = 0;
            sindyrl_err_t err = SINDYRL_OK;
            sindyrl_rx_status_t st;
            if (i < len) {
                c = getchar();
                if (c == EOF) {
                    return 2;
                }
            }
            st = sindyrl_rx_push(&rx, (uint8_t)c, &frame, &err);
            if (st == SINDYRL_RX_MORE) {
                continue;
            }
            if (n >= 64) {
                return 4; /* records are built with fewer delimiters than this */
            }
            n++;
            results[w++] = (uint8_t)(st == SINDYRL_RX_FRAME ? 0 : err);
            results[w++] = st == SINDYRL_RX_FRAME ? frame.type : 0;
            results[w++] = frame.seq;
            results[w++] = (uint8_t)(frame.payload_len & 0xFFu);
            results[w++] = (uint8_t)(frame.payload_len >> 8);
            if (st == SINDYRL_RX_FRAME) {
                size_t k;
                for (k = 0; k < frame.payload_len; k++) {
                    results[w++] = frame.payload[k];
                }
            }
        }
        put((int)n);
        for (i = 0; i < w; i++) {
            put(results[i]);
        }
    }
    return 0;
}

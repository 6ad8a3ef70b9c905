/* sindyrl board protocol: see sindyrl_protocol.h and docs/protocol.md. */
#include "sindyrl_protocol.h"

#include <string.h>

uint16_t sindyrl_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    int b;
    for (i = 0; i < len; i++) {
        crc = (uint16_t)(crc ^ ((uint16_t)data[i] << 8));
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

size_t sindyrl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t code_at = 0; /* where the current block's code byte goes */
    size_t w = 1;
    uint8_t code = 1;
    size_t i;
    if (cap == 0) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = w;
            if (w >= cap) {
                return 0;
            }
            w++;
            code = 1;
        } else {
            if (w >= cap) {
                return 0;
            }
            out[w++] = in[i];
            code++;
            if (code == 0xFFu) {
                out[code_at] = code;
                code_at = w;
                if (i + 1 < len) {
                    /* a full block is followed by a new code byte only if data remains */
                    if (w >= cap) {
                        return 0;
                    }
                    w++;
                    code = 1;
                } else {
                    return w;
                }
            }
        }
    }
    out[code_at] = code;
    return w;
}

long sindyrl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t r = 0;
    size_t w = 0;
    while (r < len) {
        uint8_t code = in[r++];
        size_t k;
        if (code == 0) {
            return -1; /* a zero never appears inside an encoded frame */
        }
        if ((size_t)(code - 1u) > len - r) {
            return -1; /* block runs past the end */
        }
        for (k = 1; k < code; k++) {
            if (in[r] == 0 || w >= cap) {
                return -1;
            }
            out[w++] = in[r++];
        }
        if (code != 0xFFu && r < len) {
            if (w >= cap) {
                return -1;
            }
            out[w++] = 0;
        }
    }
    return (long)w;
}

size_t sindyrl_frame_encode(uint8_t type, uint8_t seq, const uint8_t *payload, size_t payload_len,
                            uint8_t *out, size_t cap)
{
    uint8_t raw[SINDYRL_MAX_FRAME];
    uint16_t crc;
    size_t n;
    if (payload_len > SINDYRL_MAX_PAYLOAD || (payload_len > 0 && payload == NULL) || out == NULL) {
        return 0;
    }
    raw[0] = (uint8_t)SINDYRL_PROTOCOL_VERSION;
    raw[1] = type;
    raw[2] = seq;
    raw[3] = (uint8_t)payload_len;
    if (payload_len > 0) {
        memcpy(raw + 4, payload, payload_len);
    }
    crc = sindyrl_crc16(raw, 4 + payload_len);
    raw[4 + payload_len] = (uint8_t)(crc >> 8);
    raw[5 + payload_len] = (uint8_t)(crc & 0xFFu);
    if (cap < 1) {
        return 0;
    }
    n = sindyrl_cobs_encode(raw, SINDYRL_FRAME_OVERHEAD + payload_len, out, cap - 1);
    if (n == 0) {
        return 0;
    }
    out[n] = 0;
    return n + 1;
}

sindyrl_err_t sindyrl_frame_decode(const uint8_t *enc, size_t len, sindyrl_frame_t *frame)
{
    uint8_t raw[SINDYRL_MAX_FRAME];
    long n;
    frame->seq = SINDYRL_SEQ_UNKNOWN;
    frame->payload_len = 0;
    if (len > SINDYRL_MAX_ENCODED) {
        return SINDYRL_ERR_OVERSIZE;
    }
    n = sindyrl_cobs_decode(enc, len, raw, sizeof raw);
    if (n < 0) {
        return SINDYRL_ERR_BAD_COBS;
    }
    if (n < (long)SINDYRL_FRAME_OVERHEAD) {
        return SINDYRL_ERR_TOO_SHORT;
    }
    if ((size_t)raw[3] != (size_t)n - SINDYRL_FRAME_OVERHEAD) {
        return SINDYRL_ERR_BAD_LENGTH; /* truncated or extended frame */
    }
    if (sindyrl_crc16(raw, (size_t)n) != 0) {
        return SINDYRL_ERR_BAD_CRC;
    }
    frame->seq = raw[2];
    if (raw[0] != SINDYRL_PROTOCOL_VERSION) {
        return SINDYRL_ERR_BAD_VERSION;
    }
    frame->version = raw[0];
    frame->type = raw[1];
    frame->payload_len = (size_t)raw[3];
    memcpy(frame->payload, raw + 4, frame->payload_len);
    return SINDYRL_OK;
}

void sindyrl_rx_init(sindyrl_rx_t *rx)
{
    rx->len = 0;
    rx->overflow = 0;
}

sindyrl_rx_status_t sindyrl_rx_push(sindyrl_rx_t *rx, uint8_t byte, sindyrl_frame_t *frame, sindyrl_err_t *err)
{
    if (byte != 0) {
        if (rx->overflow) {
            return SINDYRL_RX_MORE;
        }
        if (rx->len >= sizeof rx->buf) {
            rx->overflow = 1; /* drop the rest up to the next delimiter */
            return SINDYRL_RX_MORE;
        }
        rx->buf[rx->len++] = byte;
        return SINDYRL_RX_MORE;
    }
    if (rx->overflow) {
        sindyrl_rx_init(rx);
        frame->seq = SINDYRL_SEQ_UNKNOWN;
        frame->payload_len = 0;
        *err = SINDYRL_ERR_OVERSIZE;
        return SINDYRL_RX_ERROR;
    }
    if (rx->len == 0) {
        return SINDYRL_RX_MORE; /* bare delimiter: used by the host to resynchronise */
    }
    *err = sindyrl_frame_decode(rx->buf, rx->len, frame);
    rx->len = 0;
    return (*err == SINDYRL_OK) ? SINDYRL_RX_FRAME : SINDYRL_RX_ERROR;
}

void sindyrl_put_f32(uint8_t *p, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    sindyrl_put_u32(p, u);
}

float sindyrl_get_f32(const uint8_t *p)
{
    uint32_t u = sindyrl_get_u32(p);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

void sindyrl_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void sindyrl_put_u32(uint8_t *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++) {
        p[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
    }
}

uint32_t sindyrl_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void sindyrl_put_u64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) {
        p[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
    }
}

/*
 * sindyrl board protocol, board side: CRC-16/CCITT-FALSE, COBS, frames and a
 * byte-at-a-time stream decoder with bounded memory.
 *
 * Wire format (docs/protocol.md): COBS([version, type, seq, length, payload..., crc_hi, crc_lo]) 0x00
 * CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected, no final XOR,
 * over version..payload, appended most significant byte first.
 */
#ifndef SINDYRL_PROTOCOL_H
#define SINDYRL_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SINDYRL_PROTOCOL_VERSION 1u
#define SINDYRL_MAX_PAYLOAD 252u /* fits the one-byte length field; 63 floats */
#define SINDYRL_FRAME_OVERHEAD 6u /* version, type, seq, length, CRC (2) */
#define SINDYRL_MAX_FRAME (SINDYRL_FRAME_OVERHEAD + SINDYRL_MAX_PAYLOAD)
#define SINDYRL_MAX_ENCODED (SINDYRL_MAX_FRAME + (SINDYRL_MAX_FRAME + 253u) / 254u)
#define SINDYRL_SEQ_UNKNOWN 0xFFu

typedef enum {
    SINDYRL_MSG_HELLO = 0x01,
    SINDYRL_MSG_OBS = 0x02,
    SINDYRL_MSG_PING = 0x03,
    SINDYRL_MSG_BENCH = 0x04,
    SINDYRL_MSG_EPISODE_END = 0x05,  /* policy-set boards only */
    SINDYRL_MSG_BANDIT_QUERY = 0x06,
    SINDYRL_MSG_BANDIT_RESET = 0x07,
    SINDYRL_MSG_INFO = 0x81,
    SINDYRL_MSG_ACT = 0x82,
    SINDYRL_MSG_PONG = 0x83,
    SINDYRL_MSG_BENCH_RESULT = 0x84,
    SINDYRL_MSG_BANDIT_STATE = 0x85,
    SINDYRL_MSG_ERROR = 0x7F
} sindyrl_msg_t;

/* Error codes; values are part of the protocol (ERROR payload byte 0). */
typedef enum {
    SINDYRL_OK = 0,
    SINDYRL_ERR_BAD_CRC = 1,
    SINDYRL_ERR_BAD_LENGTH = 2,
    SINDYRL_ERR_UNKNOWN_TYPE = 3,
    SINDYRL_ERR_NONFINITE = 4,
    SINDYRL_ERR_BAD_VERSION = 5,
    SINDYRL_ERR_BAD_COBS = 6,
    SINDYRL_ERR_OVERSIZE = 7,
    SINDYRL_ERR_EVAL_FAILED = 8,
    SINDYRL_ERR_TOO_SHORT = 9,
    SINDYRL_ERR_BAD_VALUE = 10,
    SINDYRL_ERR_OUT_OF_DOMAIN = 11 /* input outside the input bounds by more than the margin (SINDYRL_DOMAIN_GUARD) */
} sindyrl_err_t;

typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t seq;
    size_t payload_len;
    uint8_t payload[SINDYRL_MAX_PAYLOAD];
} sindyrl_frame_t;

/* Stream decoder state: holds at most one encoded frame. */
typedef struct {
    uint8_t buf[SINDYRL_MAX_ENCODED];
    size_t len;
    int overflow;
} sindyrl_rx_t;

/* Result of pushing one byte. */
typedef enum {
    SINDYRL_RX_MORE = 0,   /* no complete frame yet (or an empty frame: a bare delimiter) */
    SINDYRL_RX_FRAME = 1,  /* *frame holds a valid frame */
    SINDYRL_RX_ERROR = 2   /* a frame ended but was invalid; *err says why, frame->seq is its seq or 0xFF */
} sindyrl_rx_status_t;

uint16_t sindyrl_crc16(const uint8_t *data, size_t len);

/* COBS-encode len bytes into out (capacity cap). Returns the encoded length
 * (no delimiter), or 0 if cap is too small. */
size_t sindyrl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/* COBS-decode len bytes into out (capacity cap). Returns the decoded length,
 * or -1 on malformed input or if cap is too small. */
long sindyrl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/* Build a complete wire frame (COBS + trailing 0x00) into out. Returns its
 * length, or 0 if the payload is too long or out too small. */
size_t sindyrl_frame_encode(uint8_t type, uint8_t seq, const uint8_t *payload, size_t payload_len,
                            uint8_t *out, size_t cap);

/* Decode one COBS-encoded frame (without delimiter). */
sindyrl_err_t sindyrl_frame_decode(const uint8_t *enc, size_t len, sindyrl_frame_t *frame);

void sindyrl_rx_init(sindyrl_rx_t *rx);
sindyrl_rx_status_t sindyrl_rx_push(sindyrl_rx_t *rx, uint8_t byte, sindyrl_frame_t *frame, sindyrl_err_t *err);

/* Little-endian float32 / integer packing that does not depend on the host's byte order. */
void sindyrl_put_f32(uint8_t *p, float v);
float sindyrl_get_f32(const uint8_t *p);
void sindyrl_put_u16(uint8_t *p, uint16_t v);
void sindyrl_put_u32(uint8_t *p, uint32_t v);
uint32_t sindyrl_get_u32(const uint8_t *p);
void sindyrl_put_u64(uint8_t *p, uint64_t v);

#ifdef __cplusplus
}
#endif

#endif /* SINDYRL_PROTOCOL_H */

/* Portable board main loop: decode a request, answer it, never act on garbage. */
#include "sindyrl_board.h"

#include <math.h>
#include <string.h>

#include "sindyrl_hal.h"

#define SINDYRL_MAX_VALUES (SINDYRL_MAX_PAYLOAD / 4u)

/* INFO: kind, n_in, n_out, max_payload, 16-byte hash, name length; then the name. */
#define SINDYRL_INFO_FIXED 24u
#define SINDYRL_MAX_NAME 32u

static uint8_t tx_payload[SINDYRL_MAX_PAYLOAD];
static uint8_t tx_wire[SINDYRL_MAX_ENCODED + 1u];

static int send(uint8_t type, uint8_t seq, const uint8_t *payload, size_t len)
{
    size_t n = sindyrl_frame_encode(type, seq, payload, len, tx_wire, sizeof tx_wire);
    if (n == 0) {
        return 0; /* cannot happen for payloads built here; nothing sensible to send */
    }
    return sindyrl_hal_write(tx_wire, n);
}

static int send_error(sindyrl_board_t *board, sindyrl_err_t code, uint8_t request_type, uint8_t seq)
{
    const sindyrl_model_desc_t *m = &sindyrl_board_model;
    size_t i;
    board->n_errors++;
    tx_payload[0] = (uint8_t)code;
    tx_payload[1] = request_type;
    for (i = 0; i < m->n_out && 2u + 4u * (i + 1u) <= SINDYRL_MAX_PAYLOAD; i++) {
        sindyrl_put_f32(tx_payload + 2 + 4 * i, m->safe_action[i]);
    }
    return send(SINDYRL_MSG_ERROR, seq, tx_payload, 2 + 4 * i);
}

static int handle_hello(const sindyrl_frame_t *f)
{
    const sindyrl_model_desc_t *m = &sindyrl_board_model;
    size_t name_len = strlen(m->name);
    size_t hash_len = strlen(m->hash);
    if (name_len > SINDYRL_MAX_NAME) {
        name_len = SINDYRL_MAX_NAME;
    }
    if (hash_len > 16u) {
        hash_len = 16u;
    }
    memset(tx_payload, 0, SINDYRL_INFO_FIXED);
    tx_payload[0] = m->kind;
    sindyrl_put_u16(tx_payload + 1, (uint16_t)m->n_in);
    sindyrl_put_u16(tx_payload + 3, (uint16_t)m->n_out);
    sindyrl_put_u16(tx_payload + 5, (uint16_t)SINDYRL_MAX_PAYLOAD);
    memcpy(tx_payload + 7, m->hash, hash_len);
    tx_payload[23] = (uint8_t)name_len;
    memcpy(tx_payload + SINDYRL_INFO_FIXED, m->name, name_len);
    return send(SINDYRL_MSG_INFO, f->seq, tx_payload, SINDYRL_INFO_FIXED + name_len);
}

/* Read n_in floats from p; return 0 if all are finite. */
static int read_inputs(const uint8_t *p, size_t n, float *x)
{
    size_t i;
    int bad = 0;
    for (i = 0; i < n; i++) {
        x[i] = sindyrl_get_f32(p + 4 * i);
        if (!isfinite(x[i])) {
            bad = 1;
        }
    }
    return bad;
}

#ifdef SINDYRL_DOMAIN_GUARD
/* 1 when every input is within its bounds widened by the margin (see sindyrl_board.h) */
static int in_domain(const sindyrl_model_desc_t *m, const float *x)
{
    size_t i;
    for (i = 0; i < m->n_in; i++) {
        float w = (m->in_hi[i] - m->in_lo[i]) * (SINDYRL_DOMAIN_GUARD);
        if (x[i] < m->in_lo[i] - w || x[i] > m->in_hi[i] + w) {
            return 0;
        }
    }
    return 1;
}
#endif

/* The largest model the frames can carry (BENCH: 5 bytes + inputs; ERROR: 2 bytes + outputs). */
static int model_fits(const sindyrl_model_desc_t *m)
{
    return m->n_in >= 1u && 5u + 4u * m->n_in <= SINDYRL_MAX_PAYLOAD && m->n_out >= 1u &&
           2u + 4u * m->n_out <= SINDYRL_MAX_PAYLOAD;
}

static int handle_obs(sindyrl_board_t *board, const sindyrl_frame_t *f)
{
    const sindyrl_model_desc_t *m = &sindyrl_board_model;
    float x[SINDYRL_MAX_VALUES];
    float y[SINDYRL_MAX_VALUES];
    size_t i;
    if (!model_fits(m)) {
        return send_error(board, SINDYRL_ERR_EVAL_FAILED, f->type, f->seq);
    }
    if (f->payload_len != 4u * m->n_in) {
        return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
    }
    if (read_inputs(f->payload, m->n_in, x) != 0) {
        return send_error(board, SINDYRL_ERR_NONFINITE, f->type, f->seq);
    }
#ifdef SINDYRL_DOMAIN_GUARD
    if (m->in_lo != NULL && m->in_hi != NULL && !in_domain(m, x)) {
        return send_error(board, SINDYRL_ERR_OUT_OF_DOMAIN, f->type, f->seq);
    }
#endif
    if (m->eval(x, m->n_in, y, m->n_out) != 0) {
        return send_error(board, SINDYRL_ERR_EVAL_FAILED, f->type, f->seq);
    }
    for (i = 0; i < m->n_out; i++) {
        if (!isfinite(y[i])) {
            return send_error(board, SINDYRL_ERR_EVAL_FAILED, f->type, f->seq);
        }
        sindyrl_put_f32(tx_payload + 4 * i, y[i]);
    }
    return send(SINDYRL_MSG_ACT, f->seq, tx_payload, 4u * m->n_out);
}

static int handle_bench(sindyrl_board_t *board, const sindyrl_frame_t *f)
{
    const sindyrl_model_desc_t *m = &sindyrl_board_model;
    float x[SINDYRL_MAX_VALUES];
    float y[SINDYRL_MAX_VALUES];
    uint32_t n, k;
    uint8_t mode;
    uint64_t t0, t1;
    if (f->payload_len < 5u) {
        return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
    }
    n = sindyrl_get_u32(f->payload);
    mode = f->payload[4];
    if (mode == 0u) {
        if (!model_fits(m)) {
            return send_error(board, SINDYRL_ERR_EVAL_FAILED, f->type, f->seq);
        }
        if (f->payload_len != 5u + 4u * m->n_in) {
            return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
        }
        if (read_inputs(f->payload + 5, m->n_in, x) != 0) {
            return send_error(board, SINDYRL_ERR_NONFINITE, f->type, f->seq);
        }
        t0 = sindyrl_hal_timer_now();
        for (k = 0; k < n; k++) {
            if (m->eval(x, m->n_in, y, m->n_out) != 0) {
                return send_error(board, SINDYRL_ERR_EVAL_FAILED, f->type, f->seq);
            }
        }
        t1 = sindyrl_hal_timer_now();
    } else if (mode == 1u && f->payload_len == 5u) {
        t0 = sindyrl_hal_timer_now();
        sindyrl_hal_calibration_loop(n);
        t1 = sindyrl_hal_timer_now();
    } else {
        return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
    }
    sindyrl_put_u32(tx_payload, n);
    tx_payload[4] = mode;
    tx_payload[5] = sindyrl_hal_timer_unit();
    sindyrl_put_u64(tx_payload + 6, t1 - t0);
    return send(SINDYRL_MSG_BENCH_RESULT, f->seq, tx_payload, 14u);
}

/* BANDIT_STATE: u8 arm, u8 n_arms, u32 episodes, n_arms x f32 probabilities. */
static int send_bandit_state(const sindyrl_board_t *board, uint8_t seq)
{
    const sindyrl_bandit_t *b = &board->bandit;
    uint32_t i;
    tx_payload[0] = (uint8_t)b->arm;
    tx_payload[1] = (uint8_t)b->n_arms;
    sindyrl_put_u32(tx_payload + 2, b->episodes);
    for (i = 0; i < b->n_arms; i++) {
        sindyrl_put_f32(tx_payload + 6 + 4 * i, b->p[i]);
    }
    return send(SINDYRL_MSG_BANDIT_STATE, seq, tx_payload, 6u + 4u * b->n_arms);
}

/* Point the policy set at the bandit's arm; 0 on success. */
static int select_arm(sindyrl_board_t *board)
{
    return sindyrl_board_policy_set->select(board->bandit.arm);
}

static int handle_bandit(sindyrl_board_t *board, const sindyrl_frame_t *f)
{
    const sindyrl_policy_set_desc_t *ps = sindyrl_board_policy_set;
    if (ps == NULL) {
        return send_error(board, SINDYRL_ERR_UNKNOWN_TYPE, f->type, f->seq);
    }
    if (f->type == SINDYRL_MSG_BANDIT_QUERY) {
        if (f->payload_len != 0u) {
            return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
        }
    } else if (f->type == SINDYRL_MSG_EPISODE_END) {
        uint32_t bits;
        if (f->payload_len != 4u) {
            return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
        }
        bits = sindyrl_get_u32(f->payload);
        /* the host resends a request whose reply it lost: answer again, do not count the episode twice */
        if (board->last_episode_seq == (int)f->seq && board->last_episode_bits == bits) {
            return send_bandit_state(board, f->seq);
        }
        if (!board->bandit_ok) {
            return send_error(board, SINDYRL_ERR_BAD_VALUE, f->type, f->seq);
        }
        if (sindyrl_bandit_episode_end(&board->bandit, sindyrl_get_f32(f->payload)) != 0) {
            return send_error(board, SINDYRL_ERR_NONFINITE, f->type, f->seq);
        }
        board->last_episode_seq = (int)f->seq;
        board->last_episode_bits = bits;
    } else { /* BANDIT_RESET: u32 seed, optionally f32 eta, gamma, return_low, return_high */
        uint32_t seed;
        float cfg[4];
        size_t i;
        if (f->payload_len != 4u && f->payload_len != 20u) {
            return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
        }
        seed = sindyrl_get_u32(f->payload);
        cfg[0] = ps->eta;
        cfg[1] = ps->gamma;
        cfg[2] = ps->return_low;
        cfg[3] = ps->return_high;
        if (f->payload_len == 20u) {
            for (i = 0; i < 4u; i++) {
                cfg[i] = sindyrl_get_f32(f->payload + 4 + 4 * i);
                if (!isfinite(cfg[i])) {
                    return send_error(board, SINDYRL_ERR_NONFINITE, f->type, f->seq);
                }
            }
        }
        if (sindyrl_bandit_init(&board->bandit, ps->n_arms, cfg[0], cfg[1], cfg[2], cfg[3], seed) != 0) {
            return send_error(board, SINDYRL_ERR_BAD_VALUE, f->type, f->seq);
        }
        board->bandit_ok = 1;
    }
    if (!board->bandit_ok || select_arm(board) != 0) {
        return send_error(board, SINDYRL_ERR_BAD_VALUE, f->type, f->seq);
    }
    return send_bandit_state(board, f->seq);
}

void sindyrl_board_init(sindyrl_board_t *board)
{
    const sindyrl_policy_set_desc_t *ps = sindyrl_board_policy_set;
    sindyrl_rx_init(&board->rx);
    board->n_errors = 0;
    board->bandit_ok = 0;
    board->last_episode_seq = -1;
    board->last_episode_bits = 0;
    if (ps != NULL && sindyrl_bandit_init(&board->bandit, ps->n_arms, ps->eta, ps->gamma, ps->return_low,
                                          ps->return_high, ps->seed) == 0) {
        board->bandit_ok = select_arm(board) == 0;
    }
}

int sindyrl_board_feed(sindyrl_board_t *board, uint8_t byte)
{
    sindyrl_err_t err = SINDYRL_OK;
    sindyrl_frame_t *f = &board->frame;
    sindyrl_rx_status_t st = sindyrl_rx_push(&board->rx, byte, f, &err);
    if (st == SINDYRL_RX_MORE) {
        return 0;
    }
    if (st == SINDYRL_RX_ERROR) {
        /* the type byte of a broken frame is not trustworthy: report 0 */
        return send_error(board, err, 0u, f->seq);
    }
    if (f->type != SINDYRL_MSG_EPISODE_END) {
        board->last_episode_seq = -1; /* only an immediate resend is a duplicate */
    }
    switch (f->type) {
    case SINDYRL_MSG_HELLO:
        if (f->payload_len != 0) {
            return send_error(board, SINDYRL_ERR_BAD_LENGTH, f->type, f->seq);
        }
        return handle_hello(f);
    case SINDYRL_MSG_OBS:
        return handle_obs(board, f);
    case SINDYRL_MSG_PING:
        memcpy(tx_payload, f->payload, f->payload_len);
        return send(SINDYRL_MSG_PONG, f->seq, tx_payload, f->payload_len);
    case SINDYRL_MSG_BENCH:
        return handle_bench(board, f);
    case SINDYRL_MSG_EPISODE_END:
    case SINDYRL_MSG_BANDIT_QUERY:
    case SINDYRL_MSG_BANDIT_RESET:
        return handle_bandit(board, f);
    default:
        return send_error(board, SINDYRL_ERR_UNKNOWN_TYPE, f->type, f->seq);
    }
}

int sindyrl_board_run(void)
{
    static sindyrl_board_t board; /* static: keeps the frame buffers off a small stack */
    sindyrl_board_init(&board);
    for (;;) {
        int c = sindyrl_hal_read_byte();
        if (c < 0) {
            return 0;
        }
        if (sindyrl_board_feed(&board, (uint8_t)c) != 0) {
            return 0;
        }
    }
}

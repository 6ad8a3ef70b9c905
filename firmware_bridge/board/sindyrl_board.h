/*
 * The portable board: a model descriptor and the request/reply loop of the
 * sindyrl protocol over the HAL in sindyrl_hal.h.
 */
#ifndef SINDYRL_BOARD_H
#define SINDYRL_BOARD_H

#include <stddef.h>
#include <stdint.h>

#include "sindyrl_bandit.h"
#include "sindyrl_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*sindyrl_eval_fn)(const float *in, size_t n_in, float *out, size_t n_out);

/* What the board runs. Generated glue (firmware_bridge.build) defines sindyrl_board_model. */
typedef struct {
    const char *name;
    const char *hash;       /* 16 hex digits: SparseModel.content_hash() or the network's hash */
    uint8_t kind;           /* 1 sparse, 2 neural */
    size_t n_in;
    size_t n_out;
    sindyrl_eval_fn eval;
    const float *safe_action; /* n_out values sent with every ERROR */
    const float *in_lo;       /* n_in input bounds for the domain guard, or NULL (no guard) */
    const float *in_hi;
} sindyrl_model_desc_t;

/* Domain guard (opt-in): build with -DSINDYRL_DOMAIN_GUARD=MARGIN (a float, e.g. 0.1f) and an OBS with an
 * input below in_lo - MARGIN * (in_hi - in_lo) or above in_hi + MARGIN * (in_hi - in_lo) is answered with
 * ERROR OUT_OF_DOMAIN and the safe action instead of the policy's extrapolation. */

extern const sindyrl_model_desc_t sindyrl_board_model;

/* A policy set: the model's eval runs the arm last passed to select(); the board's EXP3-IX picks the
 * arm once per episode (EPISODE_END). Defaults used at power-up and by a BANDIT_RESET carrying only a seed. */
typedef struct {
    uint32_t n_arms;
    int (*select)(size_t arm); /* 0, or negative for an arm out of range */
    float eta;
    float gamma;
    float return_low;
    float return_high;
    uint32_t seed;
} sindyrl_policy_set_desc_t;

/* NULL when the firmware serves a single model (the glue from firmware_bridge.build defines it). */
extern const sindyrl_policy_set_desc_t *const sindyrl_board_policy_set;

typedef struct {
    sindyrl_rx_t rx;
    sindyrl_frame_t frame;
    uint32_t n_errors;
    sindyrl_bandit_t bandit;     /* used only with a policy set */
    int bandit_ok;               /* the bandit holds a valid configuration */
    int last_episode_seq;        /* seq of the EPISODE_END just applied, -1 after any other request */
    uint32_t last_episode_bits;  /* its payload, so a resend is recognised and not applied twice */
} sindyrl_board_t;

void sindyrl_board_init(sindyrl_board_t *board);

/* Feed one received byte; replies are written through the HAL. Returns -1 if a write failed. */
int sindyrl_board_feed(sindyrl_board_t *board, uint8_t byte);

/* Serve until the HAL reports the link gone. Returns 0 then. */
int sindyrl_board_run(void);

#ifdef __cplusplus
}
#endif

#endif /* SINDYRL_BOARD_H */

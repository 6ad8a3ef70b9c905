/*
 * EXP3-IX on the board: one arm (policy) per episode, chosen from float
 * weights with a seeded xorshift32, so a host that knows the seed can replay
 * every draw (firmware_bridge.policy_set.BoardEXP3IX is the Python mirror).
 * No heap, no stdio; the state is a fixed-size struct.
 *
 *   p_i = exp(-eta (L_i - min L)) / sum_j exp(-eta (L_j - min L))
 *   after an episode on arm a with return R:  r = clip((R - low) / (high - low), 0, 1),
 *   L_a += (1 - r) / (p_a + gamma)
 *   draw: u = (xorshift32() >> 8) * 2^-24, the first arm whose cumulative p exceeds u.
 */
#ifndef SINDYRL_BANDIT_H
#define SINDYRL_BANDIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SINDYRL_BANDIT_MAX_ARMS 32u
/* xorshift32 has no zero state: seed 0 starts from this constant instead. */
#define SINDYRL_BANDIT_ZERO_SEED 0x6D2B79F5u

typedef struct {
    uint32_t n_arms;
    uint32_t arm;      /* the arm the board acts with now */
    uint32_t episodes; /* episodes reported since the last reset */
    uint32_t rng;      /* xorshift32 state */
    float eta;
    float gamma;
    float low;         /* return bounds for the normalisation to [0, 1] */
    float high;
    float loss[SINDYRL_BANDIT_MAX_ARMS]; /* loss estimates L_i */
    float p[SINDYRL_BANDIT_MAX_ARMS];    /* the distribution `arm` was drawn from */
} sindyrl_bandit_t;

/* One xorshift32 step (13, 17, 5); returns the new state. */
uint32_t sindyrl_xorshift32(uint32_t *state);

/* 1 if the configuration is usable: 1..MAX arms, finite eta >= 0, gamma >= 0, finite low < high. */
int sindyrl_bandit_config_ok(uint32_t n_arms, float eta, float gamma, float low, float high);

/* Reset to uniform loss estimates and draw the first arm. Returns 0, or -1 (state untouched) on a bad config. */
int sindyrl_bandit_init(sindyrl_bandit_t *b, uint32_t n_arms, float eta, float gamma, float low, float high,
                        uint32_t seed);

/* Report the return of the episode played on b->arm, update, draw the next arm.
 * Returns 0, or -1 (state untouched) for a non-finite return. */
int sindyrl_bandit_episode_end(sindyrl_bandit_t *b, float episode_return);

#ifdef __cplusplus
}
#endif

#endif /* SINDYRL_BANDIT_H */

/* EXP3-IX with a seeded xorshift32: see sindyrl_bandit.h. Float arithmetic in a fixed order, so the
 * Python mirror (firmware_bridge.policy_set.BoardEXP3IX) reproduces it. */
#include "sindyrl_bandit.h"

#include <math.h>

uint32_t sindyrl_xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

int sindyrl_bandit_config_ok(uint32_t n_arms, float eta, float gamma, float low, float high)
{
    return n_arms >= 1u && n_arms <= SINDYRL_BANDIT_MAX_ARMS && isfinite(eta) && eta >= 0.0f && isfinite(gamma) &&
           gamma >= 0.0f && isfinite(low) && isfinite(high) && low < high && isfinite(high - low);
}

static void probabilities(sindyrl_bandit_t *b)
{
    uint32_t i;
    float m = b->loss[0];
    float s = 0.0f;
    for (i = 1; i < b->n_arms; i++) {
        if (b->loss[i] < m) {
            m = b->loss[i];
        }
    }
    /* shifted by the smallest loss: the best arm has weight 1, so the sum is in [1, K] */
    for (i = 0; i < b->n_arms; i++) {
        b->p[i] = expf(-b->eta * (b->loss[i] - m));
        s += b->p[i];
    }
    for (i = 0; i < b->n_arms; i++) {
        b->p[i] = b->p[i] / s;
    }
}

static void draw(sindyrl_bandit_t *b)
{
    /* 24 random bits: u is an exact float in [0, 1) */
    float u = (float)(sindyrl_xorshift32(&b->rng) >> 8) * 5.9604644775390625e-08f;
    float c = 0.0f;
    uint32_t i;
    uint32_t last = 0;
    for (i = 0; i < b->n_arms; i++) {
        if (b->p[i] > 0.0f) {
            last = i;
        }
        c += b->p[i];
        if (u < c) {
            b->arm = i;
            return;
        }
    }
    b->arm = last; /* the cumulative sum rounded below u: the last arm that can be drawn */
}

int sindyrl_bandit_init(sindyrl_bandit_t *b, uint32_t n_arms, float eta, float gamma, float low, float high,
                        uint32_t seed)
{
    uint32_t i;
    if (b == NULL || !sindyrl_bandit_config_ok(n_arms, eta, gamma, low, high)) {
        return -1;
    }
    b->n_arms = n_arms;
    b->eta = eta;
    b->gamma = gamma;
    b->low = low;
    b->high = high;
    b->episodes = 0;
    b->rng = seed != 0u ? seed : SINDYRL_BANDIT_ZERO_SEED;
    for (i = 0; i < SINDYRL_BANDIT_MAX_ARMS; i++) {
        b->loss[i] = 0.0f;
        b->p[i] = 0.0f;
    }
    probabilities(b);
    draw(b);
    return 0;
}

int sindyrl_bandit_episode_end(sindyrl_bandit_t *b, float episode_return)
{
    float r;
    if (b == NULL || !isfinite(episode_return)) {
        return -1;
    }
    r = (episode_return - b->low) / (b->high - b->low);
    if (r < 0.0f) {
        r = 0.0f;
    }
    if (r > 1.0f) {
        r = 1.0f;
    }
    b->loss[b->arm] += (1.0f - r) / (b->p[b->arm] + b->gamma);
    b->episodes++;
    probabilities(b);
    draw(b);
    return 0;
}

/*
 * The tiny hardware abstraction the board's main loop runs on. Each target
 * (host/, mps2-an386/) implements these functions and nothing else.
 */
#ifndef SINDYRL_HAL_H
#define SINDYRL_HAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Block until one byte arrives; return it (0..255), or -1 when the link is gone. */
int sindyrl_hal_read_byte(void);

/* Write all n bytes; return 0, or -1 when the link is gone. */
int sindyrl_hal_write(const uint8_t *data, size_t n);

/* A monotonic counter for BENCH, and its unit (1 = nanoseconds, 2 = core clock ticks). */
uint64_t sindyrl_hal_timer_now(void);
uint8_t sindyrl_hal_timer_unit(void);

/* Run a loop of exactly two instructions per iteration n times (BENCH calibration). */
void sindyrl_hal_calibration_loop(uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* SINDYRL_HAL_H */

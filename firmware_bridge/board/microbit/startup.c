/*
 * nRF51822 (Cortex-M0, no FPU) start-up: the vector table (16 system exceptions and the part's 32
 * interrupts, none enabled). The reset handler is the shared one (../cortex_m_start.c).
 */
#include <stdint.h>

extern uint32_t _estack;
void Reset_Handler(void);
void sindyrl_default_handler(void);

typedef void (*sindyrl_vector_t)(void);

#define D_ sindyrl_default_handler
#define D8_ D_, D_, D_, D_, D_, D_, D_, D_

__attribute__((section(".isr_vector"), used)) const sindyrl_vector_t sindyrl_vectors[16 + 32] = {
    (sindyrl_vector_t)(uintptr_t)&_estack, /* initial stack pointer */
    Reset_Handler,
    D_, /* NMI */
    D_, /* HardFault */
    0, 0, 0, 0, 0, 0, 0,
    D_, /* SVCall */
    0, 0,
    D_, /* PendSV */
    D_, /* SysTick: the nRF51 has none (QEMU models one); the HAL times with TIMER0 */
    D8_, D8_, D8_, D8_, /* IRQ 0..31 (POWER_CLOCK .. SWI5) */
};


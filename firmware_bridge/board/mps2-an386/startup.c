/*
 * mps2-an386 (Cortex-M4F) start-up: vector table and SysTick. The reset handler, which turns on the FPU
 * before any C code runs, is the shared one (../cortex_m_start.c).
 */
#include <stdint.h>

extern uint32_t _estack;
void Reset_Handler(void);
void sindyrl_default_handler(void);
void SysTick_Handler(void);

volatile uint32_t sindyrl_systick_wraps;

void SysTick_Handler(void)
{
    sindyrl_systick_wraps++;
}

typedef void (*sindyrl_vector_t)(void);

__attribute__((section(".isr_vector"), used)) const sindyrl_vector_t sindyrl_vectors[16] = {
    (sindyrl_vector_t)(uintptr_t)&_estack, /* initial stack pointer */
    Reset_Handler,
    sindyrl_default_handler, /* NMI */
    sindyrl_default_handler, /* HardFault */
    sindyrl_default_handler, /* MemManage */
    sindyrl_default_handler, /* BusFault */
    sindyrl_default_handler, /* UsageFault */
    0, 0, 0, 0,
    sindyrl_default_handler, /* SVCall */
    sindyrl_default_handler, /* DebugMonitor */
    0,
    sindyrl_default_handler, /* PendSV */
    SysTick_Handler,
};


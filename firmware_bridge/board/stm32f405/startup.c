/*
 * STM32F405 (Cortex-M4F) start-up: the full vector table (16 system exceptions and the part's 82
 * interrupts, all but SysTick on a handler that stops the board) and SysTick. The core runs on the
 * 16 MHz HSI it boots on: no PLL set-up, so nothing waits on RCC ready bits (QEMU's netduinoplus2 does
 * not model the RCC). The reset handler, which turns on the FPU before any C code runs, is the shared
 * one (../cortex_m_start.c).
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

#define D_ sindyrl_default_handler
#define D10_ D_, D_, D_, D_, D_, D_, D_, D_, D_, D_

__attribute__((section(".isr_vector"), used)) const sindyrl_vector_t sindyrl_vectors[16 + 82] = {
    (sindyrl_vector_t)(uintptr_t)&_estack, /* initial stack pointer */
    Reset_Handler,
    D_, /* NMI */
    D_, /* HardFault */
    D_, /* MemManage */
    D_, /* BusFault */
    D_, /* UsageFault */
    0, 0, 0, 0,
    D_, /* SVCall */
    D_, /* DebugMonitor */
    0,
    D_, /* PendSV */
    SysTick_Handler,
    /* IRQ 0..81 (WWDG .. FPU): none is enabled */
    D10_, D10_, D10_, D10_, D10_, D10_, D10_, D10_, D_, D_,
};


/*
 * STM32F405 (Cortex-M4F) start-up: the full vector table (16 system exceptions and the part's 82
 * interrupts, all but SysTick on a handler that stops the board), the reset handler, SysTick.
 * The core runs on the 16 MHz HSI it boots on: no PLL set-up, so nothing waits on RCC ready bits
 * (QEMU's netduinoplus2 does not model the RCC). The reset handler turns on the FPU before any C code
 * runs, because with -mfloat-abi=hard the compiler may use FPU registers in any function.
 */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void Reset_Handler(void);
void sindyrl_start(void);
void sindyrl_default_handler(void);
void SysTick_Handler(void);

volatile uint32_t sindyrl_systick_wraps;

void sindyrl_default_handler(void)
{
    for (;;) {
        /* a fault or an unexpected interrupt stops the board; the host sees a timeout and reports it */
    }
}

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

/* Naked: no prologue, so not a single instruction runs before CPACR grants CP10/CP11. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "movw r0, #0xED88\n"  /* SCB->CPACR */
        "movt r0, #0xE000\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #0x00F00000\n" /* CP10, CP11: full access */
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b sindyrl_start\n");
}

void sindyrl_start(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0;
    }
    (void)main();
    for (;;) {
    }
}

/*
 * What every Cortex-M board's start-up shares: the reset handler (the FPU turned on first in a hard-float
 * build, then .data copied from flash and .bss cleared, then main) and the handler of unexpected exceptions.
 * Each board's startup.c holds only its vector table and its timer interrupt.
 */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void Reset_Handler(void);
void sindyrl_start(void);
void sindyrl_default_handler(void);

void sindyrl_default_handler(void)
{
    for (;;) {
        /* a fault or an unexpected interrupt stops the board; the host sees a timeout and reports it */
    }
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

#if defined(__ARM_FP)
/* Hard float: naked, so not a single instruction runs before CPACR grants CP10/CP11, because the compiler
 * may use FPU registers in any function. */
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
#else
/* No FPU (Cortex-M0): floating point, where a firmware uses it, is libgcc's software emulation. */
void Reset_Handler(void)
{
    sindyrl_start();
}
#endif

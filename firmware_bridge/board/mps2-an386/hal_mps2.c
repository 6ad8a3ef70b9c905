/*
 * mps2-an386 HAL: CMSDK UART0 (0x40004000) for the link, SysTick on the core
 * clock for BENCH. Under QEMU with -icount shift=0 the SysTick count is exact
 * and repeatable, so instructions per call can be measured (docs/protocol.md).
 */
#include <stdint.h>

#include "../sindyrl_board.h"
#include "../sindyrl_hal.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10u))
#define UART_STATE_TX_FULL 0x1u
#define UART_STATE_RX_FULL 0x2u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0xFFFFFFu

extern volatile uint32_t sindyrl_systick_wraps;

int sindyrl_hal_read_byte(void)
{
    while ((UART_STATE & UART_STATE_RX_FULL) == 0u) {
    }
    return (int)(UART_DATA & 0xFFu);
}

int sindyrl_hal_write(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        while ((UART_STATE & UART_STATE_TX_FULL) != 0u) {
        }
        UART_DATA = data[i];
    }
    return 0;
}

uint64_t sindyrl_hal_timer_now(void)
{
    uint32_t wraps, left;
    do {
        wraps = sindyrl_systick_wraps;
        left = SYST_CVR;
    } while (wraps != sindyrl_systick_wraps);
    return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - left);
}

uint8_t sindyrl_hal_timer_unit(void)
{
    return 2u; /* core clock ticks */
}

void sindyrl_hal_calibration_loop(uint32_t n)
{
    if (n == 0u) {
        return;
    }
    /* exactly two instructions per iteration */
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b\n" : "+r"(n) : : "cc");
}

int main(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = 0x3u; /* TX and RX enable, no interrupts */
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u; /* enable, interrupt on wrap, processor clock */
    return sindyrl_board_run();
}

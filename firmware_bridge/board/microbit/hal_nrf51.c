/*
 * nRF51822 HAL (nRF51 Series Reference Manual v3): UART0 at 115200 8N1 on the micro:bit's USB
 * serial pins (TXD P0.24, RXD P0.25), polled through its RXDRDY/TXDRDY events; TIMER0 as a 32-bit
 * timer on the 16 MHz HFCLK (the core clock) for BENCH, extended to 64 bits in software.
 *
 * Under QEMU's microbit machine the UART is the first serial port and TIMER0 runs on the virtual
 * clock, so with -icount shift=0 its count is exact and repeatable (one tick = 62.5 instructions).
 */
#include <stdint.h>

#include "../sindyrl_board.h"
#include "../sindyrl_hal.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define UART0_BASE 0x40002000u
#define UART_STARTRX REG(UART0_BASE + 0x000u)
#define UART_STARTTX REG(UART0_BASE + 0x008u)
#define UART_RXDRDY REG(UART0_BASE + 0x108u)
#define UART_TXDRDY REG(UART0_BASE + 0x11Cu)
#define UART_ENABLE REG(UART0_BASE + 0x500u)
#define UART_PSELTXD REG(UART0_BASE + 0x50Cu)
#define UART_PSELRXD REG(UART0_BASE + 0x514u)
#define UART_RXD REG(UART0_BASE + 0x518u)
#define UART_TXD REG(UART0_BASE + 0x51Cu)
#define UART_BAUDRATE REG(UART0_BASE + 0x524u)
#define UART_ENABLE_ON 4u
#define UART_BAUD_115200 0x01D7E000u
#define MICROBIT_TX_PIN 24u
#define MICROBIT_RX_PIN 25u

#define TIMER0_BASE 0x40008000u
#define TIMER_START REG(TIMER0_BASE + 0x000u)
#define TIMER_CLEAR REG(TIMER0_BASE + 0x00Cu)
#define TIMER_CAPTURE0 REG(TIMER0_BASE + 0x040u)
#define TIMER_MODE REG(TIMER0_BASE + 0x504u)
#define TIMER_BITMODE REG(TIMER0_BASE + 0x508u)
#define TIMER_PRESCALER REG(TIMER0_BASE + 0x510u)
#define TIMER_CC0 REG(TIMER0_BASE + 0x540u)

int sindyrl_hal_read_byte(void)
{
    while (UART_RXDRDY == 0u) {
    }
    UART_RXDRDY = 0u; /* clear the event before reading RXD: the next byte raises it again */
    return (int)(UART_RXD & 0xFFu);
}

int sindyrl_hal_write(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        UART_TXDRDY = 0u;
        UART_TXD = data[i];
        while (UART_TXDRDY == 0u) { /* a byte written before TXDRDY would be lost */
        }
    }
    return 0;
}

uint64_t sindyrl_hal_timer_now(void)
{
    static uint32_t last, high;
    uint32_t now;
    TIMER_CAPTURE0 = 1u;
    now = TIMER_CC0;
    if (now < last) {
        high++; /* wrapped (every 268 s): reads are far more frequent than that while BENCH runs */
    }
    last = now;
    return ((uint64_t)high << 32) | now;
}

uint8_t sindyrl_hal_timer_unit(void)
{
    return 2u; /* core clock ticks: TIMER0 without prescaler counts the 16 MHz HFCLK the core runs on */
}

void sindyrl_hal_calibration_loop(uint32_t n)
{
    if (n == 0u) {
        return;
    }
    /* exactly two instructions per iteration; GCC puts Thumb-1 inline assembly in divided syntax,
     * where "sub" is the flag-setting SUBS */
    __asm__ volatile("1: sub %0, #1\n\tbne 1b\n" : "+l"(n) : : "cc");
}

int main(void)
{
    UART_PSELTXD = MICROBIT_TX_PIN;
    UART_PSELRXD = MICROBIT_RX_PIN;
    UART_BAUDRATE = UART_BAUD_115200;
    UART_ENABLE = UART_ENABLE_ON;
    UART_STARTTX = 1u;
    UART_STARTRX = 1u;
    TIMER_MODE = 0u;      /* timer */
    TIMER_BITMODE = 3u;   /* 32 bit */
    TIMER_PRESCALER = 0u; /* 16 MHz */
    TIMER_CLEAR = 1u;
    TIMER_START = 1u;
    return sindyrl_board_run();
}

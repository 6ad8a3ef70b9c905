/*
 * STM32F405 HAL on the part's register map (RM0090): USART1 on PA9 (TX) / PA10 (RX), alternate
 * function 7, 115200 8N1 from the 16 MHz HSI (APB2 undivided), polled; SysTick on the core clock
 * for BENCH.
 *
 * Under QEMU's netduinoplus2 machine, USART1 is the first serial port. QEMU models the USART's
 * SR/DR/CR1 (transmission is synchronous: TXE is always set) but not the RCC or the GPIO ports
 * (their writes are ignored), nor the baud rate; with -icount shift=0 the SysTick count is exact
 * and repeatable, so instructions per call can be measured as on mps2-an386.
 */
#include <stdint.h>

#include "../sindyrl_board.h"
#include "../sindyrl_hal.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define RCC_BASE 0x40023800u
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB2ENR_USART1EN (1u << 4)

#define GPIOA_BASE 0x40020000u
#define GPIOA_MODER REG(GPIOA_BASE + 0x00u)
#define GPIOA_AFRH REG(GPIOA_BASE + 0x24u)

#define USART1_BASE 0x40011000u
#define USART_SR REG(USART1_BASE + 0x00u)
#define USART_DR REG(USART1_BASE + 0x04u)
#define USART_BRR REG(USART1_BASE + 0x08u)
#define USART_CR1 REG(USART1_BASE + 0x0Cu)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TXE (1u << 7)
#define USART_CR1_UE (1u << 13)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RE (1u << 2)
/* 16 MHz / (16 * 115200) = 8.68: mantissa 8, fraction 11/16 (0.6% off 115200) */
#define USART_BRR_115200_AT_16MHZ ((8u << 4) | 11u)

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SYST_RELOAD 0xFFFFFFu

extern volatile uint32_t sindyrl_systick_wraps;

int sindyrl_hal_read_byte(void)
{
    uint32_t sr;
    do {
        sr = USART_SR;
    } while ((sr & USART_SR_RXNE) == 0u);
    /* reading SR then DR also clears an overrun; the lost byte shows up as a bad frame (CRC/COBS) */
    return (int)(USART_DR & 0xFFu);
}

int sindyrl_hal_write(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        while ((USART_SR & USART_SR_TXE) == 0u) {
        }
        USART_DR = data[i];
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

static void usart1_init(void)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    (void)RCC_APB2ENR; /* the clock is on two cycles after the write (RM0090 errata): read back once */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 18)) | (0xAu << 18);  /* PA9, PA10: alternate function */
    GPIOA_AFRH = (GPIOA_AFRH & ~(0xFFu << 4)) | (0x77u << 4);    /* AF7 = USART1 */
    USART_BRR = USART_BRR_115200_AT_16MHZ;
    USART_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;      /* 8N1, no interrupts */
}

int main(void)
{
    usart1_init();
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u; /* enable, interrupt on wrap, processor clock */
    return sindyrl_board_run();
}

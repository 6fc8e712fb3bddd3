/* STM32F4 console: USART2 on PA2 (AF7) and, for the device link, its receiver on PA3: the
 * ST-LINK virtual COM port of Nucleo-64 boards.
 * Runs on the reset clock (HSI 16 MHz, APB1 undivided). Register offsets: RM0383. */
#include "cortexm.h"
#include "tinyc_board.h"

#define RCC_AHB1ENR TINYC_REG(0x40023830u)
#define RCC_APB1ENR TINYC_REG(0x40023840u)
#define GPIOA_MODER TINYC_REG(0x40020000u)
#define GPIOA_AFRL TINYC_REG(0x40020020u)
#define USART2_SR TINYC_REG(0x40004400u)
#define USART2_DR TINYC_REG(0x40004404u)
#define USART2_BRR TINYC_REG(0x40004408u)
#define USART2_CR1 TINYC_REG(0x4000440Cu)
#define USART_SR_TXE (1u << 7)
#define USART_SR_TC (1u << 6)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_ORE (1u << 3)
#define USART_CR1_UE (1u << 13)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RE (1u << 2)

static void uart_putc(char c)
{
    while (!(USART2_SR & USART_SR_TXE)) {
    }
    USART2_DR = (uint8_t)c;
}

static void uart_drain(void)
{
    while (!(USART2_SR & USART_SR_TC)) {
    }
}

static int uart_getc(void)
{
    const uint32_t sr = USART2_SR;
    if (sr & (USART_SR_RXNE | USART_SR_ORE)) {   /* reading SR then DR also clears an overrun */
        const uint32_t b = USART2_DR & 0xFFu;
        return (sr & USART_SR_RXNE) ? (int)b : -1;
    }
    return -1;
}

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    RCC_AHB1ENR |= 1u << 0;                                     /* GPIOA */
    RCC_APB1ENR |= 1u << 17;                                    /* USART2 */
    (void)RCC_APB1ENR;
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);   /* PA2, PA3: alternate function */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);   /* AF7: USART2_TX, USART2_RX */
    USART2_BRR = (TINYC_BOARD_F_CPU + TINYC_BOARD_CONSOLE_BAUD / 2u) / TINYC_BOARD_CONSOLE_BAUD;
    USART2_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
    tinyc_counter_init();
}

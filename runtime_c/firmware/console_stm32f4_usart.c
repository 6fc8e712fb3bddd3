/* STM32F4 console: USART2 on PA2 (AF7), the ST-LINK virtual COM port of Nucleo-64 boards.
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
#define USART_CR1_UE (1u << 13)
#define USART_CR1_TE (1u << 3)

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

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    RCC_AHB1ENR |= 1u << 0;                                     /* GPIOA */
    RCC_APB1ENR |= 1u << 17;                                    /* USART2 */
    (void)RCC_APB1ENR;
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 4)) | (2u << 4);       /* PA2: alternate function */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFu << 8)) | (7u << 8);       /* AF7: USART2_TX */
    USART2_BRR = (TINYC_BOARD_F_CPU + TINYC_BOARD_CONSOLE_BAUD / 2u) / TINYC_BOARD_CONSOLE_BAUD;
    USART2_CR1 = USART_CR1_UE | USART_CR1_TE;
    tinyc_counter_init();
}

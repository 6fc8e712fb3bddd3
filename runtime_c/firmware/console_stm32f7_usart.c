/* STM32F7 console: USART1 on PA9 (AF7), the ST-LINK virtual COM port of the 32F746G-DISCO.
 * Runs on the reset clock (HSI 16 MHz, APB2 undivided). Register offsets: RM0385. */
#include "cortexm.h"
#include "tinyc_board.h"

#define RCC_AHB1ENR TINYC_REG(0x40023830u)
#define RCC_APB2ENR TINYC_REG(0x40023844u)
#define GPIOA_MODER TINYC_REG(0x40020000u)
#define GPIOA_AFRH TINYC_REG(0x40020024u)
#define USART1_CR1 TINYC_REG(0x40011000u)
#define USART1_BRR TINYC_REG(0x4001100Cu)
#define USART1_ISR TINYC_REG(0x4001101Cu)
#define USART1_TDR TINYC_REG(0x40011028u)
#define USART_ISR_TXE (1u << 7)
#define USART_ISR_TC (1u << 6)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_TE (1u << 3)

static void uart_putc(char c)
{
    while (!(USART1_ISR & USART_ISR_TXE)) {
    }
    USART1_TDR = (uint8_t)c;
}

static void uart_drain(void)
{
    while (!(USART1_ISR & USART_ISR_TC)) {
    }
}

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    RCC_AHB1ENR |= 1u << 0;                                     /* GPIOA */
    RCC_APB2ENR |= 1u << 4;                                     /* USART1 */
    (void)RCC_APB2ENR;
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);     /* PA9: alternate function */
    GPIOA_AFRH = (GPIOA_AFRH & ~(0xFu << 4)) | (7u << 4);       /* AF7: USART1_TX */
    USART1_BRR = (TINYC_BOARD_F_CPU + TINYC_BOARD_CONSOLE_BAUD / 2u) / TINYC_BOARD_CONSOLE_BAUD;
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE;
    tinyc_counter_init();
}

/* STM32F7 console: USART1 on PA9 (AF7) and, for the device link, its receiver on PB7: the
 * ST-LINK virtual COM port of the 32F746G-DISCO.
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
#define USART1_ICR TINYC_REG(0x40011020u)
#define USART1_RDR TINYC_REG(0x40011024u)
#define USART1_TDR TINYC_REG(0x40011028u)
#define GPIOB_MODER TINYC_REG(0x40020400u)
#define GPIOB_AFRL TINYC_REG(0x40020420u)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_ORE (1u << 3)
#define USART_CR1_RE (1u << 2)
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

static int uart_getc(void)
{
    if (USART1_ISR & USART_ISR_ORE) {
        USART1_ICR = USART_ISR_ORE;   /* a lost byte: the frame's CRC tells the host */
    }
    if (!(USART1_ISR & USART_ISR_RXNE)) {
        return -1;
    }
    return (int)(USART1_RDR & 0xFFu);
}

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    RCC_AHB1ENR |= (1u << 0) | (1u << 1);                       /* GPIOA, GPIOB */
    (void)RCC_AHB1ENR;
    GPIOB_MODER = (GPIOB_MODER & ~(3u << 14)) | (2u << 14);     /* PB7: alternate function */
    GPIOB_AFRL = (GPIOB_AFRL & ~(0xFu << 28)) | (7u << 28);     /* AF7: USART1_RX */
    RCC_APB2ENR |= 1u << 4;                                     /* USART1 */
    (void)RCC_APB2ENR;
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);     /* PA9: alternate function */
    GPIOA_AFRH = (GPIOA_AFRH & ~(0xFu << 4)) | (7u << 4);       /* AF7: USART1_TX */
    USART1_BRR = (TINYC_BOARD_F_CPU + TINYC_BOARD_CONSOLE_BAUD / 2u) / TINYC_BOARD_CONSOLE_BAUD;
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
    tinyc_counter_init();
}

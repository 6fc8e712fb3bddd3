/* nRF52840 console: the UART0 peripheral (non-DMA) on P1.03, the TX pin (D1) of the Arduino
 * Nano 33 BLE header, and for the device link its receiver on P1.10 (RX, D0); console =
 * "nrf52_uart" in the board file (the Nano 33 BLE's default is USB: console_nrf52_usb.c). Register offsets: nRF52840 Product Specification, UART section. */
#include "cortexm.h"
#include "tinyc_board.h"

#define UART0_BASE 0x40002000u
#define UART0_STARTRX TINYC_REG(UART0_BASE + 0x000u)
#define UART0_STARTTX TINYC_REG(UART0_BASE + 0x008u)
#define UART0_RXDRDY TINYC_REG(UART0_BASE + 0x108u)
#define UART0_PSEL_RXD TINYC_REG(UART0_BASE + 0x514u)
#define UART0_RXD TINYC_REG(UART0_BASE + 0x518u)
#define UART0_TXDRDY TINYC_REG(UART0_BASE + 0x11Cu)
#define UART0_ENABLE TINYC_REG(UART0_BASE + 0x500u)
#define UART0_PSEL_TXD TINYC_REG(UART0_BASE + 0x50Cu)
#define UART0_TXD TINYC_REG(UART0_BASE + 0x51Cu)
#define UART0_BAUDRATE TINYC_REG(UART0_BASE + 0x524u)
#define UART0_CONFIG TINYC_REG(UART0_BASE + 0x56Cu)
#define P1_OUTSET TINYC_REG(0x50000300u + 0x508u)
#define P1_PIN_CNF(n) TINYC_REG(0x50000300u + 0x700u + 4u * (n))

#define TX_PORT 1u
#define TX_PIN 3u
#define RX_PIN 10u
#define BAUD_115200 0x01D7E000u

static int sent_any;

static void uart_putc(char c)
{
    if (sent_any) {
        while (UART0_TXDRDY == 0u) {
        }
    }
    UART0_TXDRDY = 0;
    UART0_TXD = (uint8_t)c;
    sent_any = 1;
}

static void uart_drain(void)
{
    if (sent_any) {
        while (UART0_TXDRDY == 0u) {
        }
    }
}

static int uart_getc(void)
{
    if (UART0_RXDRDY == 0u) {
        return -1;
    }
    UART0_RXDRDY = 0;
    return (int)(UART0_RXD & 0xFFu);
}

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    P1_OUTSET = 1u << TX_PIN;                   /* idle high */
    P1_PIN_CNF(TX_PIN) = 1u;                    /* output, input buffer disconnected */
    UART0_PSEL_TXD = (TX_PORT << 5) | TX_PIN;
    P1_PIN_CNF(RX_PIN) = 0u;                    /* input, buffer connected */
    UART0_PSEL_RXD = (TX_PORT << 5) | RX_PIN;
    UART0_BAUDRATE = BAUD_115200;               /* this console supports 115200 only */
    UART0_CONFIG = 0;                           /* 8N1, no flow control */
    UART0_ENABLE = 4;
    UART0_STARTTX = 1;
    UART0_STARTRX = 1;
    tinyc_counter_init();
}

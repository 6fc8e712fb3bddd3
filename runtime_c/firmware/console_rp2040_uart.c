/* RP2040 console: UART0 (PL011) on GP0 (TX) and GP1 (RX, the device link); console = "rp2040_uart"
 * in the board file (the Pico's default is USB: console_rp2040_usb.c). The clocks come from the
 * 12 MHz crystal first (rp2040_clocks.c; clk_peri from clk_sys). Register offsets: RP2040 datasheet (resets,
 * io_bank0, uart). */
#include "cortexm.h"
#include "rp2040_clocks.h"
#include "tinyc_board.h"

#define RESETS_RESET_CLR TINYC_REG(0x4000C000u + 0x3000u)   /* atomic clear alias */
#define RESETS_RESET_DONE TINYC_REG(0x4000C008u)
#define IO_BANK0_GPIO0_CTRL TINYC_REG(0x40014004u)
#define IO_BANK0_GPIO1_CTRL TINYC_REG(0x4001400Cu)
#define UART0_DR TINYC_REG(0x40034000u)
#define UART0_FR TINYC_REG(0x40034018u)
#define UART0_IBRD TINYC_REG(0x40034024u)
#define UART0_FBRD TINYC_REG(0x40034028u)
#define UART0_LCR_H TINYC_REG(0x4003402Cu)
#define UART0_CR TINYC_REG(0x40034030u)

#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS_BANK0 (1u << 8)
#define RESET_UART0 (1u << 22)
#define UART_FR_TXFF (1u << 5)
#define UART_FR_BUSY (1u << 3)
#define UART_FR_RXFE (1u << 4)

static void uart_putc(char c)
{
    while (UART0_FR & UART_FR_TXFF) {
    }
    UART0_DR = (uint8_t)c;
}

static void uart_drain(void)
{
    while (UART0_FR & UART_FR_BUSY) {
    }
}

static int uart_getc(void)
{
    if (UART0_FR & UART_FR_RXFE) {
        return -1;
    }
    return (int)(UART0_DR & 0xFFu);   /* bits 8-11 flag errors: the frame's CRC catches them */
}

#include "console_uart_common.h"

void tinyc_board_init(void)
{
    uint32_t div;
    rp2040_clocks_from_crystal();
    RESETS_RESET_CLR = RESET_IO_BANK0 | RESET_PADS_BANK0 | RESET_UART0;
    while ((RESETS_RESET_DONE & (RESET_IO_BANK0 | RESET_PADS_BANK0 | RESET_UART0))
           != (RESET_IO_BANK0 | RESET_PADS_BANK0 | RESET_UART0)) {
    }
    IO_BANK0_GPIO0_CTRL = 2u;                             /* GP0: UART0 TX */
    IO_BANK0_GPIO1_CTRL = 2u;                             /* GP1: UART0 RX */
    /* baud divisor in 1/64 steps: 64 * clk / (16 * baud), rounded */
    div = (8u * TINYC_BOARD_F_CPU / TINYC_BOARD_CONSOLE_BAUD + 1u) / 2u;
    UART0_IBRD = div >> 6;
    UART0_FBRD = div & 0x3Fu;
    UART0_LCR_H = (3u << 5) | (1u << 4);                  /* 8 bits, FIFO on (writes IBRD/FBRD) */
    UART0_CR = (1u << 9) | (1u << 8) | 1u;                /* RX, TX enable, UART enable */
    tinyc_counter_init();
}

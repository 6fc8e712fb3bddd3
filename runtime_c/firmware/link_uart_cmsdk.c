/* The device link's byte stream on the emulated mps2 boards: the CMSDK APB UART0 at 0x40004000
 * (QEMU connects it to the first -serial: a pty or a TCP socket on the host), polled. The
 * console stays on semihosting, so the link carries frames only. Registers: Arm CMSDK
 * technical reference, APB UART. */
#include "cortexm.h"
#include "tinyc_board.h"

#define UART0_DATA TINYC_REG(0x40004000u)
#define UART0_STATE TINYC_REG(0x40004004u)
#define UART0_CTRL TINYC_REG(0x40004008u)
#define UART0_BAUDDIV TINYC_REG(0x40004010u)
#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define STATE_OVERRUNS (3u << 2)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define UART_PCLK_HZ 25000000u   /* the AN385/AN386 peripheral clock */

void tinyc_board_link_init(void)
{
    UART0_BAUDDIV = UART_PCLK_HZ / TINYC_BOARD_CONSOLE_BAUD;
    UART0_CTRL = CTRL_TX_EN | CTRL_RX_EN;
}

int tinyc_board_link_getc(void)
{
    if (UART0_STATE & STATE_OVERRUNS) {
        UART0_STATE = STATE_OVERRUNS;   /* write 1 to clear: the frame's CRC catches the loss */
    }
    if (!(UART0_STATE & STATE_RX_FULL)) {
        return -1;
    }
    return (int)(UART0_DATA & 0xFFu);
}

void tinyc_board_link_write(const uint8_t *data, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        while (UART0_STATE & STATE_TX_FULL) {
        }
        UART0_DATA = data[i];
    }
}

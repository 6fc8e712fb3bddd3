/* RP2040 console over the chip's own USB port (the Pico's micro-USB): a USB CDC-ACM device
 * (usb_cdc.c, driver usb_rp2040.c) carries the demo's text and the device link. The core runs on
 * the 12 MHz crystal (rp2040_clocks.c), the USB controller on PLL_USB's 48 MHz. Not run on
 * hardware. console = "rp2040_uart" in the board file gives UART0 on GP0/GP1. */
#include "cortexm.h"
#include "rp2040_clocks.h"
#include "tinyc_board.h"
#include "usb_cdc.h"

#include "console_usb_common.h"

void tinyc_board_init(void)
{
    rp2040_clocks_from_crystal();
    tinyc_counter_init();
    usb_rp2040_start();
}

/* nRF52840 console over the chip's own USB port (the Arduino Nano 33 BLE's micro-USB): a USB
 * CDC-ACM device (usb_cdc.c, driver usb_nrf52.c) carries the demo's text and the device link.
 * The board must be powered from that port (no VBUS at reset: no USB, output dropped). Not run
 * on hardware. console = "nrf52_uart" in the board file gives the UART on the header pins. */
#include "cortexm.h"
#include "tinyc_board.h"
#include "usb_cdc.h"

#include "console_usb_common.h"

void tinyc_board_init(void)
{
    tinyc_counter_init();
    (void)usb_nrf52_start();
}

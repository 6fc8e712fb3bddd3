/* The part of a USB console every native-USB board shares: the console's text and the device
 * link's bytes go through the USB CDC device's ring buffers (usb_cdc.c); the chip's driver
 * (usb_nrf52.c, usb_rp2040.c) moves them from its interrupt. Until a program opens the port
 * (DTR), the text waits in the ring (the first 512 bytes), the rest is dropped. */
#ifndef TINYC_CONSOLE_USB_COMMON_H
#define TINYC_CONSOLE_USB_COMMON_H

#include "tinyc_board.h"
#include "usb_cdc.h"

void tinyc_console_write(const char *s, size_t n)
{
    uint8_t chunk[64];
    uint32_t k = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (k + 2u > sizeof chunk) {
            usb_cdc_write(chunk, k);
            k = 0;
        }
        if (s[i] == '\n') {
            chunk[k++] = '\r';   /* terminals expect CR LF */
        }
        chunk[k++] = (uint8_t)s[i];
    }
    usb_cdc_write(chunk, k);
}

void tinyc_console_flush(void)
{
    usb_cdc_flush();
}

/* The device link shares the console's port (the link skips bytes outside its frames). */
void tinyc_board_link_init(void)
{
}

int tinyc_board_link_getc(void)
{
    return usb_cdc_getc();
}

void tinyc_board_link_write(const uint8_t *data, uint32_t n)
{
    usb_cdc_write(data, n);   /* raw bytes: no CR before LF */
}

/* Real boards halt; the USB interrupt keeps serving the host (what is left goes out). */
void tinyc_board_exit(int status)
{
    (void)status;
    usb_cdc_flush();
    for (;;) {
        __asm__ volatile("wfi");
    }
}

#endif /* TINYC_CONSOLE_USB_COMMON_H */

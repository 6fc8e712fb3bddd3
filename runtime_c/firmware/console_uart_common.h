/* The part of a UART console every real board shares: tinyc_console_write sends bytes through
 * the board's uart_putc(); exit flushes and halts (a real board has nowhere to return to). */
#ifndef TINYC_CONSOLE_UART_COMMON_H
#define TINYC_CONSOLE_UART_COMMON_H

#include "tinyc_board.h"

static void uart_putc(char c);
static void uart_drain(void);
static int uart_getc(void);   /* a received byte, or -1 if none waits */

void tinyc_console_write(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (s[i] == '\n') {
            uart_putc('\r');
        }
        uart_putc(s[i]);
    }
}

void tinyc_console_flush(void)
{
    uart_drain();
}

/* The device link shares the console UART (its receiver is enabled by tinyc_board_init). */
void tinyc_board_link_init(void)
{
}

int tinyc_board_link_getc(void)
{
    return uart_getc();
}

void tinyc_board_link_write(const uint8_t *data, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        uart_putc((char)data[i]);   /* raw bytes: no CR before LF */
    }
}

void tinyc_board_exit(int status)
{
    (void)status;
    uart_drain();
    for (;;) {
        __asm__ volatile("wfi");
    }
}

#endif /* TINYC_CONSOLE_UART_COMMON_H */

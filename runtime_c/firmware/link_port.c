/* The device link's read with a time limit, over the board's tinyc_board_link_getc() (a UART
 * polled: link_uart_cmsdk.c on the emulated boards, the console UART on real ones) and the
 * SysTick counter. */
#include "tinyc_board.h"

#define FOREVER 0xFFFFFFFFu

int tinyc_board_link_read(uint32_t timeout_ms)
{
    const uint64_t limit = (uint64_t)timeout_ms * TINYC_BOARD_COUNTER_PER_MS
                           / TINYC_BOARD_COUNTER_SCALE;
    const uint64_t t0 = tinyc_counter_ticks();
    for (;;) {
        const int b = tinyc_board_link_getc();
        if (b >= 0) {
            return b;
        }
        if (timeout_ms != FOREVER && tinyc_counter_ticks() - t0 >= limit) {
            return -1;
        }
    }
}

uint64_t tinyc_board_cost(void)
{
    return tinyc_counter_ticks() * TINYC_BOARD_COUNTER_SCALE;
}

/* Test firmware (tests/test_firmware.py replaces a project's src/main.c with it): times a loop of
 * exactly 2 * LOOPS instructions (subs + bne) with the demo's counter, and an empty region. */
#include <stdint.h>

#include "tinyc_board.h"

#define LOOPS 1000000

int main(void)
{
    uint64_t t0, t1, t2;
    tinyc_board_init();
    t0 = tinyc_counter_ticks();
    __asm__ volatile(
        "ldr r0, =%c0\n"
        "1: subs r0, #1\n\t"
        "bne 1b\n\t"
        :
        : "i"(LOOPS)
        : "r0", "cc");
    t1 = tinyc_counter_ticks();
    t2 = tinyc_counter_ticks();
    tinyc_print("loop ");
    tinyc_print_u64((t1 - t0) * TINYC_BOARD_COUNTER_SCALE);
    tinyc_print(" empty ");
    tinyc_print_u64((t2 - t1) * TINYC_BOARD_COUNTER_SCALE);
    tinyc_print("\n");
    return 0;
}

/* Minimal formatted output over tinyc_console_write: strings and integers only. */
#include <string.h>

#include "tinyc_board.h"

void tinyc_print(const char *s)
{
    tinyc_console_write(s, strlen(s));
}

void tinyc_print_u64(uint64_t v)
{
    char buf[21];
    size_t i = sizeof buf;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    tinyc_console_write(buf + i, sizeof buf - i);
}

void tinyc_print_int(int32_t v)
{
    if (v < 0) {
        tinyc_console_write("-", 1);
        tinyc_print_u64((uint64_t)(-(int64_t)v));
    } else {
        tinyc_print_u64((uint64_t)v);
    }
}

void tinyc_print_hex(uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    char buf[8];
    int i;
    for (i = 7; i >= 0; i--) {
        buf[i] = digits[v & 0xFu];
        v >>= 4;
    }
    tinyc_console_write(buf, sizeof buf);
}

void tinyc_print_float(float v)
{
    uint64_t total;
    double x = (double)v;
    char buf[6];
    int i;
    if (x != x) {
        tinyc_print("nan");
        return;
    }
    if (x < 0.0) {
        tinyc_console_write("-", 1);
        x = -x;
    }
    if (x > 1e12) {
        tinyc_print(x > 3.5e38 ? "inf" : ">1e12");
        return;
    }
    total = (uint64_t)(x * 1e6 + 0.5);
    tinyc_print_u64(total / 1000000u);
    tinyc_console_write(".", 1);
    total %= 1000000u;
    for (i = 5; i >= 0; i--) {
        buf[i] = (char)('0' + (int)(total % 10u));
        total /= 10u;
    }
    tinyc_console_write(buf, sizeof buf);
}

/* Console and exit through Arm semihosting: the emulated boards (QEMU -semihosting), or a real
 * board run under a debugger that services semihosting. Output is line-buffered. */
#include <string.h>

#include "semihosting.h"
#include "tinyc_board.h"

#define SEMIHOSTING_MODE_W 4   /* ":tt" opened for writing is the host's stdout */

static int32_t console = -1;
static char line[128];
static size_t used;

void tinyc_board_init(void)
{
    console = tinyc_sh_open(":tt", SEMIHOSTING_MODE_W);
    tinyc_counter_init();
}

void tinyc_console_flush(void)
{
    if (used > 0 && console >= 0) {
        tinyc_sh_write(console, line, used);
    }
    used = 0;
}

void tinyc_console_write(const char *s, size_t n)
{
    while (n > 0) {
        size_t k = sizeof line - used;
        const char *nl;
        if (k > n) {
            k = n;
        }
        nl = memchr(s, '\n', k);
        if (nl != NULL) {
            k = (size_t)(nl - s) + 1u;
        }
        memcpy(line + used, s, k);
        used += k;
        s += k;
        n -= k;
        if (nl != NULL || used == sizeof line) {
            tinyc_console_flush();
        }
    }
}

void tinyc_board_exit(int status)
{
    tinyc_console_flush();
    tinyc_sh_exit(status);
}

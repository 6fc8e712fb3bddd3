/* Persistent storage on the emulated boards: a host file, read and written through
 * semihosting, stands for a flash of two slots (tinyc_store.h). Erasing a page writes 0xFF over
 * it and programming writes the bytes: one host write each, so a QEMU killed during a save stops
 * between two writes. For the power-cut tests, the command line's `cut=N` ends the firmware in
 * the middle of its Nth write (half of the bytes written, exit status TINYC_EXIT_POWER_CUT). */
#include <string.h>

#include "semihosting.h"
#include "tinyc_board.h"

#define MODE_READ_UPDATE 3u   /* "r+b" */
#define MODE_CREATE 7u        /* "w+b" */

static int32_t file = -1;
static uint32_t writes, cut_at;

static int write_at(uint32_t address, const uint8_t *data, uint32_t n)
{
    if (tinyc_sh_seek(file, address) != 0) {
        return 1;
    }
    if (++writes == cut_at) {   /* the power goes in the middle of this write */
        (void)tinyc_sh_write(file, data, n / 2u);
        tinyc_sh_exit(TINYC_EXIT_POWER_CUT);
    }
    return tinyc_sh_write(file, data, n) != 0;
}

int tinyc_board_storage_erase(uint32_t address)
{
    uint8_t erased[TINYC_STORE_ERASE_BYTES];
    memset(erased, 0xFF, sizeof erased);
    return write_at(address, erased, sizeof erased);
}

int tinyc_board_storage_program(uint32_t address, const uint8_t *data, uint32_t n)
{
    return write_at(address, data, n);
}

int tinyc_board_storage_read(uint32_t address, uint8_t *data, uint32_t n)
{
    return tinyc_sh_seek(file, address) != 0 || tinyc_sh_read(file, data, n) != 0;
}

int tinyc_board_storage_open(const char *path, uint32_t bytes, uint32_t cut)
{
    uint32_t at;
    cut_at = cut;
    file = tinyc_sh_open(path, MODE_READ_UPDATE);
    if (file >= 0 && tinyc_sh_flen(file) == (int32_t)bytes) {
        return 0;
    }
    if (file >= 0) {
        tinyc_sh_close(file);
    }
    file = tinyc_sh_open(path, MODE_CREATE);   /* a new flash: erased */
    if (file < 0) {
        return 1;
    }
    for (at = 0; at < bytes; at += TINYC_STORE_ERASE_BYTES) {
        if (tinyc_board_storage_erase(at) != 0) {
            return 1;
        }
    }
    writes = 0;
    return 0;
}

/* What the storage back ends in a board's own flash share: the slots' region, which the linker
 * script reserves from __tinyc_storage_start (on erase-unit boundaries), its bounds checks, and
 * reads, which are plain loads (the flash is memory-mapped). Included by exactly one back end per
 * firmware: storage_nrf52_nvmc.c, storage_stm32_flash.c or storage_rp2040_flash.c. */
#ifndef TINYC_STORAGE_IN_FLASH_H
#define TINYC_STORAGE_IN_FLASH_H

#include <string.h>

#include "tinyc_board.h"

extern const uint8_t __tinyc_storage_start[];
static uint32_t storage_bytes;   /* set by tinyc_board_storage_open */

/* [address, address + n) lies outside the slots (no overflow on a hostile n) */
static inline int outside_storage(uint32_t address, uint32_t n)
{
    return address > storage_bytes || n > storage_bytes - address;
}

/* an erase must start an erase unit inside the slots */
static inline int not_an_erase_unit(uint32_t address)
{
    return address >= storage_bytes || address % TINYC_STORE_ERASE_BYTES != 0u;
}

/* the region must begin on an erase unit of the flash */
static inline int storage_misaligned(void)
{
    return ((uintptr_t)__tinyc_storage_start % TINYC_STORE_ERASE_BYTES) != 0u;
}

/* The 32-bit word at data[i], padded with 0xFF past n (what erased flash holds), for the back
 * ends that program whole words. */
static inline uint32_t padded_word(const uint8_t *data, uint32_t n, uint32_t i)
{
    uint32_t word = 0xFFFFFFFFu;
    memcpy(&word, data + i, n - i < 4u ? n - i : 4u);
    return word;
}

/* the body of each back end's tinyc_board_storage_read */
static inline int read_storage(uint32_t address, uint8_t *data, uint32_t n)
{
    if (outside_storage(address, n)) {
        return 1;
    }
    memcpy(data, __tinyc_storage_start + address, n);
    return 0;
}

#endif

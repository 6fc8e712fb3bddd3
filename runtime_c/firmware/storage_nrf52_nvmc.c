/* Persistent storage on the nRF52840: the two slots of the trained parameters in the flash
 * above the firmware (the linker script reserves them from __tinyc_storage_start, on 4 KB page
 * boundaries), erased and written with the NVMC. The CPU stalls while the NVMC works, so code
 * running from flash needs no special care. Register offsets: nRF52840 Product Specification,
 * NVMC section. Not yet run on a board. */
#include "cortexm.h"
#include "storage_in_flash.h"

#define NVMC_READY TINYC_REG(0x4001E400u)
#define NVMC_CONFIG TINYC_REG(0x4001E504u)
#define NVMC_ERASEPAGE TINYC_REG(0x4001E508u)
#define CONFIG_READ_ONLY 0u
#define CONFIG_WRITE 1u
#define CONFIG_ERASE 2u


static void wait_ready(void)
{
    while (NVMC_READY == 0u) {
    }
}

int tinyc_board_storage_open(const char *path, uint32_t bytes, uint32_t cut)
{
    (void)path;
    (void)cut;
    storage_bytes = bytes;
    return storage_misaligned();
}

int tinyc_board_storage_erase(uint32_t address)
{
    if (not_an_erase_unit(address)) {
        return 1;
    }
    NVMC_CONFIG = CONFIG_ERASE;
    wait_ready();
    NVMC_ERASEPAGE = (uint32_t)(uintptr_t)(__tinyc_storage_start + address);
    wait_ready();
    NVMC_CONFIG = CONFIG_READ_ONLY;
    wait_ready();
    return 0;
}

/* Whole 32-bit words (the NVMC's unit); a last partial word is padded with 0xFF, which leaves
 * the erased bytes after the data as they are. */
int tinyc_board_storage_program(uint32_t address, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    if (address % 4u != 0u || outside_storage(address, n)) {
        return 1;
    }
    NVMC_CONFIG = CONFIG_WRITE;
    wait_ready();
    for (i = 0; i < n; i += 4u) {
        *(volatile uint32_t *)(uintptr_t)(__tinyc_storage_start + address + i) =
            padded_word(data, n, i);
        wait_ready();
    }
    NVMC_CONFIG = CONFIG_READ_ONLY;
    wait_ready();
    return 0;
}

int tinyc_board_storage_read(uint32_t address, uint8_t *data, uint32_t n)
{
    return read_storage(address, data, n);
}

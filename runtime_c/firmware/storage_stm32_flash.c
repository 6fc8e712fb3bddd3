/* Persistent storage on the STM32F4 and STM32F7: the two slots of the trained parameters in the
 * top sectors of the internal flash, above the firmware (the linker script reserves them from
 * __tinyc_storage_start). Both families number their sectors alike: sectors 0-3 are small, 4 is
 * medium, and from 5 on every sector has one size, TINYC_STORE_ERASE_BYTES (128 KB on the F4,
 * 256 KB on the F7), with sector n at flash origin + (n - 4) * that size; the slots therefore
 * sit on those uniform sectors only. Erased and programmed word by word (PSIZE x32: 2.7-3.6 V)
 * through the FLASH interface; the CPU stalls on flash reads while it works, so code running from
 * flash needs no special care. Register offsets: RM0383 (F411) and RM0385 (F74x), section
 * "Embedded Flash memory interface". Not yet run on a board. */
#include "cortexm.h"
#include "storage_in_flash.h"

#define FLASH_ORIGIN 0x08000000u
#define FLASH_ACR TINYC_REG(0x40023C00u)
#define FLASH_KEYR TINYC_REG(0x40023C04u)
#define FLASH_SR TINYC_REG(0x40023C0Cu)
#define FLASH_CR TINYC_REG(0x40023C10u)
#define KEY1 0x45670123u
#define KEY2 0xCDEF89ABu
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_SNB_SHIFT 3u
#define CR_PSIZE_X32 (2u << 8)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xF2u        /* OPERR, WRPERR, PGAERR, PGPERR, PGSERR/ERSERR */
#define ACR_DCEN (1u << 10)    /* F4's data cache (the F7 has none in its ART) */
#define ACR_DCRST (1u << 12)


static inline void data_barrier(void)
{
    __asm__ volatile("dsb" ::: "memory");
}

static int wait_done(void)
{
    while (FLASH_SR & SR_BSY) {
    }
    if (FLASH_SR & SR_ERRORS) {
        FLASH_SR = SR_ERRORS;   /* write-1-to-clear, for the next operation */
        return 1;
    }
    return 0;
}

static void unlock(void)
{
    if (FLASH_CR & CR_LOCK) {
        FLASH_KEYR = KEY1;
        FLASH_KEYR = KEY2;
    }
    FLASH_SR = SR_ERRORS;
}

/* An erase changes flash behind the F4's data cache: reset it so reads see the new bytes. */
static void lock_and_refresh(void)
{
    FLASH_CR = CR_LOCK;
    if (FLASH_ACR & ACR_DCEN) {
        FLASH_ACR &= ~ACR_DCEN;
        FLASH_ACR |= ACR_DCRST;
        FLASH_ACR &= ~ACR_DCRST;
        FLASH_ACR |= ACR_DCEN;
    }
}

int tinyc_board_storage_open(const char *path, uint32_t bytes, uint32_t cut)
{
    const uint32_t start = (uint32_t)(uintptr_t)__tinyc_storage_start;
    (void)path;
    (void)cut;
    storage_bytes = bytes;
    /* the slots must begin on a uniform sector (sector 5 or later) */
    return start < FLASH_ORIGIN + TINYC_STORE_ERASE_BYTES
           || (start - FLASH_ORIGIN) % TINYC_STORE_ERASE_BYTES != 0u;
}

int tinyc_board_storage_erase(uint32_t address)
{
    uint32_t sector;
    int failed;
    if (not_an_erase_unit(address)) {
        return 1;
    }
    sector = 4u + ((uint32_t)(uintptr_t)(__tinyc_storage_start + address) - FLASH_ORIGIN)
                      / TINYC_STORE_ERASE_BYTES;
    unlock();
    failed = wait_done();
    FLASH_CR = CR_SER | CR_PSIZE_X32 | (sector << CR_SNB_SHIFT);
    FLASH_CR |= CR_STRT;
    data_barrier();
    failed |= wait_done();
    lock_and_refresh();
    return failed;
}

/* Whole 32-bit words (the x32 program unit); a last partial word is padded with 0xFF, which
 * leaves the erased bytes after the data as they are. */
int tinyc_board_storage_program(uint32_t address, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    int failed;
    if (address % 4u != 0u || outside_storage(address, n)) {
        return 1;
    }
    unlock();
    failed = wait_done();
    FLASH_CR = CR_PG | CR_PSIZE_X32;
    for (i = 0; i < n && !failed; i += 4u) {
        *(volatile uint32_t *)(uintptr_t)(__tinyc_storage_start + address + i) =
            padded_word(data, n, i);
        data_barrier();   /* the F7 buffers writes: the word must reach the flash interface */
        failed = wait_done();
    }
    lock_and_refresh();
    return failed;
}

int tinyc_board_storage_read(uint32_t address, uint8_t *data, uint32_t n)
{
    return read_storage(address, data, n);
}

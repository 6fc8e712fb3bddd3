/* Persistent storage on the RP2040: the two slots of the trained parameters in the QSPI flash
 * above the firmware (the linker script reserves them from __tinyc_storage_start, on 4 KB sector
 * boundaries), erased and programmed with the boot ROM's flash functions (RP2040 datasheet,
 * "Bootrom", flash access functions). While they run, the flash is not readable (execute-in-place
 * is off), so the code around them runs from RAM (section .ramfunc, which the linker script puts
 * in .data, copied there at reset) with interrupts masked, and calls nothing in flash. Afterwards execute-in-place is re-entered in the
 * serial 03h read mode, the one tinyc's second-stage boot loader sets up. Not yet run on a board. */
#include "cortexm.h"
#include "storage_in_flash.h"

#define XIP_BASE 0x10000000u
#define PAGE_BYTES 256u               /* the flash's program unit */
#define BLOCK_BYTES (1u << 16)        /* erases of whole 64 KB blocks use this command: */
#define BLOCK_ERASE_CMD 0xD8u
#define ROM_CODE(a, b) ((uint32_t)(a) | ((uint32_t)(b) << 8))

typedef void *(*rom_table_lookup_fn)(const uint16_t *table, uint32_t code);
typedef struct {
    void (*connect_internal_flash)(void);
    void (*exit_xip)(void);
    void (*range_erase)(uint32_t offset, uint32_t count, uint32_t block_bytes, uint8_t cmd);
    void (*range_program)(uint32_t offset, const uint8_t *data, uint32_t count);
    void (*flush_cache)(void);
    void (*enter_cmd_xip)(void);
} rom_flash;

static rom_flash rom;
static uint8_t page[PAGE_BYTES];      /* one page, padded with 0xFF, in RAM for the ROM */

/* A 16-bit word of the boot ROM at `address` (near 0: the pointer is hidden from the compiler,
 * which takes constant addresses below 4 KB for null-pointer arithmetic) */
static uint16_t rom_hword(uintptr_t address)
{
    __asm__("" : "+r"(address));
    return *(const uint16_t *)address;
}

/* The boot ROM's function table: 16-bit pointers at 0x14 (table) and 0x18 (lookup function). */
static void *rom_function(uint32_t code)
{
    const rom_table_lookup_fn lookup = (rom_table_lookup_fn)(uintptr_t)rom_hword(0x18u);
    return lookup((const uint16_t *)(uintptr_t)rom_hword(0x14u), code);
}

/* Runs from RAM: flash out of execute-in-place, one erase (count > 0 and data NULL) or program,
 * caches flushed, execute-in-place back. */
__attribute__((section(".ramfunc.tinyc_flash_op"), noinline))
static void flash_op(uint32_t offset, const uint8_t *data, uint32_t count)
{
    rom.connect_internal_flash();
    rom.exit_xip();
    if (data == 0) {
        rom.range_erase(offset, count, BLOCK_BYTES, BLOCK_ERASE_CMD);
    } else {
        rom.range_program(offset, data, count);
    }
    rom.flush_cache();
    rom.enter_cmd_xip();
}

static void run_masked(uint32_t offset, const uint8_t *data, uint32_t count)
{
    uint32_t primask;
    /* RAM is beyond a BL's reach from flash: call through a pointer */
    void (*volatile op)(uint32_t, const uint8_t *, uint32_t) = flash_op;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    op(offset, data, count);
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

int tinyc_board_storage_open(const char *path, uint32_t bytes, uint32_t cut)
{
    (void)path;
    (void)cut;
    storage_bytes = bytes;
    rom.connect_internal_flash = (void (*)(void))rom_function(ROM_CODE('I', 'F'));
    rom.exit_xip = (void (*)(void))rom_function(ROM_CODE('E', 'X'));
    rom.range_erase = (void (*)(uint32_t, uint32_t, uint32_t, uint8_t))rom_function(
        ROM_CODE('R', 'E'));
    rom.range_program = (void (*)(uint32_t, const uint8_t *, uint32_t))rom_function(
        ROM_CODE('R', 'P'));
    rom.flush_cache = (void (*)(void))rom_function(ROM_CODE('F', 'C'));
    rom.enter_cmd_xip = (void (*)(void))rom_function(ROM_CODE('C', 'X'));
    if (!rom.connect_internal_flash || !rom.exit_xip || !rom.range_erase || !rom.range_program
        || !rom.flush_cache || !rom.enter_cmd_xip) {
        return 1;
    }
    return storage_misaligned();
}

static uint32_t flash_offset(uint32_t address)
{
    return (uint32_t)(uintptr_t)__tinyc_storage_start - XIP_BASE + address;
}

int tinyc_board_storage_erase(uint32_t address)
{
    if (not_an_erase_unit(address)) {
        return 1;
    }
    run_masked(flash_offset(address), 0, TINYC_STORE_ERASE_BYTES);
    return 0;
}

/* Whole 256-byte pages; the bytes after the data are programmed as 0xFF, which leaves them
 * erased. */
int tinyc_board_storage_program(uint32_t address, const uint8_t *data, uint32_t n)
{
    if (address % PAGE_BYTES != 0u || n > PAGE_BYTES || outside_storage(address, n)) {
        return 1;
    }
    memset(page, 0xFF, sizeof page);
    memcpy(page, data, n);
    run_masked(flash_offset(address), page, PAGE_BYTES);
    return 0;
}

int tinyc_board_storage_read(uint32_t address, uint8_t *data, uint32_t n)
{
    return read_storage(address, data, n);
}

/* RP2040 second-stage boot loader (the first 256 bytes of flash; the last 4 are its CRC-32,
 * written after linking by rp2040_image.py). The boot ROM copies these bytes to SRAM and runs
 * them before the flash is memory-mapped, so this code uses no data, calls only boot ROM
 * functions and must be position independent.
 *
 * It asks the boot ROM for its generic flash set-up (serial 03h read command: slow, but works
 * with any QSPI flash chip), then starts the application whose vector table follows at
 * flash + 0x100. */
#include <stdint.h>

typedef void (*rom_fn)(void);
typedef rom_fn (*rom_lookup)(const uint16_t *table, uint32_t code);

#define ROM_CODE(a, b) ((uint32_t)(a) | ((uint32_t)(b) << 8))
#define XIP_BASE 0x10000000u
#define VTOR (*(volatile uint32_t *)0xE000ED08u)

/* A 16-bit pointer stored in the boot ROM (the address goes through an empty asm so the
 * compiler does not mistake a small constant address for a null-pointer offset). */
static inline __attribute__((always_inline)) uintptr_t rom_hword(uintptr_t addr)
{
    __asm__("" : "+r"(addr));
    return *(const volatile uint16_t *)addr;
}

__attribute__((section(".boot2"), used, noreturn)) void tinyc_rp2040_boot2(void)
{
    const uint16_t *table = (const uint16_t *)rom_hword(0x14u);
    rom_lookup lookup = (rom_lookup)rom_hword(0x18u);
    const uint32_t *vectors = (const uint32_t *)(XIP_BASE + 0x100u);

    lookup(table, ROM_CODE('I', 'F'))();   /* connect_internal_flash */
    lookup(table, ROM_CODE('E', 'X'))();   /* flash_exit_xip */
    lookup(table, ROM_CODE('F', 'C'))();   /* flash_flush_cache */
    lookup(table, ROM_CODE('C', 'X'))();   /* flash_enter_cmd_xip: 03h reads */

    VTOR = (uint32_t)(uintptr_t)vectors;
    __asm__ volatile(
        "msr msp, %0\n\t"
        "bx %1\n\t"
        :
        : "r"(vectors[0]), "r"(vectors[1]));
    for (;;) {
    }
}

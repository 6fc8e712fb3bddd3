/* What the demo firmware needs from a board: a console, an exit, a cycle/instruction counter and
 * the stack's high-water mark. One implementation of the console per board family
 * (console_*.c); the rest is common to every Cortex-M (startup.c, counter.c, print.c).
 * Board constants (TINYC_BOARD_*) come from the generated tinyc_board_config.h. */
#ifndef TINYC_BOARD_H
#define TINYC_BOARD_H

#include <stddef.h>
#include <stdint.h>

#include "tinyc_board_config.h"

/* Exit statuses of the firmware (the emulated boards return them to the host). */
#define TINYC_EXIT_OK 0
#define TINYC_EXIT_USAGE 2          /* bad command line or sample file */
#define TINYC_EXIT_STACK_OVERFLOW 3 /* the MPU guard below the stack was hit */
#define TINYC_EXIT_FAULT 4          /* any other fault */
#define TINYC_EXIT_POWER_CUT 5      /* a simulated power cut (storage tests: cut=N) */

/* Board bring-up: clocks where needed, console, counter. Call first in main(). */
void tinyc_board_init(void);

/* Console output (semihosting or UART, depending on the board). */
void tinyc_console_write(const char *s, size_t n);
void tinyc_console_flush(void);

/* Ends the demo. Emulated boards return `status` to the host; real boards halt. */
void tinyc_board_exit(int status) __attribute__((noreturn));

/* SysTick-based counter: ticks since tinyc_board_init(). One tick is TINYC_BOARD_COUNTER_SCALE
 * units of TINYC_BOARD_COUNTER_UNIT ("cycles" on hardware; "instructions" under QEMU -icount). */
void tinyc_counter_init(void);
uint64_t tinyc_counter_ticks(void);

/* Stack: its size (guard excluded) and the most of it ever used (painted at reset). */
uint32_t tinyc_stack_size(void);
uint32_t tinyc_stack_high_water(void);
/* Paints the free stack again (below the caller's frame); tinyc_stack_used_since_paint() then
 * gives the depth reached since (the frames above the caller included). */
void tinyc_stack_paint(void);
uint32_t tinyc_stack_used_since_paint(void);

/* The device link's byte stream (lib/tinyc_model/tinyc_link.h): UART0 on the emulated boards
 * (QEMU's first -serial), the console UART on real boards (the same line as the demo's text:
 * the link skips bytes outside frames). tinyc_board_link_init() after tinyc_board_init(). */
void tinyc_board_link_init(void);
int tinyc_board_link_getc(void);                  /* a received byte, or -1 if none waits */
int tinyc_board_link_read(uint32_t timeout_ms);   /* waits up to timeout_ms (link_port.c) */
void tinyc_board_link_write(const uint8_t *data, uint32_t n);
/* Persistent storage of the trained parameters (tinyc_store.h tinyc_flash), where the board
 * has it: the emulated boards, a host file (storage_semihosting.c: `path`, created erased if
 * missing or of another size; cut: the write at which a simulated power cut ends the firmware,
 * 0: never); the nRF52840, its flash above the firmware (storage_nrf52_nvmc.c: path and cut
 * unused). Addresses count from the first slot; erase takes one TINYC_STORE_ERASE_BYTES unit.
 * Each returns 0 on success. */
int tinyc_board_storage_open(const char *path, uint32_t bytes, uint32_t cut);
int tinyc_board_storage_erase(uint32_t address);
int tinyc_board_storage_program(uint32_t address, const uint8_t *data, uint32_t n);
int tinyc_board_storage_read(uint32_t address, uint8_t *data, uint32_t n);
/* the counter in cycles / instructions (TINYC_BOARD_COUNTER_UNIT) */
uint64_t tinyc_board_cost(void);

/* Printing helpers over tinyc_console_write (no printf, no heap). */
void tinyc_print(const char *s);
void tinyc_print_int(int32_t v);
void tinyc_print_u64(uint64_t v);
void tinyc_print_hex(uint32_t v);
/* A float with 6 decimals ("-1.234567"; "nan", "inf"): for display, not for exact values. */
void tinyc_print_float(float v);

#endif /* TINYC_BOARD_H */

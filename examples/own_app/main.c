/* An application of your own that embeds tinyc's model library (lib/tinyc_model of a training
 * build) and serves the device link and the persistent storage of the trained parameters from
 * it: the README's example (Device link, "Your own application"), made real for the emulated
 * board mps2_an386.
 *
 * What it needs from the board: start-up, a UART (bytes in and out), a counter for the link's
 * time limits and a flash with erase / program / read. Here these come from lib/tinyc_board, the
 * emulated board's drivers that `tinyc build` writes; on your board they are your own.
 * The flash of the emulated board is the host file own_app_flash.bin in QEMU's working folder.
 *
 * tests/test_own_app.py builds this file in place of a tinyc build's src/main.c and talks to
 * it under QEMU with tinyc.device (info, infer, train, save, power cut, restart). */
#include <stdint.h>

#include "model.h"
#include "tinyc_board.h"   /* this board's drivers (and TINYC_LINK_BUILD_ID, TINYC_STORE_*) */
#include "tinyc_link.h"
#include "tinyc_store.h"

#define FLASH_FILE "own_app_flash.bin"

/* A received byte, or -1 when none came within timeout_ms (TINYC_LINK_FOREVER: wait). */
static int my_read(uint32_t timeout_ms)
{
    const uint64_t limit = (uint64_t)timeout_ms * TINYC_BOARD_COUNTER_PER_MS
                           / TINYC_BOARD_COUNTER_SCALE;
    const uint64_t start = tinyc_counter_ticks();
    for (;;) {
        const int b = tinyc_board_link_getc();
        if (b >= 0) {
            return b;
        }
        if (timeout_ms != TINYC_LINK_FOREVER && tinyc_counter_ticks() - start >= limit) {
            return -1;
        }
    }
}

static void my_write(const uint8_t *data, uint32_t n)
{
    tinyc_board_link_write(data, n);
}

/* optional: lets the host see what an inference or a training step costs */
static uint64_t my_cost(void)
{
    return tinyc_counter_ticks() * TINYC_BOARD_COUNTER_SCALE;
}

/* The two slots of the trained parameters: the parameters and the step index (4 bytes), after
 * a header write unit, on whole erase units. */
static const tinyc_flash my_flash = {
    .write_bytes = TINYC_STORE_WRITE_BYTES,
    .erase_bytes = TINYC_STORE_ERASE_BYTES,
    .slot_bytes = TINYC_STORE_SLOT_BYTES(TINYC_PARAM_BYTES + 4u, TINYC_STORE_WRITE_BYTES,
                                         TINYC_STORE_ERASE_BYTES),
    .erase = tinyc_board_storage_erase,
    .program = tinyc_board_storage_program,
    .read = tinyc_board_storage_read,
};

static const tinyc_link_port my_port = {
    .read_byte = my_read,
    .write = my_write,
    .cost = my_cost,
    .save = tinyc_store_save,
    .restore = tinyc_store_restore,
    .storage_status = tinyc_store_get_status,
    /* the host's check_build compares it with the CRC-32 of model.c */
    .build_id = TINYC_LINK_BUILD_ID,
    .counts_instructions = TINYC_BOARD_COUNTS_INSTRUCTIONS,
};

int main(void)
{
    const char *problem;

    tinyc_board_init();
    tinyc_board_link_init();
    if (tinyc_board_storage_open(FLASH_FILE, 2u * my_flash.slot_bytes, 0u) != 0) {
        tinyc_print("own app: cannot open " FLASH_FILE "\n");
        return TINYC_EXIT_USAGE;
    }
    /* the built parameters, then what the device learned before the last power cut, if any */
    tinyc_train_init();
    tinyc_store_init(&my_flash, TINYC_LINK_BUILD_ID);
    problem = tinyc_store_restore();
    tinyc_print("own app: ");
    tinyc_print(problem == NULL ? "restored the saved parameters" : problem);
    tinyc_print("\n");
    tinyc_console_flush();

    tinyc_link_init(&my_port);
    for (;;) {
        tinyc_link_poll(10u);   /* answers a request if one came within 10 ms */
        /* ... your own work: tinyc_input(), tinyc_run(), tinyc_output(), tinyc_train_step() */
    }
}

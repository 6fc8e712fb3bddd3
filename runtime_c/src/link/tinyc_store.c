/* tinyc persistent storage: A/B slots with a sequence number and CRCs (tinyc_store.h). */
#include <string.h>

#include "model.h"
#include "tinyc_link.h"
#include "tinyc_store.h"

#define MAGIC 0x53504354u   /* "TCPS" */
#define FORMAT 1u
#define DATA_BYTES ((uint32_t)TINYC_PARAM_BYTES + 4u)

static const tinyc_flash *flash;
static uint32_t build;
static uint8_t chunk[TINYC_STORE_PAGE_MAX];   /* one write unit of the data */
static tinyc_store_status status = {TINYC_STORE_NONE, 0u, {0u, 0u}, {0u, 0u}};

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
           | ((uint32_t)p[3] << 24);
}

/* Bytes [at, at + n) of the data (parameters, then the step index) into / from buf. */
static int data_copy(uint32_t at, uint32_t n, uint8_t *buf, int write)
{
    uint8_t step[4];
    uint32_t k = 0;
    if (at < (uint32_t)TINYC_PARAM_BYTES) {
        k = (uint32_t)TINYC_PARAM_BYTES - at < n ? (uint32_t)TINYC_PARAM_BYTES - at : n;
        if (!tinyc_link_params_copy(at, k, buf, write)) {
            return 0;
        }
    }
    if (k < n) {   /* the step index, whole or in part */
        const uint32_t from = at + k - (uint32_t)TINYC_PARAM_BYTES;
        put_u32(step, tinyc_train_step_count());
        if (write) {
            memcpy(step + from, buf + k, n - k);
            tinyc_set_train_step_count(get_u32(step));
        } else {
            memcpy(buf + k, step + from, n - k);
        }
    }
    return 1;
}

static uint32_t slot_base(int slot)
{
    return (uint32_t)slot * flash->slot_bytes;
}

/* The slot's header if it checks, and its data's CRC (read back from flash) matches. */
static int slot_valid(int slot, uint32_t *seq)
{
    uint8_t h[TINYC_STORE_HEADER_BYTES];
    uint32_t at, crc = 0;
    if (flash->read(slot_base(slot), h, sizeof h) != 0 || get_u32(h) != MAGIC
        || get_u32(h + 4) != FORMAT || get_u32(h + 12) != build || get_u32(h + 16) != DATA_BYTES
        || get_u32(h + 24) != tinyc_crc32(0, h, 24)) {
        return 0;
    }
    for (at = 0; at < DATA_BYTES; at += flash->write_bytes) {
        const uint32_t n = DATA_BYTES - at < flash->write_bytes ? DATA_BYTES - at : flash->write_bytes;
        if (flash->read(slot_base(slot) + flash->write_bytes + at, chunk, n) != 0) {
            return 0;
        }
        crc = tinyc_crc32(crc, chunk, n);
    }
    *seq = get_u32(h + 8);
    return crc == get_u32(h + 20);
}

static void scan(void)
{
    int s;
    for (s = 0; s < 2; s++) {
        status.valid[s] = (uint8_t)slot_valid(s, &status.seq[s]);
        if (!status.valid[s]) {
            status.seq[s] = 0;
        }
    }
}

/* The valid slot with the highest sequence number, or -1. */
static int newest(void)
{
    if (status.valid[0] && status.valid[1]) {
        return status.seq[1] > status.seq[0] ? 1 : 0;
    }
    return status.valid[0] ? 0 : status.valid[1] ? 1 : -1;
}

void tinyc_store_init(const tinyc_flash *f, uint32_t build_id)
{
    flash = f;
    build = build_id;
    scan();
}

const char *tinyc_store_save(void)
{
    uint8_t h[TINYC_STORE_HEADER_BYTES];
    const int last = newest();
    const int slot = last == 0 ? 1 : 0;
    const uint32_t seq = last < 0 ? 1u : status.seq[last] + 1u;
    uint32_t at, crc = 0;
    if (flash->write_bytes > TINYC_STORE_PAGE_MAX || flash->write_bytes < TINYC_STORE_HEADER_BYTES
        || flash->slot_bytes < TINYC_STORE_SLOT_BYTES(DATA_BYTES, flash->write_bytes,
                                                      flash->erase_bytes)) {
        return "storage smaller than the parameters";
    }
    status.valid[slot] = 0;   /* from the first erase on, this slot holds nothing valid */
    for (at = 0; at < flash->slot_bytes; at += flash->erase_bytes) {
        if (flash->erase(slot_base(slot) + at) != 0) {
            return "flash erase failed";
        }
    }
    for (at = 0; at < DATA_BYTES; at += flash->write_bytes) {
        const uint32_t n = DATA_BYTES - at < flash->write_bytes ? DATA_BYTES - at : flash->write_bytes;
        if (!data_copy(at, n, chunk, 0)) {
            return "cannot read the parameters";
        }
        crc = tinyc_crc32(crc, chunk, n);
        if (flash->program(slot_base(slot) + flash->write_bytes + at, chunk, n) != 0) {
            return "flash write failed";
        }
    }
    put_u32(h, MAGIC);   /* the header last: until it is complete the slot is not valid */
    put_u32(h + 4, FORMAT);
    put_u32(h + 8, seq);
    put_u32(h + 12, build);
    put_u32(h + 16, DATA_BYTES);
    put_u32(h + 20, crc);
    put_u32(h + 24, tinyc_crc32(0, h, 24));
    if (flash->program(slot_base(slot), h, sizeof h) != 0) {
        return "flash write failed";
    }
    if (!slot_valid(slot, &status.seq[slot]) || status.seq[slot] != seq) {
        return "the saved slot does not read back";
    }
    status.valid[slot] = 1;
    status.loaded = (uint8_t)slot;   /* the parameters are those of this slot now */
    status.loaded_seq = seq;
    return NULL;
}

const char *tinyc_store_restore(void)
{
    int slot;
    uint32_t at;
    scan();
    slot = newest();
    if (slot < 0) {
        status.loaded = TINYC_STORE_NONE;
        return "nothing saved";
    }
    /* the slot's CRCs checked above, so what is loaded is the whole of one save */
    for (at = 0; at < DATA_BYTES; at += flash->write_bytes) {
        const uint32_t n = DATA_BYTES - at < flash->write_bytes ? DATA_BYTES - at : flash->write_bytes;
        if (flash->read(slot_base(slot) + flash->write_bytes + at, chunk, n) != 0
            || !data_copy(at, n, chunk, 1)) {
            return "flash read failed while loading";
        }
    }
    status.loaded = (uint8_t)slot;
    status.loaded_seq = status.seq[slot];
    return NULL;
}

void tinyc_store_get_status(tinyc_store_status *out)
{
    *out = status;
}

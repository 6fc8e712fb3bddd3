/* tinyc persistent storage of the trained parameters: two slots (A/B) in a flash-like memory,
 * each a header page and the parameters; a save writes the slot that does not hold the newest
 * valid copy, page by page, and its header last, so a power cut at any point leaves the newest
 * valid slot as it was. At boot, tinyc_store_restore loads the valid slot with the highest
 * sequence number; a slot is valid when its header's magic, format, build id, length and CRC
 * and its data's CRC all check. Portable C99 over a tinyc_flash of the board (or of QEMU: a
 * host file written through semihosting, runtime_c/firmware/storage_semihosting.c).
 *
 * Slot (slot_bytes, a multiple of the erase unit):
 *     [0, write_bytes)   header: "TCPS", format 1, sequence, build id, data length, data
 *                        CRC-32, header CRC-32 (of the 24 bytes before it): 7 x u32, LE
 *     [write_bytes, ..)  data: the trained parameters (TINYC_PARAM_BYTES, the layout of
 *                        tinyc_link_params_copy), then the training step index (u32),
 *                        programmed write_bytes at a time */
#ifndef TINYC_STORE_H
#define TINYC_STORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef TINYC_STORE_PAGE_MAX
#define TINYC_STORE_PAGE_MAX 256u   /* the largest write unit this code buffers */
#endif
#define TINYC_STORE_HEADER_BYTES 28u
#define TINYC_STORE_NONE 0xFFu

/* A flash-like memory of two slots; addresses are bytes from the start of slot A (slot B at
 * slot_bytes). Each function returns 0 on success. */
typedef struct {
    uint32_t write_bytes;   /* the largest piece programmed at once; <= TINYC_STORE_PAGE_MAX */
    uint32_t erase_bytes;   /* the erase unit (a page or sector) */
    uint32_t slot_bytes;    /* each slot; a multiple of erase_bytes */
    int (*erase)(uint32_t address);   /* the erase unit at address to all 0xFF */
    /* n <= write_bytes bytes at address (a multiple of write_bytes, + n inside the unit) */
    int (*program)(uint32_t address, const uint8_t *data, uint32_t n);
    int (*read)(uint32_t address, uint8_t *data, uint32_t n);
} tinyc_flash;

typedef struct {
    uint8_t loaded;        /* slot the parameters came from (0 = A, 1 = B), or TINYC_STORE_NONE */
    uint32_t loaded_seq;
    uint8_t valid[2];      /* each slot holds a valid copy */
    uint32_t seq[2];       /* its sequence number */
} tinyc_store_status;

/* The slot size for `data_bytes` of data (the header takes the first write unit). */
#define TINYC_STORE_SLOT_BYTES(data_bytes, write_bytes, erase_bytes) \
    ((((write_bytes) + (data_bytes) + (erase_bytes) - 1u) / (erase_bytes)) * (erase_bytes))

void tinyc_store_init(const tinyc_flash *flash, uint32_t build_id);
/* Both return NULL on success, else what failed. */
const char *tinyc_store_save(void);
const char *tinyc_store_restore(void);   /* "nothing saved" leaves the parameters as they are */
void tinyc_store_get_status(tinyc_store_status *status);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_STORE_H */

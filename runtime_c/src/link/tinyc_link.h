/* tinyc device link: a small framed, versioned request/answer protocol over a byte stream (a
 * UART, USB CDC, QEMU's -serial), so that a host can query, run, train and read or replace the
 * trained parameters of a running device. Portable C99; the byte stream and the optional
 * services (a cost counter, the per-layer profile, persistent storage) come from the
 * application through tinyc_link_port.
 *
 * Frame (both directions, little-endian):
 *     0xA5 | version (1) | type u8 | length u16 | payload[length] | crc32 u32
 * crc32 is zlib's CRC-32 over version .. the last payload byte. An answer has the request's
 * type | 0x80; an error answer has type 0xFF and payload: code u8, request type u8, a short
 * ASCII message. The commands and their payloads are listed in README.md (Device link) and
 * compiler/device.py. Bytes before a 0xA5 are skipped (a console's text may share the line).
 *
 * Memory: the request payload streams straight into the model's input buffer for infer and
 * train (no copy of a sample); other payloads go to one static buffer of
 * TINYC_LINK_MAX_PAYLOAD bytes, and answers are written piece by piece (no TX frame buffer). */
#ifndef TINYC_LINK_H
#define TINYC_LINK_H

#include <stdint.h>

#include "tinyc_store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TINYC_LINK_VERSION 1u
#define TINYC_LINK_SYNC 0xA5u
#ifndef TINYC_LINK_MAX_PAYLOAD
#define TINYC_LINK_MAX_PAYLOAD 256u      /* the payload of any request but infer / train */
#endif
#ifndef TINYC_LINK_BYTE_TIMEOUT_MS
#define TINYC_LINK_BYTE_TIMEOUT_MS 1000u /* a frame whose next byte is this late is dropped */
#endif
#define TINYC_LINK_FOREVER 0xFFFFFFFFu

/* request types; the answer is type | 0x80 */
enum {
    TINYC_LINK_INFO = 0x01,          /* -> model, sizes, build id, protocol version */
    TINYC_LINK_INFER = 0x02,         /* int8 input -> cost, int8 output */
    TINYC_LINK_TRAIN = 0x03,         /* label, lr, int8 input -> loss, step counters, cost */
    TINYC_LINK_PARAMS_READ = 0x04,   /* offset, count -> bytes of the trained parameters */
    TINYC_LINK_PARAMS_WRITE = 0x05,  /* offset, bytes -> written */
    TINYC_LINK_PARAMS_RESET = 0x06,  /* back to the built parameters (tinyc_train_init) */
    TINYC_LINK_STATS = 0x07,         /* -> link and training counters, last costs, profile */
    TINYC_LINK_STEP = 0x08,          /* get / set the training step index */
    TINYC_LINK_SAVE = 0x09,          /* trained parameters -> persistent storage */
    TINYC_LINK_RESTORE = 0x0A,       /* persistent storage -> trained parameters */
    TINYC_LINK_STORAGE = 0x0B,       /* -> which slot the parameters came from, the slots */
    TINYC_LINK_ERROR = 0xFF
};

/* error codes (first byte of an error answer) */
enum {
    TINYC_LINK_E_CRC = 1,            /* the frame's CRC does not match */
    TINYC_LINK_E_VERSION = 2,        /* another protocol version */
    TINYC_LINK_E_COMMAND = 3,        /* unknown request type */
    TINYC_LINK_E_LENGTH = 4,         /* wrong payload length for the request */
    TINYC_LINK_E_TIMEOUT = 5,        /* the frame stopped arriving */
    TINYC_LINK_E_UNSUPPORTED = 6,    /* not in this build (e.g. training in an inference build) */
    TINYC_LINK_E_ARGUMENT = 7,       /* a value out of range (label, offset, lr) */
    TINYC_LINK_E_STORAGE = 8         /* save / restore failed */
};

/* INFO flags */
#define TINYC_LINK_HAS_TRAINING 0x01u
#define TINYC_LINK_HAS_PROFILE 0x02u
#define TINYC_LINK_HAS_STORAGE 0x04u
#define TINYC_LINK_COUNTS_INSTRUCTIONS 0x08u   /* costs are instructions (QEMU), else cycles */

/* What the application provides. read_byte and write are required; the rest may be NULL. */
typedef struct {
    /* the next received byte (0..255), or -1 when none arrived within timeout_ms
     * (TINYC_LINK_FOREVER: wait for ever) */
    int (*read_byte)(uint32_t timeout_ms);
    void (*write)(const uint8_t *data, uint32_t n);
    void (*flush)(void);                   /* the end of an answer, or NULL */
    uint64_t (*cost)(void);                /* a running count of cycles or instructions */
    void (*profile_start)(void);           /* --profile builds: per-layer counts of ... */
    uint64_t (*profile_count)(int32_t layer);   /* ... the last run since profile_start */
    /* persistent storage of the trained parameters (tinyc_store.h): NULL on success, else
     * what failed; all three NULL: "not supported in this build" */
    const char *(*save)(void);
    const char *(*restore)(void);
    void (*storage_status)(tinyc_store_status *status);
    uint32_t build_id;                     /* identifies the model (CRC-32 of model.c) */
    uint8_t counts_instructions;           /* cost() counts instructions (QEMU), not cycles */
} tinyc_link_port;

/* Counters of the link since tinyc_link_init. */
typedef struct {
    uint32_t frames;      /* requests answered (errors included) */
    uint32_t errors;      /* error answers sent */
    uint32_t skipped;     /* bytes skipped while looking for a frame */
} tinyc_link_counters;

void tinyc_link_init(const tinyc_link_port *port);

/* Waits up to timeout_ms for a request, then receives, executes and answers it. Returns 1 when
 * a request (or a broken frame) was answered, 0 when nothing but skipped bytes arrived. */
int tinyc_link_poll(uint32_t timeout_ms);

/* Answers requests for ever. */
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void tinyc_link_serve(void);

void tinyc_link_get_counters(tinyc_link_counters *counters);

#ifdef TINYC_TRAINING
/* The trained parameters as one byte string: every tensor of tinyc_params[] in order, whole (as
 * tinyc_get_param copies it), TINYC_PARAM_BYTES in all. Copies bytes [offset, offset + n) out
 * of it (write = 0) or into it (write = 1) through buf; 0 for a range outside it. */
int tinyc_link_params_copy(uint32_t offset, uint32_t n, uint8_t *buf, int write);
#endif

/* zlib's CRC-32, incrementally: crc = tinyc_crc32(0, data, n), then
 * tinyc_crc32(crc, more, m). */
uint32_t tinyc_crc32(uint32_t crc, const uint8_t *data, uint32_t n);

/* the link's static buffers (SRAM), for the build's memory report */
#define TINYC_LINK_RX_BYTES TINYC_LINK_MAX_PAYLOAD

#ifdef __cplusplus
}
#endif

#endif /* TINYC_LINK_H */

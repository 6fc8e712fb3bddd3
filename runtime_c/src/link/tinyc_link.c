/* tinyc device link: the device side of the protocol (tinyc_link.h has the frame; README.md,
 * "Device link", the commands). Requests are received byte by byte: infer and train stream the
 * sample straight into the model's input buffer, everything else goes to one small buffer whose
 * size bounds every payload. Any malformed frame gets an error answer; nothing is written
 * outside the buffers whatever the host sends. */
#include <string.h>

#include "model.h"
#include "tinyc_link.h"

#define HEADER_BYTES 4u         /* version, type, length (after the sync byte) */
#define TRAIN_HEAD_BYTES 8u     /* label i32, lr f32 */
#define ANSWER_HEAD_MAX 64u     /* the fixed part of any answer */

static const tinyc_link_port *port;
static tinyc_link_counters counters;
static uint8_t rx[TINYC_LINK_RX_BYTES];   /* request payloads other than samples */
static uint64_t last_infer_cost, last_train_cost;

/* ------------------------------------------------------------------ CRC-32 (zlib's) */
/* four bits at a time: a 64-byte table instead of 1 KB */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

static uint32_t crc_byte(uint32_t reg, uint8_t b)
{
    reg ^= b;
    reg = (reg >> 4) ^ crc_nibble[reg & 15u];
    return (reg >> 4) ^ crc_nibble[reg & 15u];
}

uint32_t tinyc_crc32(uint32_t crc, const uint8_t *data, uint32_t n)
{
    uint32_t reg = ~crc, i;
    for (i = 0; i < n; i++) {
        reg = crc_byte(reg, data[i]);
    }
    return ~reg;
}

/* ------------------------------------------------------------------ little-endian fields */
static void put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, v);
    put_u16(p + 2, v >> 16);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return get_u16(p) | (get_u16(p + 2) << 16);
}

/* ------------------------------------------------------------------ answers */
/* Sends one frame: `head` then `body` as its payload (either may be empty). */
static void send_frame(uint8_t type, const uint8_t *head, uint32_t head_n, const uint8_t *body,
                       uint32_t body_n)
{
    uint8_t h[5], c[4];
    uint32_t reg;
    h[0] = TINYC_LINK_SYNC;
    h[1] = TINYC_LINK_VERSION;
    h[2] = type;
    put_u16(h + 3, head_n + body_n);
    reg = ~tinyc_crc32(0, h + 1, 4);
    port->write(h, 5);
    if (head_n > 0u) {
        reg = ~tinyc_crc32(~reg, head, head_n);
        port->write(head, head_n);
    }
    if (body_n > 0u) {
        reg = ~tinyc_crc32(~reg, body, body_n);
        port->write(body, body_n);
    }
    put_u32(c, ~reg);
    port->write(c, 4);
    if (port->flush != NULL) {
        port->flush();
    }
}

static void send_error(uint8_t code, uint8_t request, const char *message)
{
    uint8_t head[2];
    head[0] = code;
    head[1] = request;
    counters.errors++;
    send_frame(TINYC_LINK_ERROR, head, 2, (const uint8_t *)message, (uint32_t)strlen(message));
}

static uint64_t cost_now(void)
{
    return port->cost != NULL ? port->cost() : 0u;
}

static void profile_start(void)
{
    if (port->profile_start != NULL) {
        port->profile_start();
    }
}

/* ------------------------------------------------------------------ commands */
static void do_info(void)
{
    uint8_t a[48];
    uint8_t flags = 0;
    uint32_t classes = 0, param_bytes = 0, params = 0, param_sram = 0;
#ifdef TINYC_TRAINING
    flags |= TINYC_LINK_HAS_TRAINING;
    classes = TINYC_NUM_CLASSES;
    param_bytes = TINYC_PARAM_BYTES;
    params = TINYC_NUM_PARAMS;
    param_sram = TINYC_PARAM_SRAM_BYTES;
#endif
    if (port->profile_count != NULL) {
        flags |= TINYC_LINK_HAS_PROFILE;
    }
    if (port->storage_status != NULL) {
        flags |= TINYC_LINK_HAS_STORAGE;
    }
    if (port->counts_instructions) {
        flags |= TINYC_LINK_COUNTS_INSTRUCTIONS;
    }
    a[0] = TINYC_LINK_VERSION;
    a[1] = flags;
    put_u16(a + 2, TINYC_LINK_MAX_PAYLOAD);
    put_u32(a + 4, port->build_id);
    put_u32(a + 8, TINYC_INPUT_SIZE);
    put_u32(a + 12, TINYC_OUTPUT_SIZE);
    put_u32(a + 16, TINYC_ARENA_BYTES);
    put_u32(a + 20, TINYC_NUM_LAYERS);
    put_u32(a + 24, classes);
    put_u32(a + 28, param_bytes);
    put_u32(a + 32, params);
    put_u32(a + 36, param_sram);
    put_u32(a + 40, (uint32_t)sizeof rx);
    put_u32(a + 44, 0u);   /* reserved */
    send_frame(TINYC_LINK_INFO | 0x80u, a, sizeof a, NULL, 0);
}

static void do_infer(void)
{
    uint8_t a[8];
    uint64_t t0;
    profile_start();
    t0 = cost_now();
    tinyc_run();
    last_infer_cost = cost_now() - t0;
    put_u64(a, last_infer_cost);
    send_frame(TINYC_LINK_INFER | 0x80u, a, sizeof a, (const uint8_t *)tinyc_output(),
               TINYC_OUTPUT_SIZE);
}

#if defined(TINYC_TRAINING) && !TINYC_LOSS_MSE
static int finite_positive(float v)
{
    return v > 0.0f && v - v == 0.0f;
}

static void do_train(void)
{
    uint8_t a[32];
    int32_t label = (int32_t)get_u32(rx);
    uint32_t lr_bits = get_u32(rx + 4);
    float lr, loss;
    uint64_t t0;
    tinyc_train_stats s;
    memcpy(&lr, &lr_bits, sizeof lr);
    if (label < 0 || label >= TINYC_NUM_CLASSES) {
        send_error(TINYC_LINK_E_ARGUMENT, TINYC_LINK_TRAIN, "label out of range");
        return;
    }
    if (!finite_positive(lr)) {
        send_error(TINYC_LINK_E_ARGUMENT, TINYC_LINK_TRAIN, "lr must be finite and > 0");
        return;
    }
    profile_start();
    t0 = cost_now();
    loss = tinyc_train_step(tinyc_input(), (int)label, lr);
    last_train_cost = cost_now() - t0;
    tinyc_get_train_stats(&s);
    memcpy(&lr_bits, &loss, sizeof loss);
    put_u32(a, lr_bits);
    put_u32(a + 4, tinyc_train_step_count());
    put_u32(a + 8, s.steps);
    put_u32(a + 12, s.steps_skipped);
    put_u32(a + 16, s.steps_guarded);
    put_u32(a + 20, s.refused_nonfinite + s.refused_saturation);
    put_u64(a + 24, last_train_cost);
    send_frame(TINYC_LINK_TRAIN | 0x80u, a, sizeof a, NULL, 0);
}
#endif

#ifdef TINYC_TRAINING
int tinyc_link_params_copy(uint32_t offset, uint32_t n, uint8_t *buf, int write)
{
    uint32_t start = 0;
    int p;
    if (offset > (uint32_t)TINYC_PARAM_BYTES || n > (uint32_t)TINYC_PARAM_BYTES - offset) {
        return 0;
    }
    for (p = 0; p < TINYC_NUM_PARAMS && n > 0u; p++) {
        const uint32_t size = (uint32_t)(tinyc_params[p].count * tinyc_params[p].elem_bytes);
        if (offset < start + size) {
            const uint32_t at = offset - start;
            const uint32_t k = n < size - at ? n : size - at;
            const int32_t done = write ? tinyc_write_param(p, (int32_t)at, (int32_t)k, buf)
                                       : tinyc_read_param(p, (int32_t)at, (int32_t)k, buf);
            if (done != (int32_t)k) {
                return 0;
            }
            buf += k;
            offset += k;
            n -= k;
        }
        start += size;
    }
    return n == 0u;
}

static void do_params_read(uint32_t length)
{
    uint8_t a[4];
    uint32_t offset, n;
    if (length != 6u) {
        send_error(TINYC_LINK_E_LENGTH, TINYC_LINK_PARAMS_READ, "payload: offset u32, count u16");
        return;
    }
    offset = get_u32(rx);
    n = get_u16(rx + 4);
    if (n > (uint32_t)sizeof rx || !tinyc_link_params_copy(offset, n, rx, 0)) {
        send_error(TINYC_LINK_E_ARGUMENT, TINYC_LINK_PARAMS_READ,
                   "range outside the parameters or larger than the link buffer");
        return;
    }
    put_u32(a, offset);
    send_frame(TINYC_LINK_PARAMS_READ | 0x80u, a, 4, rx, n);
}

static void do_params_write(uint32_t length)
{
    uint8_t a[8];
    uint32_t offset;
    if (length < 4u) {
        send_error(TINYC_LINK_E_LENGTH, TINYC_LINK_PARAMS_WRITE, "payload: offset u32, bytes");
        return;
    }
    offset = get_u32(rx);
    /* the bytes are moved to the front so that they are read from rx itself */
    memmove(rx, rx + 4, length - 4u);
    if (!tinyc_link_params_copy(offset, length - 4u, rx, 1)) {
        send_error(TINYC_LINK_E_ARGUMENT, TINYC_LINK_PARAMS_WRITE, "range outside the parameters");
        return;
    }
    put_u32(a, offset);
    put_u32(a + 4, length - 4u);
    send_frame(TINYC_LINK_PARAMS_WRITE | 0x80u, a, 8, NULL, 0);
}

static void do_step(uint32_t length)
{
    uint8_t a[4];
    if (length == 4u) {
        tinyc_set_train_step_count(get_u32(rx));
    } else if (length != 0u) {
        send_error(TINYC_LINK_E_LENGTH, TINYC_LINK_STEP, "payload: nothing (get) or u32 (set)");
        return;
    }
    put_u32(a, tinyc_train_step_count());
    send_frame(TINYC_LINK_STEP | 0x80u, a, 4, NULL, 0);
}
#endif

/* Link and training counters, the last costs, then the profile of the last run (--profile),
 * from layer `first` on, as many layers as fit: u32 each (saturated). */
static void do_stats(uint32_t length)
{
    uint8_t a[64];
    uint32_t first = 0, n = 0, i;
#ifdef TINYC_TRAINING
    tinyc_train_stats s;
    tinyc_get_train_stats(&s);
#endif
    if (length == 2u) {
        first = get_u16(rx);
    } else if (length != 0u) {
        send_error(TINYC_LINK_E_LENGTH, TINYC_LINK_STATS, "payload: nothing or first layer u16");
        return;
    }
    memset(a, 0, sizeof a);
    put_u32(a, counters.frames);
    put_u32(a + 4, counters.errors);
    put_u32(a + 8, counters.skipped);
    put_u64(a + 12, last_infer_cost);
    put_u64(a + 20, last_train_cost);
#ifdef TINYC_TRAINING
    put_u32(a + 28, s.steps);
    put_u32(a + 32, s.steps_skipped);
    put_u32(a + 36, s.steps_guarded);
    put_u32(a + 40, s.updates);
    put_u32(a + 44, s.refused_nonfinite);
    put_u32(a + 48, s.refused_saturation);
    put_u32(a + 52, tinyc_train_step_count());
#endif
    put_u16(a + 56, TINYC_NUM_LAYERS);
    put_u16(a + 58, first);
    if (port->profile_count != NULL) {
        for (i = first; i < (uint32_t)TINYC_NUM_LAYERS && 4u * (n + 1u) <= sizeof rx; i++, n++) {
            const uint64_t c = port->profile_count((int32_t)i);
            put_u32(rx + 4u * n, c > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)c);
        }
    }
    put_u16(a + 60, n);
    send_frame(TINYC_LINK_STATS | 0x80u, a, 62, rx, 4u * n);
}

/* save, restore or status; each answers the storage's state: the slot the parameters came
 * from (0 = A, 1 = B, 0xFF: none), its sequence number, then of slots A and B: valid u8, seq u32 */
static void do_storage(uint8_t type)
{
    const char *(*fn)(void) = type == TINYC_LINK_SAVE ? port->save
                              : type == TINYC_LINK_RESTORE ? port->restore : NULL;
    const char *problem = NULL;
    tinyc_store_status s;
    uint8_t a[15];
    if (port->storage_status == NULL || (type != TINYC_LINK_STORAGE && fn == NULL)) {
        send_error(TINYC_LINK_E_UNSUPPORTED, type, "no persistent storage in this build");
        return;
    }
    if (fn != NULL) {
        problem = fn();
    }
    if (problem != NULL) {
        send_error(TINYC_LINK_E_STORAGE, type, problem);
        return;
    }
    port->storage_status(&s);
    a[0] = s.loaded;
    put_u32(a + 1, s.loaded_seq);
    a[5] = s.valid[0];
    put_u32(a + 6, s.seq[0]);
    a[10] = s.valid[1];
    put_u32(a + 11, s.seq[1]);
    send_frame((uint8_t)(type | 0x80u), a, sizeof a, NULL, 0);
}

/* ------------------------------------------------------------------ receiving */
/* Where a request's payload goes: `head` bytes to rx, the rest straight into the model's input
 * (infer, train); returns 0 for an unknown type or a length the request cannot have, with the
 * error to answer. */
static int payload_layout(uint8_t type, uint32_t length, uint32_t *head, uint8_t *code,
                          const char **why)
{
    *head = length;
    *code = TINYC_LINK_E_LENGTH;
    switch (type) {
    case TINYC_LINK_INFER:
        *head = 0;
        *why = "infer: the payload must be the model's input (input size bytes)";
        return length == (uint32_t)TINYC_INPUT_SIZE;
    case TINYC_LINK_TRAIN:
#if defined(TINYC_TRAINING) && !TINYC_LOSS_MSE
        *head = TRAIN_HEAD_BYTES;
        *why = "train: the payload must be label i32, lr f32, then the input";
        return length == TRAIN_HEAD_BYTES + (uint32_t)TINYC_INPUT_SIZE;
#else
        *code = TINYC_LINK_E_UNSUPPORTED;
        *why = "train: not a training build with class labels";
        return 0;
#endif
    case TINYC_LINK_PARAMS_READ:
    case TINYC_LINK_PARAMS_WRITE:
    case TINYC_LINK_PARAMS_RESET:
    case TINYC_LINK_STEP:
#ifndef TINYC_TRAINING
        *code = TINYC_LINK_E_UNSUPPORTED;
        *why = "an inference build has no trained parameters";
        return 0;
#endif
        /* fall through */
    case TINYC_LINK_INFO:
    case TINYC_LINK_STATS:
    case TINYC_LINK_SAVE:
    case TINYC_LINK_RESTORE:
    case TINYC_LINK_STORAGE:
        *why = "payload larger than the link buffer";
        return length <= (uint32_t)sizeof rx;
    default:
        *code = TINYC_LINK_E_COMMAND;
        *why = "unknown request type";
        return 0;
    }
}

static void execute(uint8_t type, uint32_t length)
{
    (void)length;
    switch (type) {
    case TINYC_LINK_INFO:
        do_info();
        break;
    case TINYC_LINK_INFER:
        do_infer();
        break;
#if defined(TINYC_TRAINING) && !TINYC_LOSS_MSE
    case TINYC_LINK_TRAIN:
        do_train();
        break;
#endif
#ifdef TINYC_TRAINING
    case TINYC_LINK_PARAMS_READ:
        do_params_read(length);
        break;
    case TINYC_LINK_PARAMS_WRITE:
        do_params_write(length);
        break;
    case TINYC_LINK_PARAMS_RESET:
        tinyc_train_init();
        send_frame(TINYC_LINK_PARAMS_RESET | 0x80u, NULL, 0, NULL, 0);
        break;
    case TINYC_LINK_STEP:
        do_step(length);
        break;
#endif
    case TINYC_LINK_STATS:
        do_stats(length);
        break;
    case TINYC_LINK_SAVE:
    case TINYC_LINK_RESTORE:
    case TINYC_LINK_STORAGE:
        do_storage(type);
        break;
    default:
        send_error(TINYC_LINK_E_COMMAND, type, "unknown request type");
        break;
    }
}

/* Reads n bytes into dst (NULL: discards them), updating the CRC register; 0 on a timeout. */
static int receive(uint8_t *dst, uint32_t n, uint32_t *reg)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        const int b = port->read_byte(TINYC_LINK_BYTE_TIMEOUT_MS);
        if (b < 0) {
            return 0;
        }
        *reg = crc_byte(*reg, (uint8_t)b);
        if (dst != NULL) {
            dst[i] = (uint8_t)b;
        }
    }
    return 1;
}

int tinyc_link_poll(uint32_t timeout_ms)
{
    uint8_t h[HEADER_BYTES], c[4], code;
    uint32_t reg = 0xFFFFFFFFu, length, head, crc_reg;
    const char *why = "";
    int b;
    for (;;) {   /* the sync byte; anything else is skipped */
        b = port->read_byte(timeout_ms);
        if (b < 0) {
            return 0;
        }
        if (b == (int)TINYC_LINK_SYNC) {
            break;
        }
        counters.skipped++;
    }
    counters.frames++;
    if (!receive(h, HEADER_BYTES, &reg)) {
        send_error(TINYC_LINK_E_TIMEOUT, 0, "frame header incomplete");
        return 1;
    }
    length = get_u16(h + 2);
    if (h[0] != TINYC_LINK_VERSION || !payload_layout(h[1], length, &head, &code, &why)) {
        /* skip the rest of the frame as announced (a timeout ends a false length) */
        (void)receive(NULL, length + 4u, &reg);
        if (h[0] != TINYC_LINK_VERSION) {
            send_error(TINYC_LINK_E_VERSION, h[1], "unsupported protocol version (this: 1)");
        } else {
            send_error(code, h[1], why);
        }
        return 1;
    }
    if (!receive(rx, head, &reg)
        || !receive((uint8_t *)tinyc_input(), length - head, &reg)) {
        send_error(TINYC_LINK_E_TIMEOUT, h[1], "frame payload incomplete");
        return 1;
    }
    crc_reg = reg;
    if (!receive(c, 4, &reg)) {
        send_error(TINYC_LINK_E_TIMEOUT, h[1], "frame CRC incomplete");
        return 1;
    }
    if (get_u32(c) != ~crc_reg) {
        send_error(TINYC_LINK_E_CRC, h[1], "CRC mismatch");
        return 1;
    }
    execute(h[1], length);
    return 1;
}

void tinyc_link_serve(void)
{
    for (;;) {
        (void)tinyc_link_poll(TINYC_LINK_FOREVER);
    }
}

void tinyc_link_init(const tinyc_link_port *p)
{
    port = p;
    memset(&counters, 0, sizeof counters);
}

void tinyc_link_get_counters(tinyc_link_counters *out)
{
    *out = counters;
}

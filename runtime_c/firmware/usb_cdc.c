/* The chip-independent part of the USB CDC-ACM device (usb_cdc.h). Written from the USB 2.0
 * specification (chapter 9: descriptors, standard requests, control transfers) and the CDC 1.2
 * / PSTN 1.2 subclass specifications (ACM functional descriptors and class requests). */
#include <stddef.h>
#include <string.h>

#include "usb_cdc.h"

/* descriptor types and requests (USB 2.0 tables 9-4, 9-5; PSTN 1.2 table 13) */
#define DESC_DEVICE 1u
#define DESC_CONFIGURATION 2u
#define DESC_STRING 3u
#define DESC_INTERFACE 4u
#define DESC_ENDPOINT 5u
#define DESC_IAD 11u
#define DESC_CS_INTERFACE 0x24u

#define REQ_GET_STATUS 0u
#define REQ_CLEAR_FEATURE 1u
#define REQ_SET_FEATURE 3u
#define REQ_SET_ADDRESS 5u
#define REQ_GET_DESCRIPTOR 6u
#define REQ_GET_CONFIGURATION 8u
#define REQ_SET_CONFIGURATION 9u
#define REQ_GET_INTERFACE 10u
#define REQ_SET_INTERFACE 11u
#define REQ_SET_LINE_CODING 0x20u
#define REQ_GET_LINE_CODING 0x21u
#define REQ_SET_CONTROL_LINE_STATE 0x22u
#define REQ_SEND_BREAK 0x23u
#define FEATURE_ENDPOINT_HALT 0u

#define TYPE_MASK 0x60u       /* bmRequestType: standard, class, vendor */
#define TYPE_STANDARD 0x00u
#define TYPE_CLASS 0x20u
#define RECIPIENT_MASK 0x1Fu
#define TO_DEVICE 0u
#define TO_INTERFACE 1u
#define TO_ENDPOINT 2u
#define DEVICE_TO_HOST 0x80u

#define LO(x) ((uint8_t)((x) & 0xFFu))
#define HI(x) ((uint8_t)(((x) >> 8) & 0xFFu))
#define CONFIG_TOTAL 75u

static const uint8_t device_descriptor[18] = {
    18, DESC_DEVICE, 0x00, 0x02,          /* bcdUSB 2.00 */
    0xEF, 0x02, 0x01,                     /* miscellaneous / common / IAD: a composite function */
    USB_CDC_EP0_SIZE,
    LO(USB_CDC_VID), HI(USB_CDC_VID), LO(USB_CDC_PID), HI(USB_CDC_PID),
    0x00, 0x01,                           /* bcdDevice 1.00 */
    1, 2, 0,                              /* strings: manufacturer, product, no serial number */
    1,                                    /* one configuration */
};

static const uint8_t config_descriptor[CONFIG_TOTAL] = {
    9, DESC_CONFIGURATION, LO(CONFIG_TOTAL), HI(CONFIG_TOTAL), 2, 1, 0,
    0x80, 50,                             /* bus powered, 100 mA */
    /* interface association: interfaces 0-1 are one CDC ACM function */
    8, DESC_IAD, 0, 2, 0x02, 0x02, 0x00, 0,
    /* interface 0: communication class, abstract control model, no AT protocol */
    9, DESC_INTERFACE, 0, 0, 1, 0x02, 0x02, 0x00, 0,
    5, DESC_CS_INTERFACE, 0x00, 0x20, 0x01,   /* header, bcdCDC 1.20 */
    5, DESC_CS_INTERFACE, 0x01, 0x00, 1,      /* call management: none; data interface 1 */
    4, DESC_CS_INTERFACE, 0x02, 0x02,         /* ACM: line coding and control line state */
    5, DESC_CS_INTERFACE, 0x06, 0, 1,         /* union: interface 0 controls interface 1 */
    7, DESC_ENDPOINT, USB_CDC_EP_NOTIFY, USB_EP_INTERRUPT, USB_CDC_NOTIFY_SIZE, 0, 16,
    /* interface 1: data class, bulk OUT and IN */
    9, DESC_INTERFACE, 1, 0, 2, 0x0A, 0x00, 0x00, 0,
    7, DESC_ENDPOINT, USB_CDC_EP_OUT, USB_EP_BULK, LO(USB_CDC_PACKET), HI(USB_CDC_PACKET), 0,
    7, DESC_ENDPOINT, USB_CDC_EP_IN, USB_EP_BULK, LO(USB_CDC_PACKET), HI(USB_CDC_PACKET), 0,
};

/* string 0: the languages (US English); then manufacturer and product, in ASCII here */
static const uint8_t languages[4] = {4, DESC_STRING, 0x09, 0x04};
#ifndef USB_CDC_MANUFACTURER
#define USB_CDC_MANUFACTURER "tinyc"
#endif
#ifndef USB_CDC_PRODUCT
#define USB_CDC_PRODUCT "tinyc device link"
#endif
static const char *const strings[] = {USB_CDC_MANUFACTURER, USB_CDC_PRODUCT};
#define STRING_MAX 32u

enum ep0_state { EP0_IDLE, EP0_DATA_IN, EP0_DATA_OUT };

static struct {
    enum ep0_state state;
    const uint8_t *in_data;      /* the rest of an IN data stage */
    uint32_t in_left;
    int in_zlp;                  /* ends with a zero-length packet (a short reply of k * 64 B) */
    uint8_t out_request;         /* the request whose OUT data stage runs */
    uint32_t out_got;
    uint8_t reply[2 + 2 * STRING_MAX];   /* replies built on the fly (strings, status) */
} ep0;

static volatile uint8_t configuration;    /* 0: not configured */
static volatile uint8_t control_lines;    /* SET_CONTROL_LINE_STATE: bit 0 DTR, bit 1 RTS */
static uint8_t halted_in, halted_out;     /* ENDPOINT_HALT of the data endpoints */
/* dwDTERate, bCharFormat, bParityType, bDataBits: kept for GET_LINE_CODING, otherwise unused
 * (there is no UART behind this port) */
static uint8_t line_coding[7] = {0x00, 0xC2, 0x01, 0x00, 0, 0, 8};   /* 115200 8N1 */

/* Ring buffers: free-running indexes; the reader owns the tail, the writer the head. */
static uint8_t rx_ring[USB_CDC_RX_BYTES];
static volatile uint32_t rx_head, rx_tail;
static volatile int rx_armed;
static uint8_t tx_ring[USB_CDC_TX_BYTES];
static volatile uint32_t tx_head, tx_tail;
static volatile int tx_busy;               /* a packet is on the IN endpoint */
static int tx_last_full;                   /* ... and it was a full one */

static void ep0_send_chunk(void)
{
    const uint32_t n = ep0.in_left < USB_CDC_EP0_SIZE ? ep0.in_left : USB_CDC_EP0_SIZE;
    const uint8_t *p = ep0.in_data;
    ep0.in_data += n;
    ep0.in_left -= n;
    if (n == 0u) {
        ep0.in_zlp = 0;
    }
    usb_drv_ep_in(0, p, n);
}

/* Answers a device-to-host request with len bytes, cut to the host's wLength. */
static void ep0_reply(const uint8_t *data, uint32_t len, uint16_t w_length)
{
    if (len > w_length) {
        len = w_length;
    }
    ep0.state = EP0_DATA_IN;
    ep0.in_data = data;
    ep0.in_left = len;
    ep0.in_zlp = len < w_length && len % USB_CDC_EP0_SIZE == 0u;
    if (len == 0u) {   /* the zero-length packet is the whole data stage */
        ep0.in_zlp = 1;
    }
    ep0_send_chunk();
}

static void ep0_stall(void)
{
    ep0.state = EP0_IDLE;
    usb_drv_stall(0x00u, 1);
}

static void ep0_done(void)
{
    ep0.state = EP0_IDLE;
    usb_drv_ep0_status();
}

static int string_descriptor(uint8_t index)
{
    const char *s;
    uint32_t i, n;
    if (index == 0u || index > sizeof strings / sizeof strings[0]) {
        return -1;
    }
    s = strings[index - 1u];
    n = (uint32_t)strlen(s);
    n = n > STRING_MAX ? STRING_MAX : n;
    ep0.reply[0] = (uint8_t)(2u + 2u * n);
    ep0.reply[1] = DESC_STRING;
    for (i = 0; i < n; i++) {   /* UTF-16LE */
        ep0.reply[2u + 2u * i] = (uint8_t)s[i];
        ep0.reply[3u + 2u * i] = 0;
    }
    return (int)ep0.reply[0];
}

static void get_descriptor(uint8_t type, uint8_t index, uint16_t w_length)
{
    int n;
    switch (type) {
    case DESC_DEVICE:
        ep0_reply(device_descriptor, sizeof device_descriptor, w_length);
        return;
    case DESC_CONFIGURATION:
        if (index == 0u) {
            ep0_reply(config_descriptor, sizeof config_descriptor, w_length);
            return;
        }
        break;
    case DESC_STRING:
        if (index == 0u) {
            ep0_reply(languages, sizeof languages, w_length);
            return;
        }
        n = string_descriptor(index);
        if (n > 0) {
            ep0_reply(ep0.reply, (uint32_t)n, w_length);
            return;
        }
        break;
    default:   /* device qualifier, other speed: a full-speed-only device stalls (USB 2.0 9.6.2) */
        break;
    }
    ep0_stall();
}

static void rx_arm_if_room(void)
{
    if (configuration != 0u && !rx_armed && !halted_out
        && USB_CDC_RX_BYTES - (rx_head - rx_tail) >= USB_CDC_PACKET) {
        rx_armed = 1;
        usb_drv_ep_out_arm(USB_CDC_EP_OUT & 0x0Fu);
    }
}

static void tx_start_if_idle(void)
{
    uint8_t packet[USB_CDC_PACKET];
    uint32_t n = 0;
    if (tx_busy || configuration == 0u || halted_in) {
        return;
    }
    while (n < USB_CDC_PACKET && tx_tail + n != tx_head) {
        packet[n] = tx_ring[(tx_tail + n) % USB_CDC_TX_BYTES];
        n++;
    }
    if (n == 0u && !tx_last_full) {
        return;
    }
    /* n = 0 here: a zero-length packet ends a transfer of whole packets (the host's read
     * completes on a short packet) */
    tx_tail += n;
    tx_busy = 1;
    tx_last_full = n == USB_CDC_PACKET;
    usb_drv_ep_in(USB_CDC_EP_IN & 0x0Fu, packet, n);
}

static void set_configuration(uint8_t value)
{
    configuration = value;
    control_lines = 0;
    rx_armed = 0;
    tx_busy = 0;
    tx_last_full = 0;
    halted_in = halted_out = 0;
    if (value != 0u) {
        usb_drv_ep_open(USB_CDC_EP_NOTIFY, USB_EP_INTERRUPT, USB_CDC_NOTIFY_SIZE);
        usb_drv_ep_open(USB_CDC_EP_OUT, USB_EP_BULK, USB_CDC_PACKET);
        usb_drv_ep_open(USB_CDC_EP_IN, USB_EP_BULK, USB_CDC_PACKET);
    }
}

/* CLEAR_FEATURE / SET_FEATURE(ENDPOINT_HALT) on a data endpoint; 0 if it is one */
static int set_halt(uint8_t ep_address, int on)
{
    if (ep_address == USB_CDC_EP_IN) {
        halted_in = (uint8_t)on;
        tx_busy = 0;
        tx_last_full = 0;
    } else if (ep_address == USB_CDC_EP_OUT) {
        halted_out = (uint8_t)on;
        rx_armed = 0;
    } else if (ep_address != USB_CDC_EP_NOTIFY && (ep_address & 0x7Fu) != 0u) {
        return -1;
    }
    usb_drv_stall(ep_address, on);
    if (!on) {
        rx_arm_if_room();
        tx_start_if_idle();
    }
    return 0;
}

static void standard_request(const uint8_t *s, uint16_t w_value, uint16_t w_index,
                             uint16_t w_length)
{
    const uint8_t recipient = s[0] & RECIPIENT_MASK;
    switch (s[1]) {
    case REQ_GET_DESCRIPTOR:
        get_descriptor(HI(w_value), LO(w_value), w_length);
        return;
    case REQ_SET_ADDRESS:
        if (recipient == TO_DEVICE && w_value <= 127u && w_length == 0u) {
            ep0.state = EP0_IDLE;
            usb_drv_set_address((uint8_t)w_value);
            return;
        }
        break;
    case REQ_GET_CONFIGURATION:
        ep0.reply[0] = configuration;
        ep0_reply(ep0.reply, 1, w_length);
        return;
    case REQ_SET_CONFIGURATION:
        if (w_value <= 1u) {
            set_configuration((uint8_t)w_value);
            ep0_done();
            if (w_value == 1u) {
                rx_arm_if_room();
                tx_start_if_idle();   /* what the console wrote before */
            }
            return;
        }
        break;
    case REQ_GET_STATUS:
        ep0.reply[0] = 0;   /* device: bus powered, no remote wake-up; interface: zero */
        ep0.reply[1] = 0;
        if (recipient == TO_INTERFACE && w_index > 1u) {
            break;   /* no such interface */
        }
        if (recipient == TO_ENDPOINT) {
            if (LO(w_index) == USB_CDC_EP_IN) {
                ep0.reply[0] = halted_in;
            } else if (LO(w_index) == USB_CDC_EP_OUT) {
                ep0.reply[0] = halted_out;
            } else if (LO(w_index) != USB_CDC_EP_NOTIFY && (LO(w_index) & 0x7Fu) != 0u) {
                break;
            }
        }
        ep0_reply(ep0.reply, 2, w_length);
        return;
    case REQ_CLEAR_FEATURE:
    case REQ_SET_FEATURE:
        /* only ENDPOINT_HALT: no remote wake-up, no test modes at full speed */
        if (recipient == TO_ENDPOINT && w_value == FEATURE_ENDPOINT_HALT && configuration
            && set_halt(LO(w_index), s[1] == REQ_SET_FEATURE) == 0) {
            ep0_done();
            return;
        }
        break;
    case REQ_GET_INTERFACE:
        if (configuration && w_index <= 1u) {
            ep0.reply[0] = 0;
            ep0_reply(ep0.reply, 1, w_length);
            return;
        }
        break;
    case REQ_SET_INTERFACE:
        if (configuration && w_index <= 1u && w_value == 0u) {   /* one alternate setting */
            ep0_done();
            return;
        }
        break;
    default:   /* SET_DESCRIPTOR, SYNCH_FRAME: not supported */
        break;
    }
    ep0_stall();
}

static void class_request(const uint8_t *s, uint16_t w_value, uint16_t w_index,
                          uint16_t w_length)
{
    if ((s[0] & RECIPIENT_MASK) != TO_INTERFACE || w_index != 0u) {
        ep0_stall();
        return;
    }
    switch (s[1]) {
    case REQ_SET_LINE_CODING:
        if (w_length == sizeof line_coding) {
            ep0.state = EP0_DATA_OUT;
            ep0.out_request = s[1];
            ep0.out_got = 0;
            usb_drv_ep_out_arm(0);
            return;
        }
        break;
    case REQ_GET_LINE_CODING:
        ep0_reply(line_coding, sizeof line_coding, w_length);
        return;
    case REQ_SET_CONTROL_LINE_STATE:
        control_lines = (uint8_t)(w_value & 3u);
        ep0_done();
        return;
    case REQ_SEND_BREAK:
        ep0_done();
        return;
    default:
        break;
    }
    ep0_stall();
}

void usb_cdc_setup(const uint8_t setup[8])
{
    const uint16_t w_value = (uint16_t)(setup[2] | (setup[3] << 8));
    const uint16_t w_index = (uint16_t)(setup[4] | (setup[5] << 8));
    const uint16_t w_length = (uint16_t)(setup[6] | (setup[7] << 8));
    ep0.state = EP0_IDLE;   /* a SETUP ends whatever control transfer ran */
    switch (setup[0] & TYPE_MASK) {
    case TYPE_STANDARD:
        standard_request(setup, w_value, w_index, w_length);
        break;
    case TYPE_CLASS:
        class_request(setup, w_value, w_index, w_length);
        break;
    default:
        ep0_stall();
        break;
    }
}

void usb_cdc_in_done(uint8_t ep)
{
    if (ep == 0u) {
        if (ep0.state == EP0_DATA_IN) {
            if (ep0.in_left > 0u || ep0.in_zlp) {
                ep0_send_chunk();
            } else {
                ep0_done();   /* the host's zero-length OUT is the status stage */
            }
        }
    } else if (ep == (USB_CDC_EP_IN & 0x0Fu)) {
        tx_busy = 0;
        tx_start_if_idle();
    }
}

void usb_cdc_out_received(uint8_t ep, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    if (ep == 0u) {
        if (ep0.state != EP0_DATA_OUT) {
            return;   /* the status stage of an IN transfer */
        }
        for (i = 0; i < n && ep0.out_got < sizeof line_coding; i++) {
            line_coding[ep0.out_got++] = data[i];
        }
        if (ep0.out_got < sizeof line_coding && n == USB_CDC_EP0_SIZE) {
            usb_drv_ep_out_arm(0);
        } else {
            ep0_done();
        }
    } else if (ep == (USB_CDC_EP_OUT & 0x0Fu)) {
        rx_armed = 0;
        for (i = 0; i < n && rx_head - rx_tail < USB_CDC_RX_BYTES; i++) {
            rx_ring[rx_head % USB_CDC_RX_BYTES] = data[i];
            rx_head++;
        }
        rx_arm_if_room();
    }
}

void usb_cdc_bus_reset(void)
{
    ep0.state = EP0_IDLE;
    configuration = 0;
    control_lines = 0;
    rx_armed = 0;
    tx_busy = 0;
    tx_last_full = 0;
    halted_in = halted_out = 0;
}

void usb_cdc_init(void)
{
    usb_cdc_bus_reset();
    rx_head = rx_tail = 0;
    tx_head = tx_tail = 0;
}

int usb_cdc_configured(void)
{
    return configuration != 0u;
}

int usb_cdc_host_open(void)
{
    return configuration != 0u && (control_lines & 1u) != 0u;
}

int usb_cdc_getc(void)
{
    int b;
    if (rx_tail == rx_head) {
        return -1;
    }
    b = rx_ring[rx_tail % USB_CDC_RX_BYTES];
    rx_tail++;
    if (!rx_armed) {   /* the endpoint waited for room */
        usb_drv_lock();
        rx_arm_if_room();
        usb_drv_unlock();
    }
    return b;
}

uint32_t usb_cdc_write(const uint8_t *data, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        while (tx_head - tx_tail == USB_CDC_TX_BYTES) {
            if (!usb_cdc_host_open()) {
                n = i;   /* nobody reads: drop the rest */
                break;
            }
            usb_drv_lock();
            tx_start_if_idle();
            usb_drv_unlock();
            usb_drv_wait();
        }
        if (i == n) {
            break;
        }
        tx_ring[tx_head % USB_CDC_TX_BYTES] = data[i];
        tx_head++;
    }
    usb_drv_lock();
    tx_start_if_idle();
    usb_drv_unlock();
    return n;
}

void usb_cdc_flush(void)
{
    while ((tx_head != tx_tail || tx_busy) && usb_cdc_host_open()) {
        usb_drv_wait();
    }
}

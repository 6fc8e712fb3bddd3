/* The device link (runtime_c/src/link/tinyc_link.c) over the USB CDC device (usb_cdc.c) on the
 * host, for tests/test_usb_cdc.py: a fake USB driver moves the bulk packets between the device
 * and a pseudo-terminal, so tinyc.device (the host side, pyserial) talks to the link through
 * the same rings and 64-byte packets as on a board. Prints the pty's path, then serves for
 * ever. Exit 3: the device broke a rule of the driver interface (a packet over 64 bytes, an IN
 * packet while one waits). */
#define _GNU_SOURCE   /* posix_openpt, cfmakeraw */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "tinyc_link.h"
#include "usb_cdc.h"

static int pty;
static int out_armed;
static uint8_t in_packet[64];
static uint32_t in_length;
static int in_waiting;

static void broken(const char *what)
{
    fprintf(stderr, "usb_cdc_link_host: %s\n", what);
    exit(3);
}

void usb_drv_ep_open(uint8_t ep_address, uint8_t type, uint16_t max_packet)
{
    (void)ep_address;
    (void)type;
    (void)max_packet;
}

void usb_drv_ep_in(uint8_t ep, const uint8_t *data, uint32_t n)
{
    if (ep != (USB_CDC_EP_IN & 15u)) {
        return;   /* endpoint 0: no control transfer after the start below */
    }
    if (n > USB_CDC_PACKET || in_waiting) {
        broken(n > USB_CDC_PACKET ? "an IN packet over 64 bytes" : "an IN packet while one waits");
    }
    memcpy(in_packet, data, n);
    in_length = n;
    in_waiting = 1;
}

void usb_drv_ep_out_arm(uint8_t ep)
{
    if (ep == (USB_CDC_EP_OUT & 15u)) {
        out_armed = 1;
    }
}

void usb_drv_stall(uint8_t ep_address, int on)
{
    (void)ep_address;
    (void)on;
}

void usb_drv_ep0_status(void)
{
}

void usb_drv_set_address(uint8_t address)
{
    (void)address;
}

void usb_drv_lock(void)
{
}

void usb_drv_unlock(void)
{
}

/* The host controller's part: the waiting IN packet goes to the pty; one OUT packet of up to
 * 64 bytes comes from it when the endpoint is armed (waiting up to wait_ms for one). */
static void host_poll(int wait_ms)
{
    if (in_waiting) {
        uint32_t done = 0;
        while (done < in_length) {
            ssize_t k = write(pty, in_packet + done, in_length - done);
            if (k <= 0) {
                broken("cannot write to the pty");
            }
            done += (uint32_t)k;
        }
        in_waiting = 0;
        usb_cdc_in_done(USB_CDC_EP_IN & 15u);
    }
    if (out_armed) {
        struct pollfd p = {pty, POLLIN, 0};
        if (poll(&p, 1, wait_ms) > 0 && (p.revents & POLLIN)) {
            uint8_t packet[64];
            ssize_t n = read(pty, packet, sizeof packet);
            if (n > 0) {
                out_armed = 0;
                usb_cdc_out_received(USB_CDC_EP_OUT & 15u, packet, (uint32_t)n);
            }
        }
    } else if (wait_ms > 0) {
        usleep(1000);
    }
}

void usb_drv_wait(void)
{
    host_poll(0);
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* the link's port, as the board's (link_port.c over console_usb_common.h) */
static int link_read(uint32_t timeout_ms)
{
    const uint64_t t0 = now_ms();
    for (;;) {
        const int b = usb_cdc_getc();
        if (b >= 0) {
            return b;
        }
        if (timeout_ms != TINYC_LINK_FOREVER && now_ms() - t0 >= timeout_ms) {
            return -1;
        }
        host_poll(1);
    }
}

static void link_write(const uint8_t *data, uint32_t n)
{
    usb_cdc_write(data, n);
}

static uint64_t link_cost(void)
{
    return 0;
}

static void setup(uint8_t type, uint8_t request, uint16_t value)
{
    const uint8_t s[8] = {type, request, (uint8_t)value, (uint8_t)(value >> 8), 0, 0, 0, 0};
    usb_cdc_setup(s);
}

int main(void)
{
    static const tinyc_link_port port = {
        .read_byte = link_read,
        .write = link_write,
        .flush = usb_cdc_flush,
        .cost = link_cost,
        .build_id = 0x12345678u,
    };
    struct termios raw;
    int slave;
    pty = posix_openpt(O_RDWR | O_NOCTTY);
    if (pty < 0 || grantpt(pty) != 0 || unlockpt(pty) != 0) {
        broken("no pseudo-terminal");
    }
    slave = open(ptsname(pty), O_RDWR | O_NOCTTY);   /* kept open: no hang-up between hosts */
    if (slave < 0 || tcgetattr(slave, &raw) != 0) {
        broken("cannot open the pty's slave");
    }
    cfmakeraw(&raw);
    tcsetattr(slave, TCSANOW, &raw);
    /* the host enumerated the device and a program opened the port */
    usb_cdc_init();
    usb_cdc_bus_reset();
    setup(0x00, 9, 1);        /* SET_CONFIGURATION 1 */
    setup(0x21, 0x22, 3);     /* SET_CONTROL_LINE_STATE: DTR, RTS */
    if (!usb_cdc_host_open()) {
        broken("not open after SET_CONFIGURATION and DTR");
    }
    printf("%s\n", ptsname(pty));
    fflush(stdout);
    tinyc_link_init(&port);
    tinyc_link_serve();
}

/* Host harness of runtime_c/firmware/usb_cdc.c (tests/test_usb_cdc.py): a fake USB driver that
 * prints every call the device makes, and a command loop on stdin that plays the host and the
 * link. Commands, one a line (hex bytes without spaces):
 *     reset                 bus reset
 *     setup HEX16           a SETUP packet
 *     in_done EP            the host took the IN packet of endpoint number EP
 *     out EP HEX            the host sent a packet on OUT endpoint number EP
 *     write HEX             the link writes bytes (usb_cdc_write)
 *     read N                the link reads up to N bytes (usb_cdc_getc)
 *     flush                 usb_cdc_flush
 *     state                 configured and host-open flags
 * Output lines: "ep_open ADDR TYPE MAXP", "in EP HEX", "arm EP", "stall ADDR ON", "status",
 * "address A", "wrote N", "read HEX", "state C O", "host_takes 2" (usb_drv_wait),
 * "nak EP", "error ..."; then "ok" ends the command's output. (a fake-driver rule broken). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usb_cdc.h"

static int in_pending[16];     /* an IN packet waits for the host (the driver is busy) */
static int out_armed[16];
static int locked;
static int wait_completes;     /* usb_drv_wait plays a host that takes the pending bulk IN */

static void print_hex(const uint8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
    if (n == 0u) {
        printf("-");
    }
}

void usb_drv_ep_open(uint8_t ep_address, uint8_t type, uint16_t max_packet)
{
    in_pending[ep_address & 15u] = 0;
    printf("ep_open %02x %u %u\n", ep_address, type, max_packet);
}

void usb_drv_ep_in(uint8_t ep, const uint8_t *data, uint32_t n)
{
    if (in_pending[ep]) {
        printf("error: IN on endpoint %u while its last packet waits\n", ep);
    }
    if (n > 64u) {
        printf("error: IN packet of %u bytes\n", n);
    }
    in_pending[ep] = 1;
    printf("in %u ", ep);
    print_hex(data, n);
    printf("\n");
}

void usb_drv_ep_out_arm(uint8_t ep)
{
    if (out_armed[ep]) {
        printf("error: endpoint %u armed twice\n", ep);
    }
    out_armed[ep] = 1;
    printf("arm %u\n", ep);
}

void usb_drv_stall(uint8_t ep_address, int on)
{
    printf("stall %02x %d\n", ep_address, on);
}

void usb_drv_ep0_status(void)
{
    printf("status\n");
}

void usb_drv_set_address(uint8_t address)
{
    printf("address %u\n", address);
}

void usb_drv_lock(void)
{
    if (locked) {
        printf("error: lock taken twice\n");
    }
    locked = 1;
}

void usb_drv_unlock(void)
{
    locked = 0;
}

void usb_drv_wait(void)
{
    if (!wait_completes || !in_pending[2]) {
        printf("error: waits for ever\n");
        exit(3);
    }
    in_pending[2] = 0;
    printf("host_takes 2\n");
    usb_cdc_in_done(2);
}

static uint32_t parse_hex(const char *s, uint8_t *out, uint32_t max)
{
    uint32_t n = 0;
    unsigned v;
    while (n < max && sscanf(s, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

int main(void)
{
    char line[8192], cmd[32], arg[8192];
    static uint8_t buf[4096];
    unsigned ep;
    setvbuf(stdout, NULL, _IOLBF, 0);
    usb_cdc_init();
    while (fgets(line, sizeof line, stdin)) {
        arg[0] = 0;
        if (sscanf(line, "%31s %8191[^\n]", cmd, arg) < 1) {
            continue;
        }
        if (strcmp(cmd, "reset") == 0) {
            memset(in_pending, 0, sizeof in_pending);
            memset(out_armed, 0, sizeof out_armed);
            usb_cdc_bus_reset();
        } else if (strcmp(cmd, "setup") == 0) {
            uint8_t s[8];
            if (parse_hex(arg, s, 8) != 8) {
                printf("error: bad setup\n");
                goto done;
            }
            in_pending[0] = 0;
            out_armed[0] = 0;
            usb_cdc_setup(s);
        } else if (strcmp(cmd, "in_done") == 0) {
            ep = (unsigned)atoi(arg);
            if (!in_pending[ep & 15u]) {
                printf("error: nothing to take on endpoint %u\n", ep);
                goto done;
            }
            in_pending[ep & 15u] = 0;
            usb_cdc_in_done((uint8_t)ep);
        } else if (strcmp(cmd, "out") == 0) {
            char hex[8192] = "";
            uint32_t n;
            if (sscanf(arg, "%u %8191s", &ep, hex) < 1) {
                printf("error: bad out\n");
                goto done;
            }
            n = parse_hex(hex, buf, sizeof buf);
            if (!out_armed[ep & 15u]) {
                printf("nak %u\n", ep);
                goto done;
            }
            out_armed[ep & 15u] = 0;
            usb_cdc_out_received((uint8_t)ep, buf, n);
        } else if (strcmp(cmd, "write") == 0) {
            uint32_t n = parse_hex(arg, buf, sizeof buf);
            wait_completes = 1;
            printf("wrote %u\n", usb_cdc_write(buf, n));
            wait_completes = 0;
        } else if (strcmp(cmd, "read") == 0) {
            uint32_t i, n = (uint32_t)atoi(arg);
            for (i = 0; i < n; i++) {
                int b = usb_cdc_getc();
                if (b < 0) {
                    break;
                }
                buf[i] = (uint8_t)b;
            }
            printf("read ");
            print_hex(buf, i);
            printf("\n");
        } else if (strcmp(cmd, "flush") == 0) {
            wait_completes = 1;
            usb_cdc_flush();
            wait_completes = 0;
            printf("flushed\n");
        } else if (strcmp(cmd, "state") == 0) {
            printf("state %d %d\n", usb_cdc_configured(), usb_cdc_host_open());
        } else {
            printf("error: unknown command %s\n", cmd);
        }
    done:
        printf("ok\n");   /* the end of this command's output */
    }
    return 0;
}

/* A USB CDC-ACM device ("virtual serial port") for boards with native USB and no USB-UART
 * bridge (nRF52840, RP2040): the console and the device link run over it.
 *
 * Two parts. usb_cdc.c is chip-independent: descriptors, the standard and CDC class requests of
 * endpoint 0, and the ring buffers between the bulk endpoints and the byte-level functions the
 * console and the link use. A small driver per chip (usb_nrf52.c, usb_rp2040.c; a fake one in the
 * host test tests/c/usb_cdc_fake_driver.c) moves packets and calls the usb_cdc_* events below from
 * its interrupt handler.
 *
 * Full speed, one configuration: interface 0 (communication, notification endpoint 0x81,
 * interrupt, never sent on), interface 1 (data, bulk OUT 0x02 and IN 0x82, 64 B packets),
 * grouped by an interface association descriptor (USB 2.0 ECN; CDC 1.2). */
#ifndef TINYC_USB_CDC_H
#define TINYC_USB_CDC_H

#include <stdint.h>

#define USB_CDC_EP0_SIZE 64u
#define USB_CDC_PACKET 64u          /* the bulk endpoints' max packet size */
#define USB_CDC_NOTIFY_SIZE 8u
#define USB_CDC_EP_NOTIFY 0x81u
#define USB_CDC_EP_OUT 0x02u
#define USB_CDC_EP_IN 0x82u
/* ring buffers (powers of two): received bytes wait here for the link's reader; bytes the
 * console and the link write wait here for the host */
#define USB_CDC_RX_BYTES 256u
#define USB_CDC_TX_BYTES 512u

/* pid.codes' test VID/PID: fine on a bench, a product needs its own pair */
#ifndef USB_CDC_VID
#define USB_CDC_VID 0x1209u
#define USB_CDC_PID 0x0001u
#endif

/* endpoint types (bmAttributes) */
#define USB_EP_CONTROL 0u
#define USB_EP_BULK 2u
#define USB_EP_INTERRUPT 3u

/* ---- the console and link side (thread mode) */
void usb_cdc_init(void);                   /* state to "detached"; the driver's start calls it */
int usb_cdc_getc(void);                    /* a received byte, or -1 if none waits */
/* Queues n bytes for the host. While the host has the port open (configured, DTR set) a full
 * buffer waits for the host to read; otherwise what does not fit is dropped (nobody listens).
 * Returns the bytes queued. */
uint32_t usb_cdc_write(const uint8_t *data, uint32_t n);
void usb_cdc_flush(void);                  /* waits until the host has read all (if open) */
int usb_cdc_configured(void);
int usb_cdc_host_open(void);               /* configured and DTR set (a terminal has the port) */

/* ---- events, from the driver's interrupt handler */
void usb_cdc_bus_reset(void);
void usb_cdc_setup(const uint8_t setup[8]);
/* the IN packet started on endpoint number ep went to the host */
void usb_cdc_in_done(uint8_t ep);
/* n bytes arrived on OUT endpoint number ep (armed by usb_drv_ep_out_arm); n = 0 on
 * endpoint 0 is the status stage of an IN control transfer */
void usb_cdc_out_received(uint8_t ep, const uint8_t *data, uint32_t n);

/* ---- the driver, one per chip */
void usb_drv_ep_open(uint8_t ep_address, uint8_t type, uint16_t max_packet);
/* Sends one packet of n <= max packet bytes (0: a zero-length packet) on IN endpoint number ep;
 * the driver has copied the data when this returns. usb_cdc_in_done(ep) follows. */
void usb_drv_ep_in(uint8_t ep, const uint8_t *data, uint32_t n);
/* Lets OUT endpoint number ep take one packet (the endpoint NAKs until then). */
void usb_drv_ep_out_arm(uint8_t ep);
/* Stalls (on = 1) or clears (on = 0, data toggle back to DATA0) an endpoint; on endpoint 0 a
 * stall answers the current request and ends at the next SETUP. */
void usb_drv_stall(uint8_t ep_address, int on);
/* The status stage of the current control transfer (after its data stage, or alone). */
void usb_drv_ep0_status(void);
/* SET_ADDRESS: the driver runs its status stage and takes the address after it. */
void usb_drv_set_address(uint8_t address);
/* Masks (lock) and unmasks the driver's interrupt around what thread mode shares with it. */
void usb_drv_lock(void);
void usb_drv_unlock(void);
/* Called while usb_cdc_write/flush wait for the host. */
void usb_drv_wait(void);

/* the drivers' start (usb_nrf52.c: 0 once connected, -1 without VBUS or if the USBD did not
 * come up; usb_rp2040.c) */
int usb_nrf52_start(void);
void usb_rp2040_start(void);

#endif /* TINYC_USB_CDC_H */

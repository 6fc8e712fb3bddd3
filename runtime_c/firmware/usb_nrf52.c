/* The USB CDC device's driver for the nRF52840's USBD (usb_cdc.h), interrupt driven (USBD is
 * interrupt 39). Written from the nRF52840 Product Specification (USBD, POWER and CLOCK
 * chapters) and its errata sheet; not run on hardware (built and linked only).
 *
 * The USBD moves data by EasyDMA between RAM and its endpoint buffers: an IN packet is copied
 * (STARTEPIN, ENDEPIN) before the host takes it (EPDATA, or EP0DATADONE on endpoint 0); an OUT
 * packet waits in the USBD, the endpoint NAKing, until software copies it out (STARTEPOUT,
 * ENDEPOUT) - which is how an OUT endpoint is "armed" here. One EasyDMA transfer at a time,
 * waited for on the spot (a few microseconds). SET_ADDRESS is handled by the USBD itself.
 * Errata handled: 187 ("USBD: USB cannot be enabled", the enable sequence below) and 199
 * ("USBD: USBD cannot receive tasks during DMA", around each transfer). */
#include "cortexm.h"
#include "usb_cdc.h"

#define USBD_IRQ 39u
#define NVIC_ISER(n) TINYC_REG(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) TINYC_REG(0xE000E180u + 4u * (n))
#define NVIC_ISPR(n) TINYC_REG(0xE000E200u + 4u * (n))

#define CLOCK_TASKS_HFCLKSTART TINYC_REG(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED TINYC_REG(0x40000100u)
#define POWER_USBREGSTATUS TINYC_REG(0x40000438u)
#define USBREG_VBUSDETECT (1u << 0)
#define USBREG_OUTPUTRDY (1u << 1)

#define USBD_BASE 0x40027000u
#define USBD_TASKS_STARTEPIN(n) TINYC_REG(USBD_BASE + 0x004u + 4u * (n))
#define USBD_TASKS_STARTEPOUT(n) TINYC_REG(USBD_BASE + 0x028u + 4u * (n))
#define USBD_TASKS_EP0RCVOUT TINYC_REG(USBD_BASE + 0x04Cu)
#define USBD_TASKS_EP0STATUS TINYC_REG(USBD_BASE + 0x050u)
#define USBD_TASKS_EP0STALL TINYC_REG(USBD_BASE + 0x054u)
#define USBD_EVENTS_USBRESET TINYC_REG(USBD_BASE + 0x100u)
#define USBD_EVENTS_ENDEPIN(n) TINYC_REG(USBD_BASE + 0x108u + 4u * (n))
#define USBD_EVENTS_EP0DATADONE TINYC_REG(USBD_BASE + 0x128u)
#define USBD_EVENTS_ENDEPOUT(n) TINYC_REG(USBD_BASE + 0x130u + 4u * (n))
#define USBD_EVENTS_USBEVENT TINYC_REG(USBD_BASE + 0x158u)
#define USBD_EVENTS_EP0SETUP TINYC_REG(USBD_BASE + 0x15Cu)
#define USBD_EVENTS_EPDATA TINYC_REG(USBD_BASE + 0x160u)
#define USBD_INTENSET TINYC_REG(USBD_BASE + 0x304u)
#define USBD_EVENTCAUSE TINYC_REG(USBD_BASE + 0x400u)
#define USBD_EPDATASTATUS TINYC_REG(USBD_BASE + 0x46Cu)
#define USBD_SETUP(i) TINYC_REG(USBD_BASE + 0x480u + 4u * (i))   /* BMREQUESTTYPE .. WLENGTHH */
#define USBD_SIZE_EPOUT(n) TINYC_REG(USBD_BASE + 0x4A0u + 4u * (n))
#define USBD_ENABLE TINYC_REG(USBD_BASE + 0x500u)
#define USBD_USBPULLUP TINYC_REG(USBD_BASE + 0x504u)
#define USBD_DTOGGLE TINYC_REG(USBD_BASE + 0x50Cu)
#define USBD_EPINEN TINYC_REG(USBD_BASE + 0x510u)
#define USBD_EPOUTEN TINYC_REG(USBD_BASE + 0x514u)
#define USBD_EPSTALL TINYC_REG(USBD_BASE + 0x518u)
#define USBD_EPIN_PTR(n) TINYC_REG(USBD_BASE + 0x600u + 0x14u * (n))
#define USBD_EPIN_MAXCNT(n) TINYC_REG(USBD_BASE + 0x604u + 0x14u * (n))
#define USBD_EPOUT_PTR(n) TINYC_REG(USBD_BASE + 0x700u + 0x14u * (n))
#define USBD_EPOUT_MAXCNT(n) TINYC_REG(USBD_BASE + 0x704u + 0x14u * (n))

/* INTEN bits: one per event, in the order of the event registers from 0x100 */
#define INT_USBRESET (1u << 0)
#define INT_EP0DATADONE (1u << 10)
#define INT_USBEVENT (1u << 22)
#define INT_EP0SETUP (1u << 23)
#define INT_EPDATA (1u << 24)
#define EVENTCAUSE_READY (1u << 11)
#define EPDATA_OUT(n) (1u << (16u + (n)))
#define EPDATA_IN(n) (1u << (n))
#define DTOGGLE_IN 0x80u
#define DTOGGLE_DATA0 (1u << 8)

/* errata 187 and 199: registers the errata sheet names, outside the documented map */
#define ERRATA_UNLOCK TINYC_REG(0x4006EC00u)
#define ERRATA_187 TINYC_REG(0x4006ED14u)
#define ERRATA_199 TINYC_REG(0x40027C1Cu)
#define WAIT_LIMIT 4000000u   /* polls before giving up on the hardware (about a second) */

static uint8_t in_buffer[64] __attribute__((aligned(4)));    /* EasyDMA reads RAM only */
static uint8_t out_buffer[64] __attribute__((aligned(4)));
static int ep0_to_host;          /* the current control transfer's data direction */
static int ep0_out_armed;
static volatile uint32_t out_armed, out_waiting;   /* bit n: bulk OUT endpoint n */

void tinyc_usb_irq_handler(void);

void usb_drv_lock(void)
{
    NVIC_ICER(USBD_IRQ / 32u) = 1u << (USBD_IRQ % 32u);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

void usb_drv_unlock(void)
{
    NVIC_ISER(USBD_IRQ / 32u) = 1u << (USBD_IRQ % 32u);
}

/* In thread mode the interrupt does the work; in a handler (a fault report printing) it cannot
 * preempt, so the wait serves the controller itself. */
void usb_drv_wait(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    if (ipsr != 0u) {
        tinyc_usb_irq_handler();
    }
}

static void dma_wait(volatile uint32_t *end_event)
{
    uint32_t n = 0;
    while (*end_event == 0u && ++n < WAIT_LIMIT) {
    }
    *end_event = 0;
    ERRATA_199 = 0;
}

void usb_drv_ep_in(uint8_t ep, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        in_buffer[i] = data[i];
    }
    USBD_EPIN_PTR(ep) = (uint32_t)(uintptr_t)in_buffer;
    USBD_EPIN_MAXCNT(ep) = n;   /* 0: a zero-length packet */
    USBD_EVENTS_ENDEPIN(ep) = 0;
    ERRATA_199 = 0x82u;
    USBD_TASKS_STARTEPIN(ep) = 1;
    dma_wait(&USBD_EVENTS_ENDEPIN(ep));
}

/* copies the OUT packet waiting on endpoint ep into RAM; the endpoint takes the next one after */
static uint32_t receive(uint8_t ep)
{
    const uint32_t n = USBD_SIZE_EPOUT(ep) & 0x7Fu;
    USBD_EPOUT_PTR(ep) = (uint32_t)(uintptr_t)out_buffer;
    USBD_EPOUT_MAXCNT(ep) = n;
    USBD_EVENTS_ENDEPOUT(ep) = 0;
    ERRATA_199 = 0x82u;
    USBD_TASKS_STARTEPOUT(ep) = 1;
    dma_wait(&USBD_EVENTS_ENDEPOUT(ep));
    return n;
}

static void bulk_receive_if_ready(uint8_t ep)
{
    const uint32_t bit = 1u << ep;
    if ((out_armed & bit) && (out_waiting & bit)) {
        out_armed &= ~bit;
        out_waiting &= ~bit;
        usb_cdc_out_received(ep, out_buffer, receive(ep));
    }
}

void usb_drv_ep_out_arm(uint8_t ep)
{
    if (ep == 0u) {
        ep0_out_armed = 1;
        USBD_TASKS_EP0RCVOUT = 1;
        return;
    }
    out_armed |= 1u << ep;
    if (out_waiting & (1u << ep)) {   /* the interrupt handler takes it (no recursion) */
        NVIC_ISPR(USBD_IRQ / 32u) = 1u << (USBD_IRQ % 32u);
    }
}

void usb_drv_ep_open(uint8_t ep_address, uint8_t type, uint16_t max_packet)
{
    const uint32_t ep = ep_address & 7u;
    (void)type;
    (void)max_packet;   /* bulk and interrupt endpoints have 64-byte buffers */
    if (ep_address & 0x80u) {
        USBD_EPINEN |= 1u << ep;
        USBD_DTOGGLE = ep | DTOGGLE_IN;
        USBD_DTOGGLE = ep | DTOGGLE_IN | DTOGGLE_DATA0;
    } else {
        USBD_EPOUTEN |= 1u << ep;
        USBD_DTOGGLE = ep;
        USBD_DTOGGLE = ep | DTOGGLE_DATA0;
        out_armed &= ~(1u << ep);
        out_waiting &= ~(1u << ep);
        USBD_SIZE_EPOUT(ep) = 0;   /* an empty buffer: the endpoint takes a packet */
    }
}

void usb_drv_stall(uint8_t ep_address, int on)
{
    const uint32_t ep = ep_address & 7u, in = ep_address & 0x80u;
    if (ep == 0u) {
        if (on) {
            USBD_TASKS_EP0STALL = 1;   /* ends at the next SETUP */
        }
        return;
    }
    USBD_EPSTALL = ((on ? 1u : 0u) << 8) | in | ep;
    if (!on) {
        USBD_DTOGGLE = in | ep;
        USBD_DTOGGLE = in | ep | DTOGGLE_DATA0;
    }
}

void usb_drv_ep0_status(void)
{
    USBD_TASKS_EP0STATUS = 1;
}

void usb_drv_set_address(uint8_t address)
{
    (void)address;   /* the USBD answers SET_ADDRESS and takes the address itself */
}

static void bus_reset(void)
{
    out_armed = out_waiting = 0;
    ep0_out_armed = 0;
    USBD_EPINEN = 1u;    /* endpoint 0 only */
    USBD_EPOUTEN = 1u;
    usb_cdc_bus_reset();
}

void tinyc_usb_irq_handler(void)
{
    if (USBD_EVENTS_USBRESET) {
        USBD_EVENTS_USBRESET = 0;
        bus_reset();
    }
    if (USBD_EVENTS_USBEVENT) {   /* suspend, resume: nothing to do (bus powered, no wake-up) */
        USBD_EVENTS_USBEVENT = 0;
        USBD_EVENTCAUSE = USBD_EVENTCAUSE;   /* write one to clear */
    }
    if (USBD_EVENTS_EP0DATADONE) {
        USBD_EVENTS_EP0DATADONE = 0;
        if (ep0_to_host) {
            usb_cdc_in_done(0);
        } else if (ep0_out_armed) {
            ep0_out_armed = 0;
            usb_cdc_out_received(0, out_buffer, receive(0));
        }
    }
    if (USBD_EVENTS_EPDATA) {
        uint32_t status;
        USBD_EVENTS_EPDATA = 0;
        status = USBD_EPDATASTATUS;
        USBD_EPDATASTATUS = status;   /* write one to clear */
        if (status & EPDATA_IN(USB_CDC_EP_IN & 7u)) {
            usb_cdc_in_done(USB_CDC_EP_IN & 7u);
        }
        if (status & EPDATA_OUT(USB_CDC_EP_OUT & 7u)) {
            out_waiting |= 1u << (USB_CDC_EP_OUT & 7u);
        }
    }
    bulk_receive_if_ready(USB_CDC_EP_OUT & 7u);   /* a packet waiting, the ring with room */
    if (USBD_EVENTS_EP0SETUP) {
        uint8_t setup[8];
        uint32_t i;
        USBD_EVENTS_EP0SETUP = 0;
        for (i = 0; i < 8u; i++) {
            setup[i] = (uint8_t)USBD_SETUP(i);
        }
        ep0_to_host = (setup[0] & 0x80u) != 0u;
        ep0_out_armed = 0;
        usb_cdc_setup(setup);
    }
}

static int wait_for(volatile uint32_t *reg, uint32_t mask)
{
    uint32_t n = 0;
    while ((*reg & mask) == 0u) {
        if (++n == WAIT_LIMIT) {
            return -1;
        }
    }
    return 0;
}

/* Starts the crystal oscillator (USB needs its accuracy), enables the USBD and connects. Without
 * VBUS (the board not powered from its USB port) it does nothing: the console and the link then
 * have no host and drop what they write. Returns 0 once connected. */
int usb_nrf52_start(void)
{
    usb_cdc_init();
    if ((POWER_USBREGSTATUS & USBREG_VBUSDETECT) == 0u) {
        return -1;
    }
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    if (wait_for(&CLOCK_EVENTS_HFCLKSTARTED, 1u) != 0) {
        return -1;
    }
    /* whatever a boot loader left: the host sees a disconnect, then this device; no interrupt of
     * the boot loader stays enabled */
    NVIC_ICER(0) = 0xFFFFFFFFu;
    NVIC_ICER(1) = 0xFFFFFFFFu;
    USBD_USBPULLUP = 0;
    USBD_ENABLE = 0;
    /* erratum 187 */
    ERRATA_UNLOCK = 0x9375u;
    ERRATA_187 = 3u;
    ERRATA_UNLOCK = 0x9375u;
    USBD_EVENTCAUSE = EVENTCAUSE_READY;
    USBD_ENABLE = 1;
    if (wait_for(&USBD_EVENTCAUSE, EVENTCAUSE_READY) != 0) {
        return -1;
    }
    USBD_EVENTCAUSE = EVENTCAUSE_READY;
    ERRATA_UNLOCK = 0x9375u;
    ERRATA_187 = 0u;
    ERRATA_UNLOCK = 0x9375u;
    if (wait_for(&POWER_USBREGSTATUS, USBREG_OUTPUTRDY) != 0) {   /* the USB regulator */
        return -1;
    }
    bus_reset();
    USBD_INTENSET = INT_USBRESET | INT_EP0DATADONE | INT_USBEVENT | INT_EP0SETUP | INT_EPDATA;
    usb_drv_unlock();   /* the interrupt on in the NVIC */
    USBD_USBPULLUP = 1;
    return 0;
}

/* The USB CDC device's driver for the RP2040's USB controller in device mode (usb_cdc.h),
 * interrupt driven (USBCTRL_IRQ, interrupt 5). Written from the RP2040 datasheet (USB, clocks,
 * PLL, resets chapters); not run on hardware (built and linked only).
 *
 * The controller's 4 KB dual-port RAM holds the SETUP packet, the endpoint and buffer control
 * words and the packet buffers: endpoint 0 uses the shared 64-byte buffer at 0x100, the others one
 * 64-byte buffer each from 0x180. A packet is handed to the controller by setting AVAILABLE in
 * its buffer control word (with the DATA0/1 PID kept here); BUFF_STATUS says when it is done.
 * clk_usb comes from PLL_USB at 48 MHz (12 MHz crystal, set up by rp2040_clocks.c).
 * Not handled: erratum RP2040-E5 (a device may not leave the bus reset state behind a busy hub). */
#include "cortexm.h"
#include "tinyc_board.h"
#include "usb_cdc.h"

#define USBCTRL_IRQ 5u
#define NVIC_ISER TINYC_REG(0xE000E100u)
#define NVIC_ICER TINYC_REG(0xE000E180u)

#define RESETS_SET TINYC_REG(0x4000C000u + 0x2000u)   /* atomic set / clear aliases */
#define RESETS_CLR TINYC_REG(0x4000C000u + 0x3000u)
#define RESETS_DONE TINYC_REG(0x4000C008u)
#define RESET_PLL_USB (1u << 13)
#define RESET_USBCTRL (1u << 24)
#define PLL_USB_CS TINYC_REG(0x4002C000u)
#define PLL_USB_PWR_CLR TINYC_REG(0x4002C004u + 0x3000u)
#define PLL_USB_FBDIV_INT TINYC_REG(0x4002C008u)
#define PLL_USB_PRIM TINYC_REG(0x4002C00Cu)
#define PLL_LOCK (1u << 31)
#define PLL_PWR_PD (1u << 0)
#define PLL_PWR_POSTDIVPD (1u << 3)
#define PLL_PWR_VCOPD (1u << 5)
#define CLK_USB_CTRL TINYC_REG(0x40008054u)
#define CLK_USB_DIV TINYC_REG(0x40008058u)
#define CLK_ENABLE (1u << 11)

#define DPRAM 0x50100000u
#define DPRAM_BYTES 4096u
#define EP_CONTROL_IN(n) TINYC_REG(DPRAM + 8u * (n))        /* n >= 1 */
#define EP_CONTROL_OUT(n) TINYC_REG(DPRAM + 8u * (n) + 4u)
#define BUF_CONTROL_IN(n) TINYC_REG(DPRAM + 0x80u + 8u * (n))
#define BUF_CONTROL_OUT(n) TINYC_REG(DPRAM + 0x84u + 8u * (n))
#define EP0_BUFFER 0x100u
#define EP_BUFFER(n, in) (0x180u + 0x80u * ((n) - 1u) + ((in) ? 0u : 0x40u))

#define EP_ENABLE (1u << 31)
#define EP_INTERRUPT_PER_BUFFER (1u << 29)
#define EP_TYPE_SHIFT 26u
#define BUF_FULL (1u << 15)
#define BUF_DATA1 (1u << 13)
#define BUF_STALL (1u << 11)
#define BUF_AVAILABLE (1u << 10)

#define USB_REGS 0x50110000u
#define USB_ADDR_ENDP TINYC_REG(USB_REGS + 0x00u)
#define USB_MAIN_CTRL TINYC_REG(USB_REGS + 0x40u)
#define USB_SIE_CTRL TINYC_REG(USB_REGS + 0x4Cu)
#define USB_SIE_STATUS TINYC_REG(USB_REGS + 0x50u)
#define USB_BUFF_STATUS TINYC_REG(USB_REGS + 0x58u)
#define USB_EP_STALL_ARM TINYC_REG(USB_REGS + 0x68u)
#define USB_MUXING TINYC_REG(USB_REGS + 0x74u)
#define USB_PWR TINYC_REG(USB_REGS + 0x78u)
#define USB_INTE TINYC_REG(USB_REGS + 0x90u)
#define USB_INTS TINYC_REG(USB_REGS + 0x98u)
#define MAIN_CONTROLLER_EN (1u << 0)
#define SIE_PULLUP_EN (1u << 16)
#define SIE_EP0_INT_1BUF (1u << 29)
#define SIE_SETUP_REC (1u << 17)
#define SIE_BUS_RESET (1u << 19)
#define MUXING_TO_PHY (1u << 0)
#define MUXING_SOFTCON (1u << 3)
#define PWR_VBUS_DETECT (1u << 2)
#define PWR_VBUS_DETECT_OVERRIDE_EN (1u << 3)
#define INT_BUFF_STATUS (1u << 4)
#define INT_BUS_RESET (1u << 12)
#define INT_SETUP_REQ (1u << 16)

static uint8_t next_pid[16][2];   /* [endpoint][0 = OUT, 1 = IN]: DATA0 or DATA1 */
static int ep0_to_host;
static int address_pending = -1;  /* SET_ADDRESS: taken when its status stage is done */

void tinyc_usb_irq_handler(void);

void usb_drv_lock(void)
{
    NVIC_ICER = 1u << USBCTRL_IRQ;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

void usb_drv_unlock(void)
{
    NVIC_ISER = 1u << USBCTRL_IRQ;
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

static volatile uint8_t *buffer_of(uint8_t ep, int in)
{
    return (volatile uint8_t *)(uintptr_t)(DPRAM + (ep == 0u ? EP0_BUFFER : EP_BUFFER(ep, in)));
}

/* Hands a buffer to the controller: the control word first, AVAILABLE a few cycles later (the
 * datasheet's rule for clk_sys and clk_usb running at different speeds). */
static void give_buffer(volatile uint32_t *control, uint32_t word)
{
    *control = word;
    __asm__ volatile("nop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop" ::: "memory");
    *control = word | BUF_AVAILABLE;
}

static void start_in(uint8_t ep, const uint8_t *data, uint32_t n, int pid)
{
    volatile uint8_t *buf = buffer_of(ep, 1);
    uint32_t i;
    for (i = 0; i < n; i++) {
        buf[i] = data[i];
    }
    give_buffer(&BUF_CONTROL_IN(ep), n | BUF_FULL | (pid ? BUF_DATA1 : 0u));
}

void usb_drv_ep_in(uint8_t ep, const uint8_t *data, uint32_t n)
{
    start_in(ep, data, n, next_pid[ep][1]);
    next_pid[ep][1] ^= 1u;
}

void usb_drv_ep_out_arm(uint8_t ep)
{
    give_buffer(&BUF_CONTROL_OUT(ep), 64u | (next_pid[ep][0] ? BUF_DATA1 : 0u));
    next_pid[ep][0] ^= 1u;
}

void usb_drv_ep_open(uint8_t ep_address, uint8_t type, uint16_t max_packet)
{
    const uint8_t ep = ep_address & 15u;
    const int in = (ep_address & 0x80u) != 0u;
    const uint32_t word = EP_ENABLE | EP_INTERRUPT_PER_BUFFER | ((uint32_t)type << EP_TYPE_SHIFT)
                          | EP_BUFFER(ep, in);
    (void)max_packet;   /* 64-byte buffers */
    next_pid[ep][in] = 0;
    if (in) {
        BUF_CONTROL_IN(ep) = 0;
        EP_CONTROL_IN(ep) = word;
    } else {
        BUF_CONTROL_OUT(ep) = 0;
        EP_CONTROL_OUT(ep) = word;
    }
}

void usb_drv_stall(uint8_t ep_address, int on)
{
    const uint8_t ep = ep_address & 15u;
    const int in = (ep_address & 0x80u) != 0u;
    if (ep == 0u) {
        if (on) {   /* the controller clears the arm bits at the next SETUP */
            USB_EP_STALL_ARM = 3u;
            BUF_CONTROL_IN(0) = BUF_STALL;
            BUF_CONTROL_OUT(0) = BUF_STALL;
        }
        return;
    }
    next_pid[ep][in] = 0;
    if (in) {
        BUF_CONTROL_IN(ep) = on ? BUF_STALL : 0u;
    } else {
        BUF_CONTROL_OUT(ep) = on ? BUF_STALL : 0u;
    }
}

/* the status stage: a zero-length DATA1 packet against the data stage's direction */
void usb_drv_ep0_status(void)
{
    if (ep0_to_host) {
        give_buffer(&BUF_CONTROL_OUT(0), 64u | BUF_DATA1);
    } else {
        start_in(0, NULL, 0, 1);
    }
}

void usb_drv_set_address(uint8_t address)
{
    address_pending = address;
    start_in(0, NULL, 0, 1);
}

void tinyc_usb_irq_handler(void)
{
    const uint32_t ints = USB_INTS;
    if (ints & INT_BUFF_STATUS) {
        const uint32_t done = USB_BUFF_STATUS;
        uint32_t bit;
        USB_BUFF_STATUS = done;   /* write one to clear */
        for (bit = 0; bit < 32u; bit++) {
            const uint8_t ep = (uint8_t)(bit / 2u);
            if (!(done & (1u << bit))) {
                continue;
            }
            if (bit % 2u == 0u) {   /* IN */
                if (ep == 0u && address_pending >= 0) {
                    USB_ADDR_ENDP = (uint32_t)address_pending;
                    address_pending = -1;
                }
                usb_cdc_in_done(ep);
            } else {
                const uint32_t n = BUF_CONTROL_OUT(ep) & 0x3FFu;
                uint8_t packet[64];
                volatile uint8_t *buf = buffer_of(ep, 0);
                uint32_t i;
                for (i = 0; i < n && i < sizeof packet; i++) {
                    packet[i] = buf[i];
                }
                usb_cdc_out_received(ep, packet, i);
            }
        }
    }
    if (ints & INT_SETUP_REQ) {
        volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)DPRAM;
        uint8_t setup[8];
        uint32_t i;
        USB_SIE_STATUS = SIE_SETUP_REC;
        for (i = 0; i < 8u; i++) {
            setup[i] = p[i];
        }
        ep0_to_host = (setup[0] & 0x80u) != 0u;
        next_pid[0][0] = next_pid[0][1] = 1u;   /* a data stage starts with DATA1 */
        usb_cdc_setup(setup);
    }
    if (ints & INT_BUS_RESET) {
        USB_SIE_STATUS = SIE_BUS_RESET;
        USB_ADDR_ENDP = 0;
        address_pending = -1;
        usb_cdc_bus_reset();
    }
}

static void unreset(uint32_t bits)
{
    RESETS_SET = bits;
    RESETS_CLR = bits;
    while ((RESETS_DONE & bits) != bits) {
    }
}

/* clk_usb = 12 MHz / 1 * 120 / 6 / 5 = 48 MHz (VCO 1440 MHz, inside its 750-1600 MHz) */
static void usb_clock_48mhz(void)
{
    CLK_USB_CTRL = 0;                    /* stopped while its source changes */
    unreset(RESET_PLL_USB);
    PLL_USB_CS = 1u;   /* reference divider 1 */
    PLL_USB_FBDIV_INT = 120u;
    PLL_USB_PWR_CLR = PLL_PWR_PD | PLL_PWR_VCOPD;
    while (!(PLL_USB_CS & PLL_LOCK)) {
    }
    PLL_USB_PRIM = (6u << 16) | (5u << 12);
    PLL_USB_PWR_CLR = PLL_PWR_POSTDIVPD;
    CLK_USB_DIV = 1u << 8;               /* divide by 1 */
    CLK_USB_CTRL = CLK_ENABLE | (0u << 5);   /* from clksrc_pll_usb */
}

/* Clocks the controller, clears its memory and connects (the crystal must run: rp2040_clocks.c).
 * The Pico does not wire VBUS to the controller: VBUS detection is forced on. */
void usb_rp2040_start(void)
{
    volatile uint32_t *dpram = (volatile uint32_t *)(uintptr_t)DPRAM;
    uint32_t i;
    usb_cdc_init();
    usb_clock_48mhz();
    unreset(RESET_USBCTRL);
    for (i = 0; i < DPRAM_BYTES / 4u; i++) {
        dpram[i] = 0;
    }
    USB_MUXING = MUXING_TO_PHY | MUXING_SOFTCON;
    USB_PWR = PWR_VBUS_DETECT | PWR_VBUS_DETECT_OVERRIDE_EN;
    USB_MAIN_CTRL = MAIN_CONTROLLER_EN;
    USB_SIE_CTRL = SIE_EP0_INT_1BUF;
    USB_INTE = INT_BUFF_STATUS | INT_BUS_RESET | INT_SETUP_REQ;
    usb_drv_unlock();
    USB_SIE_CTRL = SIE_EP0_INT_1BUF | SIE_PULLUP_EN;
}

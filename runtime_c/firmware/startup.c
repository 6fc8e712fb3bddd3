/* Start-up code for every Cortex-M board tinyc targets: the vector table, the reset handler
 * (FPU on, .data copied, .bss zeroed, stack painted, MPU stack guard, main()), and the fault
 * handlers that turn a stack overflow into a clear message and exit status.
 *
 * Memory layout (the generated link.ld): RAM = .data, .bss, then the stack section:
 *     __tinyc_stack_bottom .. __tinyc_stack_limit   guard (no access through the MPU)
 *     __tinyc_stack_limit  .. __tinyc_stack_top     the stack, growing down from the top
 */
#include <stdint.h>
#include <string.h>

#include "cortexm.h"
#include "tinyc_board.h"

#define STACK_PAINT 0xC5C5C5C5u

extern uint32_t __tinyc_data_load[], __tinyc_data_start[], __tinyc_data_end[];
extern uint32_t __tinyc_bss_start[], __tinyc_bss_end[];
extern uint32_t __tinyc_stack_bottom[], __tinyc_stack_limit[], __tinyc_stack_top[];

int main(void);
void tinyc_reset_handler(void) __attribute__((noreturn));
void tinyc_fault_entry(void);
void tinyc_fault_report(uint32_t sp, uint32_t exc_return) __attribute__((noreturn, used));
void tinyc_default_handler(void);
void tinyc_systick_handler(void);

/* Core exceptions, and on boards with a USB console (TINYC_BOARD_USB_IRQ) the peripheral
 * interrupts up to the USB controller's, the only one enabled (usb_nrf52.c, usb_rp2040.c). */
#ifdef TINYC_BOARD_USB_IRQ
void tinyc_usb_irq_handler(void);
#define VECTORS (16 + TINYC_BOARD_USB_IRQ + 1)
#else
#define VECTORS 16
#endif
__attribute__((section(".tinyc_vectors"), used))
static void (*const tinyc_vectors[VECTORS])(void) = {
    (void (*)(void))__tinyc_stack_top,
    tinyc_reset_handler,
    tinyc_default_handler,  /* NMI */
    tinyc_fault_entry,      /* HardFault */
    tinyc_fault_entry,      /* MemManage (Armv7-M) */
    tinyc_fault_entry,      /* BusFault (Armv7-M) */
    tinyc_fault_entry,      /* UsageFault (Armv7-M) */
    0, 0, 0, 0,
    tinyc_default_handler,  /* SVCall */
    tinyc_default_handler,  /* DebugMonitor */
    0,
    tinyc_default_handler,  /* PendSV */
    tinyc_systick_handler,  /* SysTick */
#ifdef TINYC_BOARD_USB_IRQ
    [16 ... 16 + TINYC_BOARD_USB_IRQ - 1] = tinyc_default_handler,   /* (GNU C range) */
    [16 + TINYC_BOARD_USB_IRQ] = tinyc_usb_irq_handler,
#endif
};

static uint32_t read_sp(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static void stack_guard_on(void)
{
#if TINYC_BOARD_STACK_GUARD_BYTES > 0
    /* one MPU region over the guard, no access for anyone; privileged code keeps the default
     * memory map everywhere else (PRIVDEFENA) */
    uint32_t size_field = 0, bytes = TINYC_BOARD_STACK_GUARD_BYTES;
    while ((2u << size_field) < bytes) {
        size_field++;
    }
    if (((MPU_TYPE >> 8) & 0xFFu) == 0) {
        return;   /* no MPU: the painted stack still gives the high-water mark */
    }
    MPU_RNR = 0;
    MPU_RBAR = (uint32_t)(uintptr_t)__tinyc_stack_bottom;
    MPU_RASR = MPU_RASR_XN | (size_field << 1) | MPU_RASR_ENABLE;
#if TINYC_BOARD_ARMV7M
    SCB_SHCSR |= SCB_SHCSR_MEMFAULTENA;
#endif
    MPU_CTRL = MPU_CTRL_PRIVDEFENA | MPU_CTRL_ENABLE;
    tinyc_dsb_isb();
#endif
}

void tinyc_reset_handler(void)
{
#if TINYC_BOARD_HAS_FPU
    SCB_CPACR |= 0xFu << 20;   /* full access to CP10 and CP11 before any floating point */
    tinyc_dsb_isb();
#endif
    SCB_VTOR = (uint32_t)(uintptr_t)tinyc_vectors;   /* behind a bootloader too */
    memcpy(__tinyc_data_start, __tinyc_data_load,
           (size_t)((char *)__tinyc_data_end - (char *)__tinyc_data_start));
    memset(__tinyc_bss_start, 0, (size_t)((char *)__tinyc_bss_end - (char *)__tinyc_bss_start));
    tinyc_stack_paint();
    stack_guard_on();
    tinyc_board_exit(main());
}

static uint32_t stack_peak;   /* the high-water mark before the last repaint */
static int stack_painted;     /* (.bss: zero until the reset handler's paint) */

static uint32_t stack_used_now(void)
{
    const uint32_t *p = __tinyc_stack_limit;
    while (p < __tinyc_stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((const char *)__tinyc_stack_top - (const char *)p);
}

/* Paints the free stack below the caller's frame. Called at reset, and by the training demo
 * before each step to measure the step's own depth (tinyc_stack_used_since_paint). */
__attribute__((noinline)) void tinyc_stack_paint(void)
{
    volatile uint32_t *p = __tinyc_stack_limit;
    volatile uint32_t *end = (volatile uint32_t *)(uintptr_t)(read_sp() - 64u);
    if (stack_painted) {
        stack_peak = tinyc_stack_high_water();
    }
    while (p < end) {
        *p++ = STACK_PAINT;
    }
    stack_painted = 1;
}

uint32_t tinyc_stack_size(void)
{
    return (uint32_t)((char *)__tinyc_stack_top - (char *)__tinyc_stack_limit);
}

uint32_t tinyc_stack_used_since_paint(void)
{
    return stack_used_now();
}

uint32_t tinyc_stack_high_water(void)
{
    uint32_t now = stack_used_now();
    return now > stack_peak ? now : stack_peak;
}

/* Every fault lands here with the faulting stack possibly unusable: note the stack pointer,
 * move to the top of the stack (nothing returns from here) and report. */
__attribute__((naked)) void tinyc_fault_entry(void)
{
    __asm__ volatile(
        "mov r0, sp\n\t"
        "mov r1, lr\n\t"
        "ldr r2, =__tinyc_stack_top\n\t"
        "mov sp, r2\n\t"
        "b tinyc_fault_report\n\t"
        ".ltorg\n\t");
}

void tinyc_fault_report(uint32_t sp, uint32_t exc_return)
{
    uint32_t ipsr;
    int overflow;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    (void)exc_return;
    /* the exception frame (32 bytes, more with FP context) went at or below the guard */
    overflow = sp < (uint32_t)(uintptr_t)__tinyc_stack_limit + 32u;
#if TINYC_BOARD_ARMV7M
    {
        uint32_t cfsr = SCB_CFSR;
        uint32_t addr = SCB_MMFAR;
        if (cfsr & SCB_CFSR_MSTKERR) {
            overflow = 1;
        }
        if ((cfsr & SCB_CFSR_MMARVALID) && addr >= (uint32_t)(uintptr_t)__tinyc_stack_bottom
            && addr < (uint32_t)(uintptr_t)__tinyc_stack_limit) {
            overflow = 1;
        }
    }
#endif
    tinyc_console_flush();
    if (overflow) {
        tinyc_print("\ntinyc: error: stack overflow: the stack of ");
        tinyc_print_int((int32_t)tinyc_stack_size());
        tinyc_print(" bytes ran into its MPU guard (sp=0x");
        tinyc_print_hex(sp);
        tinyc_print("); give the board a larger stack_reserve_bytes\n");
        tinyc_board_exit(TINYC_EXIT_STACK_OVERFLOW);
    }
    tinyc_print("\ntinyc: error: fault (exception ");
    tinyc_print_int((int32_t)(ipsr & 0x1FFu));
#if TINYC_BOARD_ARMV7M
    tinyc_print(", CFSR=0x");
    tinyc_print_hex(SCB_CFSR);
#endif
    tinyc_print(", sp=0x");
    tinyc_print_hex(sp);
    tinyc_print(")\n");
    tinyc_board_exit(TINYC_EXIT_FAULT);
}

void tinyc_default_handler(void)
{
    tinyc_print("\ntinyc: error: unexpected exception\n");
    tinyc_board_exit(TINYC_EXIT_FAULT);
}

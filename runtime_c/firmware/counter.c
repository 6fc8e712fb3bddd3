/* A 64-bit tick counter from the 24-bit SysTick timer clocked by the processor clock: the
 * SysTick exception counts wraps. On hardware one tick is one core cycle; under QEMU with
 * -icount shift=0 the mps2 boards' SysTick advances one tick per 40 instructions
 * (TINYC_BOARD_COUNTER_SCALE converts). */
#include "cortexm.h"
#include "tinyc_board.h"

#define SYSTICK_PERIOD (1u << 24)

static volatile uint32_t wraps;

void tinyc_systick_handler(void)
{
    wraps++;
}

void tinyc_counter_init(void)
{
    SYST_CSR = 0;
    SYST_RVR = SYSTICK_PERIOD - 1u;
    SYST_CVR = 0;
    wraps = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    while (SYST_CVR == 0u) {   /* the first tick loads the reload value */
    }
}

uint64_t tinyc_counter_ticks(void)
{
    uint32_t primask, hi, lo;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask) :: "memory");
    hi = wraps;
    lo = SYST_CVR;
    if (SCB_ICSR & SCB_ICSR_PENDSTSET) {   /* a wrap whose exception has not run yet */
        hi++;
        lo = SYST_CVR;
    }
    __asm__ volatile("msr primask, %0" :: "r"(primask) : "memory");
    /* The wrap is signalled when the count goes 1 -> 0, one tick before the reload: while the
     * counter reads 0 the wrap is already counted. */
    return (uint64_t)hi * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1u - lo)
           - (lo == 0u ? SYSTICK_PERIOD : 0u);
}

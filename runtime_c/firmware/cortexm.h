/* The few Cortex-M system registers the tinyc firmware touches (Armv6-M / Armv7-M System
 * Control Space; identical addresses on M0+, M4 and M7). */
#ifndef TINYC_CORTEXM_H
#define TINYC_CORTEXM_H

#include <stdint.h>

#define TINYC_REG(addr) (*(volatile uint32_t *)(addr))

/* SysTick */
#define SYST_CSR TINYC_REG(0xE000E010u)
#define SYST_RVR TINYC_REG(0xE000E014u)
#define SYST_CVR TINYC_REG(0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)

/* System control block */
#define SCB_ICSR TINYC_REG(0xE000ED04u)
#define SCB_ICSR_PENDSTSET (1u << 26)
#define SCB_VTOR TINYC_REG(0xE000ED08u)
#define SCB_SHCSR TINYC_REG(0xE000ED24u)      /* Armv7-M only */
#define SCB_CFSR TINYC_REG(0xE000ED28u)       /* Armv7-M only */
#define SCB_MMFAR TINYC_REG(0xE000ED34u)      /* Armv7-M only */
#define SCB_CPACR TINYC_REG(0xE000ED88u)      /* cores with an FPU */
#define SCB_SHCSR_MEMFAULTENA (1u << 16)
#define SCB_CFSR_MSTKERR (1u << 4)
#define SCB_CFSR_MMARVALID (1u << 7)

/* Memory protection unit (PMSAv7 / Armv6-M MPU) */
#define MPU_TYPE TINYC_REG(0xE000ED90u)
#define MPU_CTRL TINYC_REG(0xE000ED94u)
#define MPU_RNR TINYC_REG(0xE000ED98u)
#define MPU_RBAR TINYC_REG(0xE000ED9Cu)
#define MPU_RASR TINYC_REG(0xE000EDA0u)
#define MPU_CTRL_ENABLE (1u << 0)
#define MPU_CTRL_PRIVDEFENA (1u << 2)
#define MPU_RASR_ENABLE (1u << 0)
#define MPU_RASR_XN (1u << 28)                /* AP = 000: no access at all */

static inline void tinyc_dsb_isb(void)
{
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

#endif /* TINYC_CORTEXM_H */

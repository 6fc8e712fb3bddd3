/* RP2040: the boot ROM leaves the chip on its ring oscillator; this moves clk_ref and clk_sys to
 * the 12 MHz crystal and feeds clk_peri from clk_sys. Register offsets: RP2040 datasheet (clocks,
 * xosc). */
#include "cortexm.h"
#include "rp2040_clocks.h"
#include "tinyc_board.h"

#define XOSC_CTRL TINYC_REG(0x40024000u)
#define XOSC_STATUS TINYC_REG(0x40024004u)
#define XOSC_STARTUP TINYC_REG(0x4002400Cu)
#define CLK_REF_CTRL TINYC_REG(0x40008030u)
#define CLK_REF_SELECTED TINYC_REG(0x40008038u)
#define CLK_SYS_CTRL TINYC_REG(0x4000803Cu)
#define CLK_SYS_SELECTED TINYC_REG(0x40008044u)
#define CLK_PERI_CTRL TINYC_REG(0x40008048u)

void rp2040_clocks_from_crystal(void)
{
    XOSC_CTRL = 0xAA0u;                                   /* 1-15 MHz range */
    XOSC_STARTUP = ((TINYC_BOARD_F_CPU / 1000u) + 128u) / 256u;   /* about 1 ms */
    XOSC_CTRL = (0xFABu << 12) | 0xAA0u;                  /* enable */
    while (!(XOSC_STATUS & (1u << 31))) {                 /* stable */
    }
    CLK_REF_CTRL = 2u;                                    /* clk_ref <- xosc */
    while (!(CLK_REF_SELECTED & (1u << 2))) {
    }
    CLK_SYS_CTRL = 0u;                                    /* clk_sys <- clk_ref (glitchless) */
    while (!(CLK_SYS_SELECTED & 1u)) {
    }
    CLK_PERI_CTRL = (1u << 11) | (0u << 5);               /* enabled, from clk_sys */
}

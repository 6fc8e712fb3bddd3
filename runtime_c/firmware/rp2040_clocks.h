/* RP2040 clocks: clk_ref and clk_sys from the 12 MHz crystal (rp2040_clocks.c). */
#ifndef TINYC_RP2040_CLOCKS_H
#define TINYC_RP2040_CLOCKS_H

void rp2040_clocks_from_crystal(void);

#endif /* TINYC_RP2040_CLOCKS_H */

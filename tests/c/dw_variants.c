/* Which specialised depthwise variants depthwise_conv.c picks for given layers: reads one layer
 * a line (in_place, then tinyc_conv_params' 19 fields in order) and prints, per line, the
 * tinyc/config.h names of the rows dw_row_for and (in place) the kernels dw_direct_for and
 * dw_quad_for return, or "-". Compiled with the runtime's config.h (every variant) and -DTINYC_SIMD_EMULATE;
 * tests/test_runtime_c.py checks that the code generator's config enables each of them. */
#include <stdio.h>

#include "../../runtime_c/src/forward/depthwise_conv.c"

int main(void)
{
    int32_t v[20];
    while (1) {
        tinyc_conv_params p;
        int i;
        const char *clamp;
        for (i = 0; i < 20; ++i) {
            long x;
            if (scanf("%ld", &x) != 1) {
                return 0;
            }
            v[i] = (int32_t)x;
        }
        memcpy(&p, &v[1], sizeof p);
        clamp = p.act_min == -128 && p.act_max == 127 ? "FULL" : "NARROW";
        if (dw_row_for(&p)) {
            printf("TINYC_DW_ROWS_%ldX%ld_S%ld_%s ", (long)p.kernel_w, (long)p.kernel_w,
                   (long)p.stride_w, clamp);
        }
        if (v[0] && dw_direct_for(&p)) {
            printf("TINYC_DW_DIRECT_3X3_S2_%s ", clamp);
        }
        if (v[0] && dw_quad_for(&p)) {
            printf("TINYC_DW_QUAD_%ldX%ld_S%ld_%s ", (long)p.kernel_w, (long)p.kernel_w,
                   (long)p.stride_w, clamp);
        }
        printf("-\n");
    }
}

/* One table lookup per element (compiler/ops/activation.py): an int8 function of one int8
 * activation (LOGISTIC, HARD_SWISH, a fused chain), tabulated by the compiler. May run in place. */
#include "tinyc/kernels.h"

void tinyc_lut(int32_t size, const int8_t *table, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = table[(int32_t)in[i] + 128];
    }
}

/* Host test harness: reads int8 inputs (TINYC_INPUT_SIZE bytes each) from stdin until EOF, runs
 * tinyc_infer() on each and writes the int8 outputs (TINYC_OUTPUT_SIZE bytes each) to stdout.
 * Exit status 0 on success, 2 on a truncated input. */
#include <stdio.h>

#include "model.h"

static int8_t input[TINYC_INPUT_SIZE];
static int8_t output[TINYC_OUTPUT_SIZE];

int main(void)
{
    for (;;) {
        size_t got = fread(input, 1, sizeof input, stdin);
        if (got == 0) {
            break;
        }
        if (got != sizeof input) {
            fprintf(stderr, "tinyc_host: truncated input (%lu of %lu bytes)\n",
                    (unsigned long)got, (unsigned long)sizeof input);
            return 2;
        }
        tinyc_infer(input, output);
        if (fwrite(output, 1, sizeof output, stdout) != sizeof output) {
            fprintf(stderr, "tinyc_host: write failed\n");
            return 1;
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Host training harness: a binary command protocol on stdin/stdout (native byte order) driving
 * the generated training code, used by tinyc emulate --train-data and the tests.
 *
 *   'T' int32 label, float32 lr, TINYC_INPUT_SIZE int8  -> float32 loss   (tinyc_train_step)
 *       (--loss mse: TINYC_OUTPUT_SIZE int8 target instead of the label)
 *   'I' TINYC_INPUT_SIZE int8                           -> TINYC_OUTPUT_SIZE int8 (tinyc_infer)
 *   'P'                                                 -> TINYC_PARAM_BYTES (every parameter,
 *                                                          in tinyc_params order)
 *   'L' TINYC_PARAM_BYTES                               -> 'k' (parameters loaded)
 *   'S' uint32 step                                     -> 'k' (step count set)
 *   'R'                                                 -> 'k' (tinyc_train_init)
 *   'G'                                                 -> 6 uint32: tinyc_train_stats (steps,
 *                                                          skipped, guarded, updates, refused
 *                                                          non-finite, refused saturation)
 * Every reply is flushed. Exit status 0 at end of input, 2 on a truncated or unknown command. */
#include <stdio.h>

#include "model.h"

static int8_t input[TINYC_INPUT_SIZE];
static int8_t output[TINYC_OUTPUT_SIZE];
static unsigned char params[TINYC_PARAM_BYTES];

static int read_all(void *dst, size_t n)
{
    return fread(dst, 1, n, stdin) == n;
}

static int reply(const void *src, size_t n)
{
    return fwrite(src, 1, n, stdout) == n && fflush(stdout) == 0;
}

int main(void)
{
    for (;;) {
        int cmd = getchar();
        int ok = 1;
        if (cmd == EOF) {
            return 0;
        }
        if (cmd == 'T') {
#if TINYC_LOSS_MSE
            static int8_t target[TINYC_OUTPUT_SIZE];
#define TINYC_TARGET target
#else
            int32_t label;
#define TINYC_TARGET &label
#endif
            float lr, loss;
            if (!read_all(TINYC_TARGET, TINYC_LOSS_MSE ? sizeof(int8_t) * TINYC_OUTPUT_SIZE
                                                       : sizeof(int32_t))
                || !read_all(&lr, sizeof lr) || !read_all(input, sizeof input)) {
                fprintf(stderr, "tinyc_train_host: truncated 'T' command\n");
                return 2;
            }
#if TINYC_LOSS_MSE
            loss = tinyc_train_step(input, target, lr);
#else
            loss = tinyc_train_step(input, (int)label, lr);
#endif
            ok = reply(&loss, sizeof loss);
        } else if (cmd == 'I') {
            if (!read_all(input, sizeof input)) {
                fprintf(stderr, "tinyc_train_host: truncated 'I' command\n");
                return 2;
            }
            tinyc_infer(input, output);
            ok = reply(output, sizeof output);
        } else if (cmd == 'P') {
            size_t at = 0;
            int k;
            for (k = 0; k < TINYC_NUM_PARAMS; ++k) {
                at += (size_t)tinyc_get_param(k, params + at);
            }
            ok = reply(params, at);
        } else if (cmd == 'L') {
            size_t at = 0;
            int k;
            if (!read_all(params, sizeof params)) {
                fprintf(stderr, "tinyc_train_host: truncated 'L' command\n");
                return 2;
            }
            for (k = 0; k < TINYC_NUM_PARAMS; ++k) {
                at += (size_t)tinyc_set_param(k, params + at);
            }
            ok = reply("k", 1);
        } else if (cmd == 'S') {
            uint32_t step;
            if (!read_all(&step, sizeof step)) {
                fprintf(stderr, "tinyc_train_host: truncated 'S' command\n");
                return 2;
            }
            tinyc_set_train_step_count(step);
            ok = reply("k", 1);
        } else if (cmd == 'G') {
            tinyc_train_stats stats;
            uint32_t counts[6];
            tinyc_get_train_stats(&stats);
            counts[0] = stats.steps;
            counts[1] = stats.steps_skipped;
            counts[2] = stats.steps_guarded;
            counts[3] = stats.updates;
            counts[4] = stats.refused_nonfinite;
            counts[5] = stats.refused_saturation;
            ok = reply(counts, sizeof counts);
        } else if (cmd == 'R') {
            tinyc_train_init();
            ok = reply("k", 1);
        } else {
            fprintf(stderr, "tinyc_train_host: unknown command %d\n", cmd);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "tinyc_train_host: write failed\n");
            return 1;
        }
    }
}

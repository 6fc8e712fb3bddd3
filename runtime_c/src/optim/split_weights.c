/* Storage of partially trained conv weights (kernels.h tinyc_split_weights): the trained input
 * channels in SRAM, the rest in flash. Moves the kept channels between the SRAM array and the
 * logical OHWI tensor (tinyc_train_init, tinyc_get_param, tinyc_set_param, tinyc_write_param). */
#include <string.h>

#include "tinyc/train.h"

/* Visits the kept weights in SRAM order: calls copy(ctx, SRAM index, OHWI index). */
typedef void (*split_visit)(void *ctx, int32_t at, int32_t index);

static void for_each_kept(const tinyc_split_weights *w, split_visit copy, void *ctx)
{
    int32_t o, t, j, at = 0, j0 = 0, n = 0;
    for (o = 0; o < w->out_c; ++o) {
        const int32_t c0 = (o / w->cout_g) * w->cin_g;
        if (o % w->cout_g == 0) {
            n = tinyc_split_group(w, o / w->cout_g, &j0);
        }
        for (t = 0; t < w->taps; ++t) {
            for (j = 0; j < n; ++j, ++at) {
                copy(ctx, at, (o * w->taps + t) * w->cin_g + w->channels[j0 + j] - c0);
            }
        }
    }
}

typedef struct {
    const tinyc_split_weights *w;
    const int8_t *full;   /* load: the source tensor */
    int8_t *dst;          /* read: elements [lo, hi) of the logical tensor */
    int32_t lo, hi;
} split_copy;

static void load_one(void *ctx, int32_t at, int32_t index)
{
    const split_copy *c = (const split_copy *)ctx;
    c->w->sram[at] = c->full[index];
}

static void read_one(void *ctx, int32_t at, int32_t index)
{
    const split_copy *c = (const split_copy *)ctx;
    if (index >= c->lo && index < c->hi) {
        c->dst[index - c->lo] = c->w->sram[at];
    }
}

void tinyc_split_load(const tinyc_split_weights *w, const int8_t *full)
{
    split_copy c;
    c.w = w;
    c.full = full;
    c.dst = NULL;
    c.lo = c.hi = 0;
    for_each_kept(w, load_one, &c);
}

void tinyc_split_read(const tinyc_split_weights *w, int32_t lo, int32_t hi, int8_t *dst)
{
    split_copy c;
    memcpy(dst, w->flash + lo, (size_t)(hi - lo));
    c.w = w;
    c.full = NULL;
    c.dst = dst;
    c.lo = lo;
    c.hi = hi;
    for_each_kept(w, read_one, &c);
}

static void write_one(void *ctx, int32_t at, int32_t index)
{
    const split_copy *c = (const split_copy *)ctx;
    if (index >= c->lo && index < c->hi) {
        c->w->sram[at] = c->full[index - c->lo];
    }
}

void tinyc_split_write(const tinyc_split_weights *w, int32_t lo, int32_t hi, const int8_t *src)
{
    split_copy c;
    c.w = w;
    c.full = src;
    c.dst = NULL;
    c.lo = lo;
    c.hi = hi;
    for_each_kept(w, write_one, &c);
}

void tinyc_split_row(const tinyc_split_weights *w, int32_t o, int8_t *dst)
{
    const int32_t grp = o / w->cout_g;
    const int32_t c0 = grp * w->cin_g;
    int32_t j0 = 0, t, j, at;
    const int32_t n = tinyc_split_group(w, grp, &j0);
    memcpy(dst, w->flash + o * w->taps * w->cin_g, (size_t)(w->taps * w->cin_g));
    /* o's kept weights follow those of the output channels before it (as for_each_kept) */
    at = w->taps * (j0 * w->cout_g + n * (o - grp * w->cout_g));
    for (t = 0; t < w->taps; ++t) {
        for (j = 0; j < n; ++j) {
            dst[t * w->cin_g + w->channels[j0 + j] - c0] = w->sram[at + t * n + j];
        }
    }
}

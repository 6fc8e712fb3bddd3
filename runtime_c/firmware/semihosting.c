/* Arm semihosting calls for M-profile cores: BKPT 0xAB with the operation number in r0 and a
 * pointer to the parameter block in r1; the result comes back in r0. */
#include "semihosting.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_SEEK = 0x0A,
    SYS_FLEN = 0x0C,
    SYS_GET_CMDLINE = 0x15,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20,
    ADP_STOPPED_APPLICATION_EXIT = 0x20026
};

static int32_t semihost_call(uint32_t op, void *args)
{
    register uint32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = args;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

int32_t tinyc_sh_open(const char *path, uint32_t mode)
{
    uint32_t args[3] = {(uint32_t)(uintptr_t)path, mode, (uint32_t)strlen(path)};
    return semihost_call(SYS_OPEN, args);
}

int32_t tinyc_sh_close(int32_t handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return semihost_call(SYS_CLOSE, args);
}

int32_t tinyc_sh_write(int32_t handle, const void *buf, size_t len)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
    return semihost_call(SYS_WRITE, args);
}

int32_t tinyc_sh_read(int32_t handle, void *buf, size_t len)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
    return semihost_call(SYS_READ, args);
}

int32_t tinyc_sh_seek(int32_t handle, uint32_t pos)
{
    uint32_t args[2] = {(uint32_t)handle, pos};
    return semihost_call(SYS_SEEK, args);
}

int32_t tinyc_sh_flen(int32_t handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return semihost_call(SYS_FLEN, args);
}

int32_t tinyc_sh_cmdline(char *buf, size_t size)
{
    uint32_t args[2] = {(uint32_t)(uintptr_t)buf, (uint32_t)size};
    return semihost_call(SYS_GET_CMDLINE, args);
}

void tinyc_sh_exit(int status)
{
    uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost_call(SYS_EXIT_EXTENDED, args);
    /* a host without the extended call: plain exit (status lost) */
    semihost_call(SYS_EXIT, (void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    for (;;) {
    }
}

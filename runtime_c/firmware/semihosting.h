/* Arm semihosting: the debugger (or QEMU with -semihosting) services file and console I/O for
 * the target. Only used on boards whose console is "semihosting" (the emulated mps2 boards, or a
 * real board run under a debugger). Without a debugger attached, a semihosting call faults. */
#ifndef TINYC_SEMIHOSTING_H
#define TINYC_SEMIHOSTING_H

#include <stddef.h>
#include <stdint.h>

/* Opens a host file; mode as in the Arm spec (0 = "r", 1 = "rb", 4 = "w", 5 = "wb").
 * ":tt" is the console. Returns a handle >= 0, or -1. */
int32_t tinyc_sh_open(const char *path, uint32_t mode);
int32_t tinyc_sh_close(int32_t handle);
/* Both return the number of bytes NOT transferred (0 = complete), as the spec does. */
int32_t tinyc_sh_write(int32_t handle, const void *buf, size_t len);
int32_t tinyc_sh_read(int32_t handle, void *buf, size_t len);
/* Moves to absolute byte position `pos` of an open file; 0 on success. */
int32_t tinyc_sh_seek(int32_t handle, uint32_t pos);
/* Length of an open file in bytes, or -1. */
int32_t tinyc_sh_flen(int32_t handle);
/* The command line given to the host (QEMU: -append "..."), NUL-terminated. 0 on success. */
int32_t tinyc_sh_cmdline(char *buf, size_t size);
/* Ends the program with an exit status (SYS_EXIT_EXTENDED); does not return. */
void tinyc_sh_exit(int status) __attribute__((noreturn));

#endif /* TINYC_SEMIHOSTING_H */

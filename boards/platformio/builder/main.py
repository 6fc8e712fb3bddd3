# SCons build script of tinyc's offline PlatformIO platform (see boards/platformio/README.md).
#
# Generic Cortex-M: arm-none-eabi tools from PATH; the project's extra script
# lib/tinyc_board/tinyc_flags.py adds the CPU, FPU and link flags (the same script serves the
# official platform's environment, so both build alike). Targets: the ELF, .bin and .hex, the
# size check against the board's upload.maximum_size / maximum_ram_size, and `upload`, which
# runs the project's upload_command.
from SCons.Script import AlwaysBuild, Builder, COMMAND_LINE_TARGETS, Default, DefaultEnvironment

env = DefaultEnvironment()

env.Replace(
    AR="arm-none-eabi-gcc-ar",
    AS="arm-none-eabi-gcc",
    CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++",
    GDB="arm-none-eabi-gdb",
    OBJCOPY="arm-none-eabi-objcopy",
    RANLIB="arm-none-eabi-gcc-ranlib",
    SIZETOOL="arm-none-eabi-size",
    ARFLAGS=["rc"],
    # what PlatformIO's size check counts as flash (program) and RAM (data)
    SIZEPROGREGEXP=r"^(?:\.boot2|\.vectors|\.text|\.rodata|\.ARM\.exidx|\.data)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.bss|\.stack)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGSUFFIX=".elf",
)
if env.get("PROGNAME", "program") == "program":
    env.Replace(PROGNAME="firmware")

env.Append(
    ASFLAGS=["-x", "assembler-with-cpp"],
    BUILDERS=dict(
        ElfToBin=Builder(action=env.VerboseAction(
            "$OBJCOPY -O binary $SOURCES $TARGET", "Building $TARGET"), suffix=".bin"),
        ElfToHex=Builder(action=env.VerboseAction(
            "$OBJCOPY -O ihex $SOURCES $TARGET", "Building $TARGET"), suffix=".hex"),
    ),
)

if "nobuild" in COMMAND_LINE_TARGETS:
    target_elf = "$BUILD_DIR/${PROGNAME}.elf"
    target_bin = "$BUILD_DIR/${PROGNAME}.bin"
    target_hex = "$BUILD_DIR/${PROGNAME}.hex"
else:
    target_elf = env.BuildProgram()
    target_bin = env.ElfToBin("$BUILD_DIR/${PROGNAME}", target_elf)
    target_hex = env.ElfToHex("$BUILD_DIR/${PROGNAME}", target_elf)
    env.Depends(target_bin, "checkprogsize")

AlwaysBuild(env.Alias("nobuild", [target_bin, target_hex]))
target_buildprog = env.Alias("buildprog", [target_bin, target_hex])

target_size = env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"))
AlwaysBuild(target_size)

# The images as SCons nodes, for the placeholders of upload_command (tinyc's pio_command_text):
# SCons names a node relative to the project folder, where the command runs, so the project's
# absolute path (whatever its characters) never reaches the shell.
env.Replace(**{"TINYC_" + ext.upper(): env.File("$BUILD_DIR/${PROGNAME}." + ext)
               for ext in ("elf", "bin", "hex", "uf2")})

if not env.subst("$UPLOADCMD"):
    env.Replace(UPLOADCMD="echo 'tinyc platform: set upload_command in platformio.ini' && false")
upload = env.Alias("upload", [target_elf, target_bin, target_hex],
                   env.VerboseAction("$UPLOADCMD", "Uploading $SOURCE"))
AlwaysBuild(upload)

Default([target_buildprog, target_size])

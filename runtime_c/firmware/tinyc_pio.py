# PlatformIO extra script (pre:) of a tinyc firmware project, used by both environments (tinyc's
# offline platform and the official one), so that they compile alike:
# - CPU/FPU flags from the project options custom_tinyc_cpu / custom_tinyc_fpu;
# - start-up and link flags: no C start files (startup.c is the start-up), newlib-nano, unused
#   sections dropped, a link map;
# - RP2040 (custom_tinyc_boot2 = yes): after linking, the CRC-32 of the 256-byte second-stage
#   boot loader is written into the ELF, and a UF2 image is made for drag-and-drop upload.
import struct


def configure(env):
    cpu = env.GetProjectOption("custom_tinyc_cpu")
    fpu = env.GetProjectOption("custom_tinyc_fpu", "none")
    machine = ["-mcpu=" + cpu, "-mthumb"]
    machine += ["-mfloat-abi=soft"] if fpu == "none" else ["-mfpu=" + fpu, "-mfloat-abi=hard"]
    # the link map beside the ELF, named from the link's target: SCons writes that path relative
    # to the project, so the project's absolute path (any characters) never reaches the shell
    env.Append(
        CCFLAGS=machine + ["-ffunction-sections", "-fdata-sections"],
        ASFLAGS=machine,
        LINKFLAGS=machine + ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
                             "-Wl,-Map,${TARGET.base}.map"],
        LIBS=["m", "c", "gcc"],   # libm: the training loss (logf)
    )
    if env.GetProjectOption("custom_tinyc_boot2", "no") == "yes":
        env.AddPostAction("$BUILD_DIR/${PROGNAME}.elf", rp2040_image)


BOOT2_SIZE = 256
UF2_FAMILY_RP2040 = 0xE48BFF56


def elf_sections(data):
    """name -> (file offset, size, address) of a 32-bit little-endian ELF's sections."""
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    heads = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx][4]
    out = {}
    for h in heads:
        name = data[strtab + h[0]:data.index(b"\0", strtab + h[0])].decode()
        out[name] = (h[4], h[5], h[3])
    return out


def crc32_mpeg2(data):
    """CRC-32 as the RP2040 boot ROM checks it: polynomial 0x04C11DB7, initial value all ones,
    no reflection, no final inversion."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def load_segments(data):
    """(load address, bytes) of the PT_LOAD program headers with file contents."""
    phoff, = struct.unpack_from("<I", data, 0x1C)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x2A)
    segs = []
    for i in range(phnum):
        p_type, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIIII", data, phoff + i * phentsize)
        if p_type == 1 and p_filesz:
            segs.append((p_paddr, data[p_offset:p_offset + p_filesz]))
    return segs


def uf2_image(segments, family):
    """UF2 blocks (512 bytes, 256 payload bytes each) for the flash contents."""
    pages = {}
    for addr, blob in segments:
        for i, b in enumerate(blob):
            a = addr + i
            pages.setdefault(a & ~0xFF, bytearray(b"\xff" * 256))[a & 0xFF] = b
    blocks = []
    for n, base in enumerate(sorted(pages)):
        head = struct.pack("<IIIIIIII", 0x0A324655, 0x9E5D5157, 0x2000, base, 256, n,
                           len(pages), family)
        blocks.append(head + bytes(pages[base]) + b"\0" * (476 - 256) + struct.pack("<I", 0x0AB16F30))
    return b"".join(blocks)


def rp2040_image(target, source, env):
    path = target[0].get_abspath()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    sections = elf_sections(data)
    if ".boot2" not in sections or sections[".boot2"][1] != BOOT2_SIZE:
        raise SystemExit("tinyc: %s has no 256-byte .boot2 section" % path)
    off = sections[".boot2"][0]
    struct.pack_into("<I", data, off + BOOT2_SIZE - 4, crc32_mpeg2(data[off:off + BOOT2_SIZE - 4]))
    with open(path, "wb") as f:
        f.write(data)
    with open(path[:-4] + ".uf2", "wb") as f:
        f.write(uf2_image(load_segments(bytes(data)), UF2_FAMILY_RP2040))
    print("tinyc: RP2040 boot loader CRC written, %s.uf2 made" % path[:-4])


try:   # run by SCons as a PlatformIO extra script
    Import("env")  # noqa: F821
except NameError:   # imported as a module (tinyc's tests)
    pass
else:
    configure(env)  # noqa: F821

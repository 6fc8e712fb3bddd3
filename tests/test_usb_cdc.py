"""The USB CDC-ACM device of the nRF52840 and RP2040 boards (runtime_c/firmware/usb_cdc.c), its
chip-independent part compiled for the host with a fake driver (tests/c/usb_cdc_harness.c).

The host side is played as Linux enumerates a device (GET_DESCRIPTOR device with wLength 64 first,
SET_ADDRESS, the descriptors again, strings, SET_CONFIGURATION, then cdc_acm's SET_LINE_CODING and
SET_CONTROL_LINE_STATE when a program opens the port); the replies are checked against the fields
USB 2.0 chapter 9 and CDC 1.2 / PSTN 1.2 require, and the bulk endpoints against the ring buffers
the console and the link use. Then the device link itself runs over those rings and packets
(tests/c/usb_cdc_link_host.c bridges them to a pty) with tinyc.device on the other end.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "runtime_c" / "firmware"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
EP0 = 64
PACKET = 64
RX_BYTES, TX_BYTES = 256, 512   # usb_cdc.h

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc")


def compile_harness(folder: Path, *defines: str) -> Path:
    exe = folder / "usb_cdc_harness"
    subprocess.run(["gcc", *STRICT, *defines, "-I", str(FIRMWARE), str(FIRMWARE / "usb_cdc.c"),
                    str(ROOT / "tests" / "c" / "usb_cdc_harness.c"), "-o", str(exe)], check=True)
    return exe


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return compile_harness(tmp_path_factory.mktemp("usb_cdc"))


class Device:
    """The harness as a USB device seen from the host: each command returns the driver calls
    it caused (lines)."""

    def __init__(self, exe: Path):
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def cmd(self, text: str) -> list[str]:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"the harness ended during {text!r}: {lines}"
            line = line.strip()
            if line == "ok":
                break
            assert not line.startswith("error"), f"{text}: {line}"
            lines.append(line)
        return lines

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0

    def setup(self, request_type, request, value, index, length) -> list[str]:
        return self.cmd("setup " + struct.pack("<BBHHH", request_type, request, value, index,
                                               length).hex())

    def control_in(self, request_type, request, value, index, length) -> bytes | None:
        """A control read: the data stage packet by packet (the host stops at a short packet or
        at wLength), then the status stage. None if the device stalled."""
        events = self.setup(request_type, request, value, index, length)
        data = b""
        while True:
            if events == ["stall 00 1"]:
                assert data == b""
                return None
            assert len(events) == 1 and events[0].startswith("in 0 "), events
            packet = _hex(events[0].split()[2])
            assert len(packet) <= EP0
            data += packet
            if len(packet) < EP0 or len(data) >= length:
                break
            events = self.cmd("in_done 0")
        assert len(data) <= length
        assert self.cmd("in_done 0") == ["status"]   # the host's zero-length OUT follows
        return data

    def control_out(self, request_type, request, value, index, data: bytes = b"") -> list[str]:
        events = self.setup(request_type, request, value, index, len(data))
        if data:
            assert events == ["arm 0"], events
            events = self.cmd("out 0 " + data.hex())
        return events

    def get_descriptor(self, kind, index, length, lang=0):
        return self.control_in(0x80, 6, kind << 8 | index, lang, length)


def _hex(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


@pytest.fixture
def dev(harness):
    d = Device(harness)
    yield d
    d.close()


def parse_descriptors(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        n = blob[i]
        assert n >= 2 and i + n <= len(blob), f"descriptor at {i}: bLength {n}"
        out.append(blob[i:i + n])
        i += n
    return out


def enumerate_as_linux(dev: Device) -> bytes:
    """What Linux's hub driver does, up to SET_CONFIGURATION; returns the configuration."""
    dev.cmd("reset")
    first = dev.get_descriptor(1, 0, 64)
    assert len(first) == 18   # the device answers its 18 bytes to a 64-byte request (short packet)
    dev.cmd("reset")
    assert dev.setup(0x00, 5, 5, 0, 0) == ["address 5"]
    device = dev.get_descriptor(1, 0, 18)
    assert device == first
    head = dev.get_descriptor(2, 0, 9)
    total = struct.unpack_from("<H", head, 2)[0]
    config = dev.get_descriptor(2, 0, total)
    assert len(config) == total
    langs = dev.get_descriptor(3, 0, 255)
    for i in (device[14], device[15], device[16]):
        if i:
            dev.get_descriptor(3, i, 255, lang=0x0409)
    events = dev.setup(0x00, 9, 1, 0, 0)
    assert events[-2:] == ["status", "arm 2"], events
    assert langs == bytes([4, 3, 0x09, 0x04])
    return config


def test_device_descriptor(dev):
    d = dev.get_descriptor(1, 0, 64)
    (length, kind, bcd_usb, cls, sub, proto, mps0, vid, pid, bcd_dev, i_man, i_prod, i_ser,
     n_conf) = struct.unpack("<BBHBBBBHHHBBBB", d)
    assert (length, kind) == (18, 1)
    assert bcd_usb == 0x0200
    assert (cls, sub, proto) == (0xEF, 0x02, 0x01)   # IAD device class triple (USB IAD ECN)
    assert mps0 == 64   # full speed: 8, 16, 32 or 64
    assert n_conf == 1 and i_man and i_prod and vid
    # a reply shorter than wLength: 18 B in one short packet; cut to wLength 8 (Windows' first ask)
    assert dev.get_descriptor(1, 0, 8) == d[:8]


def test_linux_enumeration_configuration(dev):
    config = enumerate_as_linux(dev)
    descs = parse_descriptors(config)
    head = descs[0]
    length, kind, total, n_if, value, i_conf, attributes, max_power = struct.unpack("<BBHBBBBB", head)
    assert (length, kind) == (9, 2) and total == len(config) == sum(len(d) for d in descs)
    assert n_if == 2 and value == 1
    assert attributes & 0x80   # bit 7 is reserved as one
    assert 0 < max_power <= 250
    kinds = [d[1] for d in descs]
    assert kinds.count(4) == n_if
    iad = descs[1]
    assert (iad[0], iad[1]) == (8, 11)
    assert tuple(iad[2:7]) == (0, 2, 0x02, 0x02, 0x00)   # interfaces 0-1, CDC ACM
    # each interface, its class-specific descriptors and bNumEndpoints endpoints
    interfaces = {}
    for d in descs[2:]:
        if d[1] == 4:
            assert len(d) == 9
            current = interfaces.setdefault(d[2], {"desc": d, "eps": [], "cs": []})
        elif d[1] == 5:
            assert len(d) == 7
            current["eps"].append(d)
        elif d[1] == 0x24:
            current["cs"].append(d)
        else:
            pytest.fail(f"unexpected descriptor {d.hex()}")
    comm, data = interfaces[0], interfaces[1]
    assert tuple(comm["desc"][4:8]) == (1, 0x02, 0x02, 0x00)    # 1 endpoint, CDC, ACM
    assert tuple(data["desc"][4:8]) == (2, 0x0A, 0x00, 0x00)    # 2 endpoints, CDC data
    subtypes = {d[2]: d for d in comm["cs"]}
    assert comm["cs"][0][2] == 0x00 and struct.unpack_from("<H", comm["cs"][0], 3)[0] == 0x0120
    assert len(subtypes[0x01]) == 5 and subtypes[0x01][4] == 1   # call management: data if 1
    assert len(subtypes[0x02]) == 4 and subtypes[0x02][3] & 0x02   # ACM: line coding, lines
    assert tuple(subtypes[0x06][3:]) == (0, 1)                    # union: 0 controls 1
    (notify,) = comm["eps"]
    assert notify[2] == 0x81 and notify[3] & 3 == 3 and notify[6] >= 1
    eps = {e[2]: e for e in data["eps"]}
    assert set(eps) == {0x02, 0x82}
    for e in eps.values():
        assert e[3] & 3 == 2 and struct.unpack_from("<H", e, 4)[0] == PACKET
    assert dev.cmd("state") == ["state 1 0"]   # configured; no program has the port yet


def test_set_configuration_opens_the_described_endpoints(dev):
    dev.cmd("reset")
    events = dev.setup(0x00, 9, 1, 0, 0)
    assert events == ["ep_open 81 3 8", "ep_open 02 2 64", "ep_open 82 2 64", "status", "arm 2"]
    assert dev.control_in(0x80, 8, 0, 0, 1) == b"\x01"          # GET_CONFIGURATION
    assert dev.control_in(0x80, 0, 0, 0, 2) == b"\x00\x00"      # GET_STATUS device
    assert dev.control_in(0x82, 0, 0, 0x82, 2) == b"\x00\x00"   # GET_STATUS endpoint
    assert dev.control_in(0x81, 0, 0, 1, 2) == b"\x00\x00"      # GET_STATUS interface 1
    assert dev.control_in(0x81, 0, 0, 2, 2) is None               # no interface 2: stall
    assert dev.setup(0x00, 9, 2, 0, 0) == ["stall 00 1"]       # no configuration 2
    assert dev.setup(0x00, 9, 0, 0, 0) == ["status"]
    assert dev.cmd("state") == ["state 0 0"]


def test_strings_and_stalls(dev):
    dev.cmd("reset")
    device = dev.get_descriptor(1, 0, 18)
    for index in (device[14], device[15]):
        s = dev.get_descriptor(3, index, 255, lang=0x0409)
        assert s[1] == 3 and s[0] == len(s) and len(s) % 2 == 0 and len(s) > 2
        assert s[2:].decode("utf-16-le").isprintable()
    assert "tinyc" in dev.get_descriptor(3, device[15], 255, 0x0409)[2:].decode("utf-16-le")
    # cut to wLength (Windows asks 2 bytes first)
    assert len(dev.get_descriptor(3, device[15], 2, 0x0409)) == 2
    assert dev.get_descriptor(3, 7, 255, 0x0409) is None   # no such string
    assert dev.get_descriptor(6, 0, 10) is None            # device qualifier: full speed only
    assert dev.get_descriptor(7, 0, 9) is None             # other speed configuration
    assert dev.get_descriptor(2, 1, 9) is None             # one configuration only
    assert dev.setup(0x40, 1, 0, 0, 0) == ["stall 00 1"]   # vendor request
    assert dev.setup(0x21, 0x20, 0, 0, 9) == ["stall 00 1"]   # SET_LINE_CODING of 9 bytes
    # a stall ends at the next SETUP: the device answers again
    assert len(dev.get_descriptor(1, 0, 64)) == 18


def test_control_read_of_whole_packets_ends_with_a_zero_length_packet(tmp_path):
    """A reply of exactly 64 bytes to a longer wLength needs a zero-length packet to end the
    data stage (USB 2.0 5.5.3); to wLength 64 it does not. A 31-character product string is a
    64-byte descriptor."""
    product = "x" * 31
    dev = Device(compile_harness(tmp_path, f'-DUSB_CDC_PRODUCT="{product}"'))
    try:
        dev.cmd("reset")
        index = dev.get_descriptor(1, 0, 18)[15]
        events = dev.setup(0x80, 6, 3 << 8 | index, 0x0409, 255)
        assert len(events) == 1 and len(_hex(events[0].split()[2])) == 64
        assert dev.cmd("in_done 0") == ["in 0 -"]        # the zero-length packet
        assert dev.cmd("in_done 0") == ["status"]
        s = dev.get_descriptor(3, index, 64, 0x0409)     # exactly wLength: no ZLP
        assert s[0] == 64 and s[2:].decode("utf-16-le") == product
    finally:
        dev.close()


def test_line_coding_and_control_lines(dev):
    enumerate_as_linux(dev)
    coding = struct.pack("<IBBB", 9600, 0, 0, 8)
    assert dev.control_out(0x21, 0x20, 0, 0, coding) == ["status"]
    assert dev.control_in(0xA1, 0x21, 0, 0, 7) == coding
    assert dev.cmd("state") == ["state 1 0"]
    assert dev.control_out(0x21, 0x22, 3, 0) == ["status"]   # DTR and RTS: a program opened it
    assert dev.cmd("state") == ["state 1 1"]
    assert dev.control_out(0x21, 0x22, 0, 0) == ["status"]
    assert dev.cmd("state") == ["state 1 0"]


def open_port(dev):
    enumerate_as_linux(dev)
    dev.control_out(0x21, 0x20, 0, 0, struct.pack("<IBBB", 115200, 0, 0, 8))
    dev.control_out(0x21, 0x22, 3, 0)


def test_bulk_out_reaches_the_reader_with_flow_control(dev):
    open_port(dev)
    data = bytes(range(256)) * 2
    # the ring takes RX_BYTES: four packets; the fifth is NAKed until the reader makes room
    for k in range(RX_BYTES // PACKET):
        events = dev.cmd(f"out 2 {data[k * PACKET:(k + 1) * PACKET].hex()}")
        assert events == (["arm 2"] if k < RX_BYTES // PACKET - 1 else []), (k, events)
    assert dev.cmd(f"out 2 {data[256:320].hex()}") == ["nak 2"]
    events = dev.cmd("read 100")
    assert events == ["arm 2", "read " + data[:100].hex()]   # re-armed once 64 B are free
    assert dev.cmd(f"out 2 {data[256:320].hex()}") == []   # 36 B free: wait again
    events = dev.cmd("read 1000")
    assert events[0] == "arm 2"
    got = _hex(events[1].split()[1])
    assert dev.cmd(f"out 2 {data[320:331].hex()}") == ["arm 2"]   # a short packet
    got += _hex(dev.cmd("read 1000")[-1].split()[1])
    assert data[:100] + got == data[:331]
    assert dev.cmd("read 5") == ["read -"]


def bulk_in_packets(events):
    return [_hex(e.split()[2]) for e in events if e.startswith("in 2 ")]


def drain(dev) -> list[bytes]:
    packets = []
    while True:
        got = bulk_in_packets(dev.cmd("in_done 2"))
        if not got:
            return packets
        packets += got


def test_bulk_in_packets_and_zero_length_packet(dev):
    open_port(dev)
    msg = bytes(range(150))
    events = dev.cmd("write " + msg.hex())
    assert events[-1] == "wrote 150"
    packets = bulk_in_packets(events) + drain(dev)
    assert [len(p) for p in packets] == [64, 64, 22]
    assert b"".join(packets) == msg
    # a write of whole packets ends with a zero-length packet, so the host's read returns
    msg = bytes(range(128))
    packets = bulk_in_packets(dev.cmd("write " + msg.hex())) + drain(dev)
    assert [len(p) for p in packets] == [64, 64, 0] and b"".join(packets) == msg


def test_large_write_waits_for_the_host(dev):
    open_port(dev)
    msg = bytes((i * 7) & 0xFF for i in range(2000))
    events = dev.cmd("write " + msg.hex())
    assert events[-1] == "wrote 2000"
    assert "host_takes 2" in events    # the ring was full: usb_cdc_write waited for the host
    packets = bulk_in_packets(events) + drain(dev)
    assert all(len(p) <= PACKET for p in packets)
    assert b"".join(packets) == msg
    events = dev.cmd("write 41")
    assert bulk_in_packets(events) == [b"A"]
    assert dev.cmd("flush")[-1] == "flushed"


def test_nobody_listening_drops_instead_of_blocking(dev):
    """Configured but no program has the port (no DTR): the console's text fills the ring and
    the rest is dropped; the device never waits for a host that does not read."""
    enumerate_as_linux(dev)
    msg = bytes(i & 0xFF for i in range(1500))
    events = dev.cmd("write " + msg.hex())
    queued = int(events[-1].split()[1])
    assert queued == TX_BYTES   # the ring full, the rest dropped
    assert dev.cmd("flush") == ["flushed"]
    # when a program opens the port, what was kept goes out in order
    dev.control_out(0x21, 0x22, 1, 0)
    # (its first packet waits on the endpoint since the write; the host takes it, then the rest)
    assert b"".join(drain(dev)) == msg[PACKET:queued]
    # not configured at all (unplugged): nothing goes out, writes never block
    dev.cmd("reset")
    assert dev.cmd("write " + msg[:600].hex())[-1].startswith("wrote ")


def test_endpoint_halt(dev):
    open_port(dev)
    assert dev.setup(0x02, 3, 0, 0x82, 0) == ["stall 82 1", "status"]   # SET_FEATURE(HALT)
    assert dev.control_in(0x82, 0, 0, 0x82, 2) == b"\x01\x00"
    assert bulk_in_packets(dev.cmd("write 4142")) == []                 # held while halted
    events = dev.setup(0x02, 1, 0, 0x82, 0)                              # CLEAR_FEATURE(HALT)
    assert events[0] == "stall 82 0" and bulk_in_packets(events) == [b"AB"]
    assert dev.control_in(0x82, 0, 0, 0x82, 2) == b"\x00\x00"
    assert dev.setup(0x02, 3, 0, 0x83, 0) == ["stall 00 1"]            # no endpoint 3


FIRMWARE_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]   # platformio.ini.j2's
CPU_FLAGS = {"cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
             "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"]}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
@pytest.mark.parametrize("board_id, console", [("nano33ble", "nrf52_usb"), ("nano33ble", "nrf52_uart"),
                                               ("pico", "rp2040_usb"), ("pico", "rp2040_uart")])
def test_native_usb_boards_compile_both_consoles(board_id, console, tmp_path):
    """The Nano 33 BLE and the Pico default to the USB console; the board file's console key
    keeps their UART instead. Each choice's board sources (the project tinyc build writes)
    compile warning-free for the chip (the default one is also linked: test_device_storage.py)."""
    import dataclasses

    import numpy as np
    from tinyc.targets.boards import load_board
    from tinyc.targets.platformio import write_project

    board = load_board(board_id)
    assert board.firmware.console == {"nano33ble": "nrf52_usb", "pico": "rp2040_usb"}[board_id]
    board = dataclasses.replace(board, firmware=dataclasses.replace(board.firmware, console=console))
    out = tmp_path / "p"
    (out / "lib" / "tinyc_model").mkdir(parents=True)
    (out / "lib" / "tinyc_model" / "model.c").write_text("/* stand-in */\n")
    write_project(out, board, "m", np.zeros((1, 2, 2, 1), np.int8), "zeros")
    lib = out / "lib" / "tinyc_board"
    usb = console.endswith("_usb")
    assert (lib / "usb_cdc.c").is_file() == usb
    assert ("TINYC_BOARD_USB_IRQ" in (lib / "tinyc_board_config.h").read_text()) == usb
    sources = sorted(lib.glob("*.c"))
    subprocess.run(["arm-none-eabi-gcc", *CPU_FLAGS[board.cpu], *FIRMWARE_FLAGS, "-c",
                    "-I", str(lib), *map(str, sources)], cwd=tmp_path, check=True)
    objects = {p.stem for p in tmp_path.glob("*.o")}
    assert f"console_{console}" in objects and ("usb_cdc" in objects) == usb


def test_device_link_runs_over_the_usb_cdc_rings(small_nets, tmp_path):
    """The device link (tinyc_link.c) served over usb_cdc.c's rings and 64-byte bulk packets
    (a fake driver bridging them to a pty, tests/c/usb_cdc_link_host.c), with tinyc.device on
    the other end: INFO, and INFER of a whole input (several packets each way) answer as the
    host build does; broken frames are answered and the link goes on."""
    import numpy as np

    from conftest import tinyc
    from tinyc.device import Device
    from tinyc.targets.host import build_host, run_host

    out = tmp_path / "b"
    tinyc("build", small_nets["gray_odd"], "--board", "mps2_an386", "--no-firmware", "-o", out)
    exe = tmp_path / "link_host"
    kernels = sorted(str(p) for p in (out / "tinyc").glob("*.c"))
    subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(out),
                    "-I", str(ROOT / "runtime_c" / "src" / "link"), "-I", str(FIRMWARE),
                    str(out / "model.c"), *kernels, str(ROOT / "runtime_c" / "src" / "link" / "tinyc_link.c"),
                    str(FIRMWARE / "usb_cdc.c"), str(ROOT / "tests" / "c" / "usb_cdc_link_host.c"),
                    "-o", str(exe)], check=True)
    build_host(out)
    proc = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty = proc.stdout.readline().strip()
        assert pty.startswith("/dev/"), proc.stderr.read()
        with Device(pty, timeout=20) as dev:
            info = dev.connect()
            assert info.build_id == 0x12345678
            rng = np.random.default_rng(0)
            assert info.input_size > 2 * 64   # a request of several packets
            xs = rng.integers(-128, 128, (3, info.input_size)).astype(np.int8)
            ys = [dev.infer(x)[0] for x in xs]
            dev.send_raw(b"noise\r\n" + bytes([0xA5, 1, 0x7E, 0, 0, 1, 2, 3, 4]))   # bad CRC
            kind, _ = dev.read_frame()
            assert kind == 0xFF                                                   # an error
            assert dev.connect().build_id == info.build_id
        expected = run_host(out, xs)
        for y, e in zip(ys, expected):
            assert np.array_equal(np.asarray(y).reshape(-1), np.asarray(e).reshape(-1))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 3, proc.stderr.read()


def test_stack_bound_counts_the_usb_handler_and_its_recursion(tmp_path):
    """The worst-case stack (targets/stack.py) adds the deepest interrupt handler, the USB one
    included, and a recursion inside a handler makes the bound unknown, as one on the main path
    does (a driver calling back into usb_cdc.c did that once)."""
    from tinyc.targets.stack import EXCEPTION_FRAME_BYTES, worst_case_stack

    def write_ci(name, frames, edges):
        lines = [f'node: {{ title: "{f}" label: "{f}\\nx.c:1:1\\n{b} bytes (static)" }}'
                 for f, b in frames.items()]
        lines += [f'edge: {{ sourcename: "{a}" targetname: "{b}" }}' for a, b in edges]
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    write_ci("main.ci", {"tinyc_reset_handler": 8, "main": 100, "tinyc_systick_handler": 8},
             [("tinyc_reset_handler", "main")])
    write_ci("usb.ci", {"tinyc_usb_irq_handler": 16, "usb_cdc_out_received": 40,
                        "usb_drv_ep_out_arm": 24}, [("tinyc_usb_irq_handler", "usb_cdc_out_received"),
                                                    ("usb_cdc_out_received", "usb_drv_ep_out_arm")])
    bound = worst_case_stack(tmp_path, has_fpu=False)
    assert bound.bytes == 108 + 16 + 40 + 24 + EXCEPTION_FRAME_BYTES[False]
    write_ci("usb.ci", {"tinyc_usb_irq_handler": 16, "usb_cdc_out_received": 40,
                        "usb_drv_ep_out_arm": 24}, [("tinyc_usb_irq_handler", "usb_cdc_out_received"),
                                                    ("usb_cdc_out_received", "usb_drv_ep_out_arm"),
                                                    ("usb_drv_ep_out_arm", "usb_cdc_out_received")])
    bound = worst_case_stack(tmp_path, has_fpu=False)
    assert bound.bytes is None and "recursion" in bound.unknown

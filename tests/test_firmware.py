"""Firmware: boards, the generated PlatformIO project built offline on every board, memory read
from the ELF and checked, QEMU runs bit-exact with the host build, the demo's printed output,
stack overflow and hang detection, and `tinyc flash`.

Tests that need arm-none-eabi-gcc, PlatformIO or qemu-system-arm skip with the reason when they
are absent (`make test` installs them)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_clean_failure, refused_report, shared_model, tinyc
from tinyc.targets.boards import list_boards, load_board
from tinyc.targets.elf import Elf, memory_usage
from tinyc.targets.host import run_host
from tinyc.targets.platformio import ELF_PATH, toolchain_missing

ROOT = Path(__file__).resolve().parents[1]
BOARD_IDS = ["disco_f746ng", "mps2_an386", "mps2_an500", "nano33ble", "nucleo_f411re", "pico"]
QEMU_BOARDS = ["mps2_an386", "mps2_an500"]

needs_toolchain = pytest.mark.skipif(
    toolchain_missing() is not None,
    reason=f"firmware builds need the Arm toolchain and PlatformIO: {toolchain_missing()} "
           "(`make test` installs them)")
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None,
    reason="qemu-system-arm not found (apt-get install --no-install-recommends qemu-system-arm; "
           "`make test` installs it)")




def tinyc_pio():
    """runtime_c/firmware/tinyc_pio.py (a PlatformIO extra script) imported as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tinyc_pio", ROOT / "runtime_c" / "firmware" / "tinyc_pio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(n, shape=(3, 32, 24), seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npy"
    np.save(path, inputs(6, seed=0))
    return path


@pytest.fixture(scope="module")
def an386_build(request):
    """mbv2_block (softmax output) built for mps2_an386 through the CLI (conftest's session build,
    the same as the offline build test's for mps2_an386)."""
    if toolchain_missing():
        pytest.skip(toolchain_missing())
    return request.getfixturevalue("an386_inference_build")


@pytest.fixture(scope="module")
def board_build(small_nets, calib, tmp_path_factory, request):
    """board id -> mbv2_block built for it through the CLI, once in this module (the offline
    build test checks each; the flash tests read them). What the build printed is in the file
    beside the folder, OUT.stdout."""
    built = {}

    def get(board_id):
        if board_id not in built:
            if board_id == "mps2_an386":
                built[board_id] = request.getfixturevalue("an386_build")
            else:
                out = tmp_path_factory.mktemp(board_id) / "o"
                res = tinyc("build", small_nets["mbv2_block"], "--board", board_id, "-o", out,
                            "--calib", calib)
                (out.parent / "o.stdout").write_text(res.stdout)
                built[board_id] = out
        return built[board_id]
    return get


# ------------------------------------------------------------------------ boards

def test_boards_schema():
    boards = {b.id: b for b in list_boards()}
    assert sorted(boards) == BOARD_IDS
    for b in boards.values():
        assert Path(b.path).stem == b.id
        m = b.memory
        assert m is not None and b.firmware is not None and b.f_cpu > 0
        assert b.sram_bytes <= m.ram_length and b.flash_bytes <= m.flash_length
        assert b.sram_bytes <= b.sram_total_bytes and b.flash_bytes <= b.flash_total_bytes
        assert b.stack_reserve_bytes % 8 == 0 and b.stack_reserve_bytes < b.sram_bytes
        assert b.protocols and b.protocol().name == b.upload_default
        assert b.emulated == bool(b.qemu_machine) == (b.firmware.console == "semihosting")
        if not b.emulated:
            assert b.platformio["platform"] and b.platformio["board"]
    assert (boards["nano33ble"].sram_total_bytes, boards["nano33ble"].flash_total_bytes) == (256 << 10, 1 << 20)
    assert boards["nano33ble"].memory.flash_origin == 0x10000   # after the Arduino boot loader
    assert (boards["nucleo_f411re"].sram_bytes, boards["nucleo_f411re"].flash_bytes) == (128 << 10, 512 << 10)
    assert boards["pico"].cpu == "cortex-m0plus" and boards["pico"].fpu == "none" and boards["pico"].boot2
    assert boards["mps2_an386"].sram_bytes == 256 << 10 and boards["mps2_an386"].fpu == "fpv4-sp-d16"
    assert boards["mps2_an500"].cpu == "cortex-m7" and boards["mps2_an500"].memory.ram_origin == 0x20400000
    assert boards["disco_f746ng"].cpu == "cortex-m7" and boards["disco_f746ng"].memory.flash_origin == 0x08000000


def test_boards_command_lists_memory():
    out = tinyc("boards").stdout
    for b in list_boards():
        line = next(ln for ln in out.splitlines() if ln.startswith(b.id + " "))
        assert f"{b.sram_bytes // 1024} KB" in line and f"{b.flash_bytes // 1024} KB" in line
        assert b.cpu in line
    verbose = tinyc("boards", "-v").stdout
    assert "RAM 0x20400000" in verbose and "platform ststm32" in verbose and "picotool" in verbose


def test_bad_board_files_fail_cleanly(small_nets, tmp_path):
    text = (ROOT / "boards" / "mps2_an386.toml").read_text()
    cases = {"fpu": text.replace('fpu = "fpv4-sp-d16"', 'fpu = "fpv5-d16"'),
             "sram_bytes": text.replace("sram_bytes = 262144", "sram_bytes = 1048576"),
             "stack_reserve_bytes": text.replace("stack_reserve_bytes = 8192", "stack_reserve_bytes = 100"),
             "missing field 'cpu'": text.replace('cpu = "cortex-m4"', ""),
             "not valid TOML": text + "\n[[[",
             "console": text.replace('console = "semihosting"', 'console = "lcd"')}
    for expect, body in cases.items():
        path = tmp_path / "b.toml"
        path.write_text(body)
        res = tinyc("build", small_nets["fc_only"], "--board", path, "-o", tmp_path / "o", check=False)
        assert_clean_failure(res, expect)


# ------------------------------------------------------------------------ offline builds

@needs_toolchain
@pytest.mark.parametrize("board_id", BOARD_IDS)
def test_every_board_builds_offline(board_id, board_build):
    board = load_board(board_id)
    out = board_build(board_id)
    assert "firmware   RAM" in out.with_name(out.name + ".stdout").read_text()
    rep = json.loads((out / "report.json").read_text())
    fw = rep["firmware"]
    assert fw["built"] and fw["ram_limit_bytes"] == board.sram_bytes
    elf = Elf(out / ELF_PATH)
    sec = {s.name: s for s in elf.sections}
    # the memory map: vector table (or RP2040 boot stage) first in flash, RAM sections in RAM
    first = ".boot2" if board.boot2 else ".vectors"
    assert sec[first].addr == board.memory.flash_origin
    for name in (".data", ".bss", ".stack"):
        assert board.memory.ram_origin <= sec[name].addr < board.memory.ram_origin + board.memory.ram_length
    assert sec[".stack"].size == board.stack_reserve_bytes
    # the report's figures are the ELF's: RAM = .data + .bss + stack (+ alignment), arena inside .bss
    data_bss_stack = sec[".data"].size + sec[".bss"].size + sec[".stack"].size
    ram_span = sec[".stack"].addr + sec[".stack"].size - min(sec[".data"].addr, sec[".bss"].addr)
    assert data_bss_stack <= fw["ram_bytes"] == ram_span   # alignment gaps (stack guard) included
    assert fw["arena_bytes"] == rep["inference"]["arena_bytes"] <= sec[".bss"].size
    assert fw["flash_bytes"] == sum(s.size for s in elf.sections if s.alloc and not s.nobits)
    assert fw["ram_bytes"] <= board.sram_bytes and fw["flash_bytes"] <= board.flash_bytes
    # the DSP kernel variant (SMLAD) is compiled in exactly where the core has the extension
    disasm = subprocess.run(["arm-none-eabi-objdump", "-d", str(out / ELF_PATH)],
                            capture_output=True, text=True, check=True).stdout
    assert ("smlad" in disasm) == (board.cpu in ("cortex-m4", "cortex-m7")), board.cpu
    # only the kernels the model uses are in the library (data.c: the window copies of a patch
    # schedule, which --patch auto picks for this net)
    kernels = sorted(p.name for p in (out / "lib" / "tinyc_model" / "tinyc").glob("*.c"))
    windows = any(r["op"] in ("crop", "paste") for r in rep["ops"])
    assert windows == rep["inference"]["patch"]["enabled"]
    assert "pool.c" in kernels and ("data.c" in kernels) == windows
    ini = (out / "platformio.ini").read_text()
    assert "[env:tinyc]" in ini and "symlink://" in ini
    if board.emulated:
        assert "[env:" + board_id not in ini and (out / "samples.bin").is_file()
    else:
        assert f"platform = {board.platformio['platform']}" in ini
        assert (out / "src" / "samples.c").is_file()
    if board.boot2:
        crc32_mpeg2 = tinyc_pio().crc32_mpeg2
        raw = (out / ELF_PATH).read_bytes()
        boot = raw[sec[".boot2"].offset:sec[".boot2"].offset + 256]
        assert int.from_bytes(boot[252:], "little") == crc32_mpeg2(boot[:252])
        uf2 = (out / ".pio" / "build" / "tinyc" / "firmware.uf2").read_bytes()
        assert len(uf2) % 512 == 0 and uf2[:4] == b"UF2\n"


@needs_toolchain
def test_elf_figures_match_arm_size(an386_build):
    """Our ELF reader against binutils' size (sysv format)."""
    res = subprocess.run(["arm-none-eabi-size", "-A", "-d", str(an386_build / ELF_PATH)],
                         capture_output=True, text=True, check=True)
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)\s+\d+$", res.stdout, re.M)}
    elf = Elf(an386_build / ELF_PATH)
    for s in elf.sections:
        if s.name in sizes:
            assert s.size == sizes[s.name], s.name
    usage = memory_usage(elf, 0x20000000, 262144)
    assert usage["ram_sections"] == {k: sizes[k] for k in (".data", ".bss", ".stack")}
    # and the symbol sizes against nm --size-sort (the consumers named when a firmware is refused)
    res = subprocess.run(["arm-none-eabi-nm", "--size-sort", "-S", str(an386_build / ELF_PATH)],
                         capture_output=True, text=True, check=True)
    nm = {f[3]: int(f[1], 16) for f in (ln.split() for ln in res.stdout.splitlines())
          if len(f) == 4 and f[2] in "tTbBdDrR"}
    ours = {s.name: s.size for s in elf.symbols()}
    assert ours["tinyc_arena"] == nm["tinyc_arena"] > 0
    assert {k: v for k, v in ours.items() if k in nm} == {k: nm[k] for k in ours if k in nm}
    assert len(set(ours) & set(nm)) > 20


def test_crc32_and_uf2_helpers():
    crc32_mpeg2, uf2_image = tinyc_pio().crc32_mpeg2, tinyc_pio().uf2_image
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7          # the CRC-32/MPEG-2 check value
    img = uf2_image([(0x10000000, bytes(range(256)) * 2), (0x10000300, b"\x01\x02")], 0xE48BFF56)
    assert len(img) == 3 * 512
    for i, base in enumerate((0x10000000, 0x10000100, 0x10000300)):
        block = img[i * 512:(i + 1) * 512]
        assert int.from_bytes(block[12:16], "little") == base
        assert int.from_bytes(block[20:24], "little") == i and int.from_bytes(block[24:28], "little") == 3
        assert block[-4:] == (0x0AB16F30).to_bytes(4, "little")


def test_no_firmware_writes_only_the_library(small_nets, tmp_path):
    out = tmp_path / "o"
    tinyc("build", small_nets["fc_only"], "--board", "nucleo_f411re", "-o", out, "--no-firmware")
    assert (out / "model.c").is_file() and (out / "model.h").is_file()
    assert not (out / "platformio.ini").exists() and not (out / "lib").exists()
    assert sorted(p.name for p in (out / "tinyc").glob("*.c")) == ["fully_connected.c", "softmax.c"]
    assert "firmware" not in json.loads((out / "report.json").read_text())


@needs_toolchain
def test_switching_layouts_in_one_folder_leaves_no_stale_model(small_nets, tmp_path):
    out = tmp_path / "o"
    tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", out, "--no-firmware")
    tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", out)
    assert not (out / "model.c").exists() and (out / "lib" / "tinyc_model" / "model.c").is_file()
    tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", out, "--no-firmware")
    assert (out / "model.c").is_file() and not (out / "platformio.ini").exists()
    assert not (out / "lib" / "tinyc_model").exists()


@needs_toolchain
def test_samples_option_reaches_the_firmware(small_nets, tmp_path):
    """--samples: int8 inputs taken as they are, in samples.bin (emulated boards) or compiled
    into flash (real boards)."""
    x = np.random.default_rng(3).integers(-128, 128, (3, 16, 1, 1)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", tmp_path / "e",
          "--samples", tmp_path / "x.npy")
    assert (tmp_path / "e" / "samples.bin").read_bytes() == np.moveaxis(x, 1, -1).tobytes()
    tinyc("build", small_nets["fc_only"], "--board", "nucleo_f411re", "-o", tmp_path / "r",
          "--samples", tmp_path / "x.npy")
    assert "#define TINYC_NUM_SAMPLES 3" in (tmp_path / "r" / "src" / "samples.h").read_text()
    values = re.findall(r"-?\d+", (tmp_path / "r" / "src" / "samples.c").read_text().split("= {", 1)[1])
    assert [int(v) for v in values] == np.moveaxis(x, 1, -1).ravel().tolist()
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["firmware"]["samples"] == 3 and rep["firmware"]["built"]
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 4), np.float32))
    assert_clean_failure(tinyc("build", small_nets["fc_only"], "--board", "nucleo_f411re", "-o",
                               tmp_path / "b", "--samples", tmp_path / "bad.npy", check=False),
                         "--samples", "(N, 16, 1, 1)")


# ------------------------------------------------------------------------ memory checks

def _fc_net(path: Path, n_in_hw: int, n_out: int) -> Path:
    """Flatten + one fully-connected layer: (3*hw*hw) x n_out int8 weights."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (n_out, 3 * n_in_hw * n_in_hw)).astype(np.float32)
    b = rng.normal(0, 0.05, (n_out,)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)],
        "fc", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, n_in_hw, n_in_hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@needs_toolchain
def test_too_big_for_nucleo_flash_is_refused_with_consumers(tmp_path):
    """Weights of 516 KB pass the weights-only check (512 KB board) but not the firmware's flash
    (code + the demo sample): refused from the link, naming the board, limit and consumers."""
    model = _fc_net(tmp_path / "fc.onnx", 32, 168)
    out = tmp_path / "o"
    res = tinyc("build", model, "--board", "nucleo_f411re", "-o", out, check=False)
    assert_clean_failure(res, "nucleo_f411re", "does not fit", "flash needs", "524,288 B",
                         "biggest flash consumers", "tinyc_w")
    assert not out.exists()   # a refused build writes nothing there
    rep = refused_report(res)
    assert rep["weights_bytes"] <= rep["flash_limit_bytes"]
    assert rep["firmware"]["built"] is False and "flash" in rep["firmware"]["error"]


@needs_toolchain
def test_ram_over_budget_is_refused_from_the_elf(small_nets, calib, tmp_path):
    """A budget below what the ELF needs (but above arena + stack): the ELF check refuses it and
    lists the arena and the stack."""
    probe = tmp_path / "probe"
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", probe, "--calib", calib,
          "--no-firmware")
    need = json.loads((probe / "report.json").read_text())["inference"]["sram_bytes"]
    text = (ROOT / "boards" / "mps2_an386.toml").read_text()
    text = text.replace("sram_bytes = 262144", f"sram_bytes = {need + 8}")
    (tmp_path / "tight.toml").write_text(text.replace('id = "mps2_an386"', 'id = "tight"'))
    res = tinyc("build", small_nets["mbv2_block"], "--board", tmp_path / "tight.toml", "-o",
                tmp_path / "o", "--calib", calib, check=False)
    assert_clean_failure(res, "'tight'", "RAM needs", f"{need + 8:,} B", "tinyc_arena",
                         "stack (the board's stack_reserve_bytes)")


def test_model_too_big_for_nucleo_sram_is_refused_with_breakdown(tmp_path):
    model = shared_model("mcunet-5fps_128")
    # layer by layer: the default patch schedule would fit its arena into the board's SRAM
    res = tinyc("build", model, "--board", "nucleo_f411re", "-o", tmp_path / "o", "--patch", "off",
                check=False)
    assert_clean_failure(res, "nucleo_f411re", "does not fit", "131,072 B", "largest buffers")


# ------------------------------------------------------------------------ QEMU

@needs_toolchain
@needs_qemu
@pytest.mark.parametrize("board_id", QEMU_BOARDS)
@pytest.mark.parametrize("net", ["mbv2_block", "groups_concat", "residual_chain", "big_kernels"])
def test_qemu_output_equals_host_bit_for_bit(board_id, net, small_nets, tmp_path):
    from tinyc.pipeline import import_float
    g = import_float(str(small_nets[net]))
    shape = tuple(g.meta["input_nchw"][1:])
    np.save(tmp_path / "c.npy", inputs(4, shape, seed=2))
    np.save(tmp_path / "x.npy", inputs(3, shape, seed=3))
    out = tmp_path / "o"
    tinyc("build", small_nets[net], "--board", board_id, "-o", out, "--calib", tmp_path / "c.npy")
    res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "yq.npy", "--qemu")
    tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "yh.npy")
    yq, yh = np.load(tmp_path / "yq.npy"), np.load(tmp_path / "yh.npy")
    assert yq.dtype == np.int8 and yq.shape[0] == 3
    assert np.array_equal(yq, yh)
    counts = [int(c.replace(",", "")) for c in re.findall(r"([\d,]+) instructions per inference", res.stdout)]
    assert len(counts) == 3 and all(c > 0 for c in counts)


@needs_toolchain
@needs_qemu
def test_shared_model_on_qemu_equals_host(tmp_path):
    model = shared_model("mbv2-w0.35_96")
    np.save(tmp_path / "c.npy", inputs(4, (3, 96, 96), seed=4))
    np.save(tmp_path / "x.npy", inputs(2, (3, 96, 96), seed=5))
    out = tmp_path / "o"
    tinyc("build", model, "--board", "mps2_an386", "-o", out, "--calib", tmp_path / "c.npy")
    res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "yq.npy", "--qemu")
    tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "yh.npy")
    assert np.array_equal(np.load(tmp_path / "yq.npy"), np.load(tmp_path / "yh.npy"))
    per_mac = [float(v) for v in re.findall(r"\(([\d.]+) per MAC\)", res.stdout)]
    assert len(per_mac) == 2 and 1 < per_mac[0] < 50


@needs_toolchain
@needs_qemu
def test_rebuild_into_the_same_folder_then_qemu(small_nets, calib, tmp_path):
    """An identical rebuild leaves the ELF untouched (SCons rebuilds by content) and still runs;
    a firmware not built from the current model.c is refused."""
    out = tmp_path / "o"
    np.save(tmp_path / "x.npy", inputs(1))
    for _ in range(2):
        tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out, "--calib", calib)
        tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--qemu")
    model_c = out / "lib" / "tinyc_model" / "model.c"
    model_c.write_text(model_c.read_text() + "/* edited */\n")
    res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                "--qemu", check=False)
    assert_clean_failure(res, "not built from the current", "rebuild")


@needs_toolchain
@needs_qemu
def test_instruction_count_is_deterministic(an386_build, tmp_path):
    np.save(tmp_path / "x.npy", inputs(2, seed=7))
    runs = [tinyc("emulate", an386_build, "--input", tmp_path / "x.npy", "--output",
                  tmp_path / f"y{k}.npy", "--qemu").stdout for k in range(2)]
    counts = [re.findall(r"sample \d: ([\d,]+) instructions", r) for r in runs]
    assert counts[0] == counts[1] and len(counts[0]) == 2


@needs_toolchain
@needs_qemu
@pytest.mark.parametrize("board_id", QEMU_BOARDS)
def test_counter_counts_instructions(board_id, small_nets, tmp_path):
    """The SysTick counter under -icount shift=0 is an instruction counter: a loop of 2,000,000
    instructions (tests/firmware/counter_loop.c) reads 2,000,000 give or take one 40-instruction
    tick and the counter's own few instructions."""
    from tinyc.targets.platformio import run_pio
    from tinyc.targets.qemu import qemu_command
    out = tmp_path / "o"
    tinyc("build", small_nets["fc_only"], "--board", board_id, "-o", out)
    shutil.copy(ROOT / "tests" / "firmware" / "counter_loop.c", out / "src" / "main.c")
    run_pio(out)
    res = subprocess.run(qemu_command(load_board(board_id), out / ELF_PATH, ["loop"]),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    loop, empty = map(int, re.fullmatch(r"loop (\d+) empty (\d+)\s*", res.stdout).groups())
    assert 2_000_000 - 40 <= loop <= 2_000_000 + 80, loop
    assert empty <= 80


@needs_toolchain
@needs_qemu
def test_demo_firmware_output_is_parsed(an386_build):
    """`tinyc flash` on an emulated board runs the demo in QEMU on OUT/samples.bin; its printed
    outputs are the host build's on the same samples."""
    from tinyc.targets.qemu import parse_demo_output
    res = tinyc("flash", an386_build)
    demo = parse_demo_output(res.stdout)
    rep = json.loads((an386_build / "report.json").read_text())
    assert "tinyc demo: board mps2_an386, model mbv2_block.onnx, input 32x24x3, output 10" in res.stdout
    assert demo.unit == "instructions" and len(demo.counts) == 1 == demo.done
    assert 0 < demo.stack_used < demo.stack_size == rep["stack_reserve_bytes"] - 32
    h, w, c = 32, 24, 3
    xq = np.fromfile(an386_build / "samples.bin", dtype=np.int8).reshape(-1, h, w, c)
    expect = run_host(an386_build, xq).reshape(len(xq), -1)
    assert demo.outputs == expect.tolist() and demo.argmax == [int(np.argmax(expect[0]))]
    assert sum(expect[0].astype(int) + 128) in range(250, 262)   # softmax: sums to ~256


def small_stack_board(board_id: str, tmp_path: Path, reserve: int = 256) -> Path:
    text = (ROOT / "boards" / f"{board_id}.toml").read_text()
    text = text.replace("stack_reserve_bytes = 8192", f"stack_reserve_bytes = {reserve}")
    path = tmp_path / "small_stack.toml"
    path.write_text(text.replace(f'id = "{board_id}"', 'id = "small_stack"'))
    return path


@needs_toolchain
def test_stack_too_small_for_the_worst_case_is_refused_at_build(small_nets, calib, tmp_path):
    """The worst-case stack from GCC's call graph (-fcallgraph-info) does not fit a 256-byte
    stack: refused at build time with the deepest call chain."""
    res = tinyc("build", small_nets["mbv2_block"], "--board", small_stack_board("mps2_an386", tmp_path),
                "-o", tmp_path / "o", "--calib", calib, check=False)
    # the deepest chain: an inference asked over the device link
    assert_clean_failure(res, "worst-case stack", "224 B", "'small_stack'",
                         "tinyc_reset_handler -> main -> tinyc_link_serve -> tinyc_link_poll -> "
                         "tinyc_run", "Raise stack_reserve_bytes")
    assert not (tmp_path / "o").exists()   # a refused build writes nothing there
    rep = refused_report(res)
    assert rep["firmware"]["built"] is False and "worst-case stack" in rep["firmware"]["error"]


@needs_toolchain
@needs_qemu
@pytest.mark.parametrize("board_id", QEMU_BOARDS)
def test_stack_overflow_is_detected(board_id, small_nets, calib, tmp_path):
    """At run time the MPU guard catches an overflow: the firmware relinked with a 256-byte
    stack (past the build's static check) stops with a clear error."""
    from tinyc.targets.platformio import run_pio
    out = tmp_path / "o"
    tinyc("build", small_nets["mbv2_block"], "--board", board_id, "-o", out, "--calib", calib)
    link = out / "lib" / "tinyc_board" / "link.ld"
    text = link.read_text()
    assert "__tinyc_stack_bottom + 8192;" in text
    link.write_text(text.replace("__tinyc_stack_bottom + 8192;", "__tinyc_stack_bottom + 256;"))
    (out / ELF_PATH).unlink()   # SCons does not relink for a changed linker script
    run_pio(out)
    np.save(tmp_path / "x.npy", inputs(1))
    res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                "--qemu", check=False)
    assert_clean_failure(res, f"'{board_id}'", "stack overflow", "224 bytes", "stack_reserve_bytes")


@needs_toolchain
@needs_qemu
def test_hung_guest_times_out(an386_build, tmp_path):
    from tinyc.errors import TinycError
    from tinyc.targets.platformio import run_pio
    from tinyc.targets.qemu import run_qemu
    hung = tmp_path / "hung"
    shutil.copytree(an386_build, hung, ignore=shutil.ignore_patterns(".pio", ".pio-core"))
    main = hung / "src" / "main.c"
    main.write_text(main.read_text().replace("    tinyc_board_init();\n",
                                             "    tinyc_board_init();\n    for (;;) {\n    }\n", 1))
    run_pio(hung)
    rep = json.loads((hung / "report.json").read_text())
    with pytest.raises(TinycError, match="did not finish within 2 s"):
        run_qemu(hung, load_board("mps2_an386"), rep, np.zeros((1, 32, 24, 3), np.int8), timeout=2)


# ------------------------------------------------------------------------ flash

@needs_toolchain
def test_flash_dry_run_shows_each_boards_command(board_build, tmp_path):
    expect = {
        "nucleo_f411re": (None, None, 'openocd -f board/st_nucleo_f4.cfg -c "program {p}/.pio/build/tinyc/firmware.elf verify reset exit"'),
        "disco_f746ng": ("st-flash", None, "st-flash --reset write {p}/.pio/build/tinyc/firmware.bin 0x08000000"),
        "nano33ble": (None, "/dev/ttyACM0", "bossac --port=/dev/ttyACM0 -U -i -e -w {p}/.pio/build/tinyc/firmware.bin -R"),
        "pico": ("uf2", "/media/u/RPI-RP2", "cp {p}/.pio/build/tinyc/firmware.uf2 /media/u/RPI-RP2/"),
        "mps2_an500": (None, None, "qemu-system-arm -M mps2-an500"),
    }
    for board_id, (proto, port, command) in expect.items():
        out = board_build(board_id)
        args = ["flash", out, "--dry-run"] + (["--protocol", proto] if proto else []) + (["--port", port] if port else [])
        res = tinyc(*args)
        lines = res.stdout.splitlines()
        assert lines[0].startswith(f"PLATFORMIO_CORE_DIR={out.resolve()}/.pio-core ")
        assert lines[0].endswith(f"-m platformio run -d {out.resolve()} -e tinyc -t upload"
                                 + (f" --upload-port {port}" if port else ""))
        assert command.format(p=out.resolve()) in lines[2], res.stdout
    res = tinyc("flash", board_build("nano33ble"), "--dry-run", check=False)
    assert_clean_failure(res, "needs --port")
    np.save(tmp_path / "x.npy", inputs(1))
    res = tinyc("emulate", board_build("nucleo_f411re"), "--input", tmp_path / "x.npy", "--output",
                tmp_path / "y.npy", "--qemu", check=False)
    assert_clean_failure(res, "real hardware", "tinyc flash")
    res = tinyc("flash", board_build("nano33ble"), "--dry-run", "--protocol", "jtag", check=False)
    assert_clean_failure(res, "no upload protocol 'jtag'", "bootloader, pyocd")


@needs_toolchain
def test_flash_without_the_tool_or_the_build_fails_cleanly(small_nets, calib, board_build, tmp_path):
    text = (ROOT / "boards" / "nucleo_f411re.toml").read_text()
    (tmp_path / "b.toml").write_text(text.replace('tool = "openocd"', 'tool = "tinyc-no-such-uploader"')
                                     .replace('command = "openocd', 'command = "tinyc-no-such-uploader'))
    out = tmp_path / "o"
    tinyc("build", small_nets["mbv2_block"], "--board", tmp_path / "b.toml", "-o", out, "--calib", calib)
    assert_clean_failure(tinyc("flash", out, check=False), "nucleo_f411re", "'stlink'",
                         "tinyc-no-such-uploader", "not found", "apt-get install")
    tinyc("build", small_nets["mbv2_block"], "--board", "nucleo_f411re", "-o", tmp_path / "lib",
          "--calib", calib, "--no-firmware")
    assert_clean_failure(tinyc("flash", tmp_path / "lib", check=False), "--no-firmware")
    if shutil.which("openocd") is None:
        assert_clean_failure(tinyc("flash", board_build("nucleo_f411re"), check=False),
                             "openocd", "not found")


# ------------------------------------------------------------------------ training in the firmware

TRAIN_SCHEME = {"bias_last": 3, "weights": {"1": 0, "2": 0.5, "4": 0.25, "5": 0.5}}   # mbv2_block


def labelled(n, shape=(3, 32, 24), classes=4, seed=11):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, *shape)).astype(np.float32), rng.integers(0, classes, n)


@pytest.fixture(scope="module")
def train_build(request):
    """mbv2_block with a partial scheme (TRAIN_SCHEME) and a new 4-class head at lr 0.05, for
    mps2_an386 (conftest's session build)."""
    if toolchain_missing():
        pytest.skip(toolchain_missing())
    return request.getfixturevalue("an386_training_build")


def host_reference(out, x_nchw, y, epochs, lr, eval_xy=None):
    """The host build's training (HostTrainer) on the steps `tinyc emulate --train-data` takes."""
    from tinyc.cli import model_inputs
    from tinyc.targets.firmware_train import TrainingData, host_training
    rep = json.loads((Path(out) / "report.json").read_text())
    ex = (model_inputs(rep, eval_xy[0], "eval"), eval_xy[1]) if eval_xy else (None, None)
    data = TrainingData.make(model_inputs(rep, x_nchw, "x"), y, epochs, lr, *ex)
    return data, host_training(out, data)


@needs_toolchain
@needs_qemu
@pytest.mark.parametrize("board_id", QEMU_BOARDS)
def test_qemu_training_equals_host_bit_for_bit(board_id, small_nets, calib, tmp_path):
    """`tinyc emulate --qemu --train-data`: the training demo under QEMU; after 2 epochs the
    trained int8 weights and int32 biases equal the host build's (same steps, same lr), bit for
    bit, and so does the accuracy. The losses agree to 1e-6 relative: the loss is logf(sum) - z,
    and newlib's logf and the host C library's may differ in the last bit (the gradients, hence
    the parameters, do not use the loss)."""
    from tinyc.targets.qemu import run_qemu_training
    (tmp_path / "scheme.json").write_text(json.dumps(TRAIN_SCHEME))
    out = tmp_path / "o"
    tinyc("build", small_nets["mbv2_block"], "--board", board_id, "-o", out, "--calib", calib,
          "--train", tmp_path / "scheme.json", "--num-classes", "4")
    x, y = labelled(6)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = tinyc("emulate", out, "--qemu", "--train-data", tmp_path / "d.npz", "--epochs", "2",
                "--lr", "0.05", "--save-params", tmp_path / "q.npz")
    assert "host check: after 12 steps the" in res.stdout and "bit-identical" in res.stdout, res.stdout
    assert re.search(r"epoch 2: loss [\d.]+, [\d,]+ instructions per training step", res.stdout)
    # the training guard's counters per epoch, equal to the host build's; a normal run
    assert re.search(r"epoch 2: guard: 0 of 12 steps skipped .*, 0 of \d+ channel updates "
                     r"refused .*\(firmware\)", res.stdout), res.stdout
    tinyc("emulate", out, "--train-data", tmp_path / "d.npz", "--epochs", "2", "--lr", "0.05",
          "--save-params", tmp_path / "h.npz")
    q, h = np.load(tmp_path / "q.npz"), np.load(tmp_path / "h.npz")
    assert sorted(q.files) == sorted(h.files) and len(q.files) >= 8
    for name in h.files:
        assert q[name].dtype == h[name].dtype and np.array_equal(q[name], h[name]), name
    # the same through the API: losses bit for bit, the parameters moved, accuracy equal
    data, host = host_reference(out, x, y, 2, 0.05)
    rep = json.loads((out / "report.json").read_text())
    demo, params = run_qemu_training(out, load_board(board_id), rep, data, timeout=120)
    assert np.max(np.abs(demo.losses - host.losses) / host.losses) <= 1e-6
    assert demo.samples == data.order.tolist() and demo.labels == y[data.order].tolist()
    assert (demo.correct, demo.evaluated) == (host.correct, host.evaluated)
    # each step's rate, computed by the firmware (model.h tinyc_lr_schedule): the build's linear
    # decay over the 12 steps, the same bits as the host's, written out here in float32
    k = np.arange(12).astype(np.float32)
    want = np.float32(0.05) * (np.float32(1) - k / np.float32(12))
    assert demo.lr_schedule == "linear" and demo.rates.tobytes() == want.tobytes()
    assert demo.rates.tobytes() == np.asarray(host.rates, np.float32).tobytes()
    for name, v in host.params.items():
        assert np.array_equal(params[name], v), name
    from tinyc.targets.host import HostTrainer
    with HostTrainer(out) as t:
        initial = t.params()
    assert any(not np.array_equal(initial[k], params[k]) for k in params)
    assert demo.unit == "instructions" and len(demo.counts) == 12 and min(demo.counts) > 0
    # stack: the painted measure of the training steps, below GCC's worst case, inside the reserve
    fw = rep["firmware"]
    assert 0 < demo.train_stack_used <= fw["stack_worst_case_bytes"] <= demo.stack_size
    assert demo.stack_size == rep["stack_reserve_bytes"] - 32
    assert 0 < fw["train_step_stack_bytes"] < fw["stack_worst_case_bytes"]
    assert f"stack: {demo.train_stack_used:,} of {demo.stack_size:,} bytes used by a training step" in res.stdout


# a benchmark (~20 s idle, most of it the 96 px model's training build and QEMU): the firmware's
# training is checked against the host build on both emulated boards with the small net above
# (and by the demo and the device link tests), and the shared models' published schemes train on
# the host build as the reference does (test_train_c.test_shared_model_published_scheme)
@pytest.mark.benchmark
@needs_toolchain
@needs_qemu
def test_qemu_training_of_a_shared_model_equals_host(tmp_path):
    """mbv2-w0.35 at 96 px with the published 49kb scheme and a new 10-class head: 4 training
    steps in the firmware under QEMU == the host build, parameters and losses bit for bit."""
    from tinyc.targets.qemu import run_qemu_training
    model = shared_model("mbv2-w0.35_96")
    scheme = {"bias_last": 16, "weights": {"36": 1, "39": 1, "40": 0, "41": 0.25, "42": 0.125,
                                           "45": 0.125, "48": 0.125, "49": 0.125}}
    (tmp_path / "49kb.json").write_text(json.dumps(scheme))
    np.save(tmp_path / "c.npy", inputs(4, (3, 96, 96), seed=4))
    out = tmp_path / "o"
    tinyc("build", model, "--board", "mps2_an386", "-o", out, "--calib", tmp_path / "c.npy",
          "--train", tmp_path / "49kb.json", "--num-classes", "10")
    rep = json.loads((out / "report.json").read_text())
    assert rep["firmware"]["ram_bytes"] <= 262144
    x, y = labelled(4, (3, 96, 96), classes=10, seed=5)
    data, host = host_reference(out, x, y, 1, 0.02)
    demo, params = run_qemu_training(out, load_board("mps2_an386"), rep, data, timeout=120)
    assert np.max(np.abs(demo.losses - host.losses) / host.losses) <= 1e-6
    assert len(params) == len(host.params) == 25
    for name, v in host.params.items():
        assert np.array_equal(params[name], v), name
    # a step runs the forward (and more): fewer instructions than its MACs means a broken counter
    assert all(rep["macs"] < c < 50 * rep["macs"] for c in demo.counts), (demo.counts, rep["macs"])
    assert demo.train_stack_used <= rep["firmware"]["stack_worst_case_bytes"] <= demo.stack_size


@needs_toolchain
@needs_qemu
def test_training_demo_output_is_parsed(train_build):
    """A training build's demo (`tinyc flash` on an emulated board runs it on OUT/samples.bin:
    the first calibration inputs, labels in turn, 3 epochs at the build's lr): one line per
    step, the accuracy, and the checksum of the trained parameters, which is that of the host
    build trained on the same steps."""
    from tinyc.targets.firmware_train import (HEADER, fnv1a, host_training, params_bytes,
                                              parse_train_output, TrainingData)
    res = tinyc("flash", train_build)
    demo = parse_train_output(res.stdout)
    rep = json.loads((train_build / "report.json").read_text())
    table = json.loads((train_build / "lib" / "tinyc_model" / "train_params.json").read_text())
    assert ("tinyc train demo: board mps2_an386, model mbv2_block.onnx, input 32x24x3, classes 4, "
            f"params {demo.params_bytes} bytes in {len(table)} tensors") in res.stdout
    assert demo.steps_planned == 12 == len(demo.counts) == demo.done and demo.epochs == 3
    assert len(demo.epoch_loss) == 3 and demo.evaluated == 4
    assert demo.params_bytes == sum(p["bytes"] for p in table)
    assert rep["firmware"]["train_demo"] == {"steps": 12, "epochs": 3, "lr": float(np.float32(0.05)),
                                             "lr_schedule": "linear"}
    # samples.bin: the training data file the firmware read
    raw = (train_build / "samples.bin").read_bytes()
    head = HEADER.unpack_from(raw)
    assert head[:8] == (b"TCTD", 1, 32 * 24 * 3, 4, 4, 12, 4, 3)
    assert head[9] == 1   # the schedule: linear (TINYC_LR_LINEAR)
    n, hw = 4, 32 * 24 * 3
    at = HEADER.size
    y = np.frombuffer(raw[at:at + 4 * n], "<i4")
    order = np.frombuffer(raw[at + 4 * n:at + 4 * n + 48], "<u4")
    x = np.frombuffer(raw[-n * hw:], np.int8).reshape(n, 32, 24, 3)
    assert y.tolist() == [0, 1, 2, 3] and demo.samples == order.tolist()
    data = TrainingData(x, y.astype(np.int64), order.astype(np.int64), np.arange(n), 3, 0.05,
                        "linear")
    host = host_training(train_build, data)
    assert demo.params_hash == fnv1a(params_bytes(host.params, table))
    assert np.max(np.abs(demo.losses - host.losses) / host.losses) <= 1e-6
    # the guard's counters after each epoch; after the last, those of the host build
    assert [gd.steps for gd in demo.guard] == [4, 8, 12] and demo.guard[-1] == host.guard
    assert host.guard.updates > 0


@needs_toolchain
@needs_qemu
def test_real_board_training_demo_runs_from_flash(train_build, tmp_path):
    """The real boards' variant of the training demo (data in flash, train_samples.c; repeats
    forever) rendered for the emulated board and run under QEMU: same steps and the same
    parameter checksum as the semihosting variant."""
    import select
    import time
    from tinyc.targets.firmware_train import HEADER, TrainingData, parse_train_output
    from tinyc.targets.platformio import _env, run_pio
    from tinyc.targets.qemu import qemu_command
    board = load_board("mps2_an386")
    out = tmp_path / "o"
    shutil.copytree(train_build, out, ignore=shutil.ignore_patterns(".pio", ".pio-core"))
    raw = (out / "samples.bin").read_bytes()
    _, _, size, _, n, steps, _, epochs, lr, schedule = HEADER.unpack_from(raw)
    at = HEADER.size
    data = TrainingData(np.frombuffer(raw[-n * size:], np.int8).reshape(n, size),
                        np.frombuffer(raw[at:at + 4 * n], "<i4").astype(np.int64),
                        np.frombuffer(raw[at + 4 * n:at + 4 * (n + steps)], "<u4").astype(np.int64),
                        np.arange(n), epochs, float(lr), {0: "constant", 1: "linear"}[schedule])
    env = _env()
    arrays = data.c_arrays(size, 4)
    (out / "src" / "train_samples.h").write_text(env.get_template("firmware/train_samples.h.j2").render(source="test", **arrays))
    (out / "src" / "train_samples.c").write_text(env.get_template("firmware/train_samples.c.j2").render(source="test", **arrays))
    (out / "src" / "main.c").write_text(env.get_template("firmware/train_main.c.j2").render(
        board=board, model_name="mbv2_block.onnx", semihosting=False, repeat_seconds=2))
    run_pio(out)
    expect = parse_train_output(tinyc("flash", train_build).stdout)
    proc = subprocess.Popen(qemu_command(board, out / ELF_PATH, ["firmware"]), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    raw_out, deadline = b"", time.time() + 60
    try:   # the demo repeats forever: read until its first run is done
        while b"\ndone " not in raw_out and time.time() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                raw_out += chunk
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    text = raw_out.decode()
    got = parse_train_output(text.split("\ndone ")[0] + "\ndone " + text.split("\ndone ")[1].split("\n")[0])
    assert got.done == 12, text
    assert got.loss_bits == expect.loss_bits and got.samples == expect.samples
    assert got.params_hash == expect.params_hash and got.correct == expect.correct


@needs_toolchain
@pytest.mark.parametrize("board_id", ["nucleo_f411re", "pico"])
def test_real_boards_build_the_training_demo(board_id, real_board_training_build):
    """Real boards (STM32F4; RP2040 without an FPU: soft float) build the training firmware
    offline with the labelled samples of --samples (x and y) in flash (conftest's build, which
    the storage test of the board reads too)."""
    _, y = labelled(3, classes=4, seed=2)   # the samples of the build
    out = real_board_training_build(board_id)
    stdout = (out.parent / f"{board_id}.stdout").read_text()
    assert "tinyc_train_step" in stdout   # the stack line names the training step's need
    rep = json.loads((out / "report.json").read_text())
    fw = rep["firmware"]
    assert fw["built"] and fw["ram_bytes"] <= load_board(board_id).sram_bytes
    assert fw["train_demo"]["steps"] == 9 and fw["samples"] == 3
    h = (out / "src" / "train_samples.h").read_text()
    assert "#define TINYC_TRAIN_SAMPLES 3u" in h and "#define TINYC_TRAIN_EPOCHS 3u" in h
    c = (out / "src" / "train_samples.c").read_text()
    labels = c.split("tinyc_train_labels[TINYC_TRAIN_SAMPLES] = {", 1)[1].split("}", 1)[0]
    assert [int(v) for v in labels.replace(",", " ").split()] == y.tolist()
    assert not (out / "samples.bin").exists() and not (out / "src" / "samples.c").exists()
    assert 0 < fw["train_step_stack_bytes"] < fw["stack_worst_case_bytes"] <= rep["stack_reserve_bytes"]
    syms = {s.name for s in Elf(out / ELF_PATH).symbols()}
    assert {"tinyc_train_step", "tinyc_train_samples", "tinyc_train_order"} <= syms


@needs_toolchain
@needs_qemu
def test_training_firmware_fails_cleanly(train_build, an386_build, tmp_path):
    x, y = labelled(2)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    # an inference build has no training demo; a training build's firmware infers through the
    # device link (its demo trains): the same outputs as the host build
    assert_clean_failure(tinyc("emulate", an386_build, "--qemu", "--train-data", tmp_path / "d.npz",
                               check=False), "built without --train")
    tinyc("emulate", train_build, "--qemu", "--input", tmp_path / "x.npy", "--output",
          tmp_path / "y.npy")
    tinyc("emulate", train_build, "--input", tmp_path / "x.npy", "--output", tmp_path / "h.npy")
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "h.npy"))
    # labels out of range are refused before QEMU runs
    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 7]))
    assert_clean_failure(tinyc("emulate", train_build, "--qemu", "--train-data", tmp_path / "bad.npz",
                               check=False), "label 7", "out of range")
    # the firmware checks its data file: another model's, or not one at all
    from tinyc.targets.qemu import qemu_command
    board = load_board("mps2_an386")
    for name, body, expect in (("junk.bin", b"x" * 100, "not a tinyc training data file"),
                               ("other.bin", (train_build / "samples.bin").read_bytes()[:8]
                                + (5).to_bytes(4, "little") + b"\0" * 28, "another model")):
        (tmp_path / name).write_bytes(body)
        res = subprocess.run(qemu_command(board, (train_build / ELF_PATH).resolve(), ["fw", name]),
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and expect in res.stdout, res.stdout

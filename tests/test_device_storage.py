"""Persistence of the trained parameters (runtime_c/src/link/tinyc_store.c): A/B slots in the
emulated board's flash (a host file written page by page through semihosting), saved over the
device link and restored at boot. Power is cut at every write of a save (the firmware stops dead
in the middle of that write) and by killing QEMU during saves: after each restart the device
holds the old or the new parameters bit for bit, never a mix, and says which."""
import json
import random
import time

import numpy as np
import pytest

from conftest import assert_clean_failure, tinyc
from test_device_link import LR, builds, report, table  # noqa: F401  (builds: a fixture)
from test_firmware import labelled, needs_qemu, needs_toolchain
from tinyc import device as dv
from tinyc import procs
from tinyc.cli import model_inputs
from tinyc.targets.boards import load_board
from tinyc.targets.host import HostTrainer
from tinyc.targets.qemu import QemuLink

pytestmark = [needs_toolchain, needs_qemu]


def boot(out, flash, cut=0):
    return QemuLink(out, load_board("mps2_an386"), report(out), timeout=20, storage=flash,
                    cut=cut)


@pytest.fixture(scope="module")
def saved(builds, tmp_path_factory):
    """A flash image holding two saves (slot A seq 1, slot B seq 2: the "old" parameters) and,
    beside it, "new" parameters trained since (not saved)."""
    out = builds / "train"
    d = tmp_path_factory.mktemp("flash")
    flash = d / "flash.bin"
    x, y = labelled(3, seed=21)
    xq = model_inputs(report(out), x, "x")
    with boot(out, flash) as q:
        dev = q.device
        first = dev.storage()
        dev.train(xq[0].reshape(-1), int(y[0]), LR)
        s1 = dev.save()
        dev.train(xq[1].reshape(-1), int(y[1]), LR)
        s2 = dev.save()
        old, old_step = dev.read_params(), dev.step()
        dev.train(xq[2].reshape(-1), int(y[2]), LR)
        new, new_step = dev.read_params(), dev.step()
        console = "".join(q.console)
    assert "storage: nothing saved: the built parameters" in console
    assert first.loaded is None and first.valid == (False, False)
    assert (s1.loaded, s1.loaded_seq, s1.valid) == (0, 1, (True, False))
    assert (s2.loaded, s2.loaded_seq, s2.valid, s2.seq) == (1, 2, (True, True), (1, 2))
    assert old != new and (old_step, new_step) == (2, 3)
    return out, flash.read_bytes(), (old, old_step), (new, new_step)


def after_restart(out, flash):
    """Power back on: what the device restored at boot."""
    with boot(out, flash) as q:
        st = q.device.storage()
        params, step = q.device.read_params(), q.device.step()
        console = "".join(q.console)
    return st, params, step, console


def check_old_or_new(st, params, step, console, old, new) -> str:
    if params == new[0]:
        assert step == new[1] and (st.loaded, st.loaded_seq) == (0, 3), st
        assert "storage: restored slot A seq 3" in console
        return "new"
    assert params == old[0], "the restored parameters are neither the old nor the new ones"
    assert step == old[1] and (st.loaded, st.loaded_seq) == (1, 2), st
    assert "storage: restored slot B seq 2" in console
    return "old"


def test_saved_parameters_survive_a_restart_and_restore_at_boot(saved, tmp_path):
    out, image, old, new = saved
    flash = tmp_path / "flash.bin"
    flash.write_bytes(image)
    st, params, step, console = after_restart(out, flash)
    assert check_old_or_new(st, params, step, console, old, new) == "old"
    # the restored parameters are the ones the device infers with: as the host build with them
    from tinyc.targets.firmware_train import unpack_params
    x, _ = labelled(2, seed=5)
    xq = model_inputs(report(out), x, "x")
    with HostTrainer(out) as t:
        t.set_params(unpack_params(params, table(out)))
        y_host = t.infer(xq).reshape(len(xq), -1)
    with boot(out, flash) as q:
        y_dev = np.stack([q.device.infer(v.reshape(-1))[0] for v in xq])
        q.device.reset_params()            # the built parameters in SRAM ...
        q.device.restore()                 # ... and the saved ones back
        assert q.device.read_params() == params
    assert np.array_equal(y_dev, y_host)


def test_power_cut_at_every_write_of_a_save(saved, tmp_path):
    """The save of the new parameters goes to slot A (slot B holds the newest); it is cut in the
    middle of each of its writes in turn: erase of every page, every data page, the header."""
    out, image, old, new = saved
    st = report(out)["firmware"]["storage"]
    writes = (st["slot_bytes"] // st["erase_bytes"] + -(-st["data_bytes"] // st["write_bytes"])
              + 1)   # erases, data writes, the header
    flash = tmp_path / "flash.bin"
    outcomes = []
    for cut in range(1, writes + 2):   # writes + 1: no cut, the save completes
        flash.write_bytes(image)
        with boot(out, flash, cut=cut) as q:
            q.device.write_params(new[0])
            q.device.step(new[1])
            q.device.send_raw(dv.encode_frame(dv.SAVE))
            if cut <= writes:
                assert q.proc.wait(30) == 5, f"cut={cut}: the power cut did not happen"
            else:
                kind, _ = q.device.read_frame()
                assert kind == dv.SAVE | dv.ANSWER
        outcomes.append(check_old_or_new(*after_restart(out, flash), old, new))
    # the new parameters count only once the header's last write is complete
    assert outcomes == ["old"] * writes + ["new"]


def test_killing_qemu_during_saves(saved, tmp_path):
    """QEMU killed (SIGKILL) at random moments after the save request: old or new, never a
    mix, whatever the moment."""
    out, image, old, new = saved
    flash = tmp_path / "flash.bin"
    rng = random.Random(7)
    seen = set()
    for delay in [0.0, 0.0005, 0.001, 0.002] + [rng.uniform(0, 0.02) for _ in range(2)]:
        flash.write_bytes(image)
        with boot(out, flash) as q:
            q.device.write_params(new[0])
            q.device.step(new[1])
            q.device.send_raw(dv.encode_frame(dv.SAVE))
            time.sleep(delay)
            procs.kill(q.proc)
        seen.add(check_old_or_new(*after_restart(out, flash), old, new))
    assert seen <= {"old", "new"}


def test_corrupt_slots_are_not_restored(saved, tmp_path):
    """A flipped bit in the newest slot's data (or header) makes it invalid: the older slot is
    restored; both broken: the built parameters, and restore says nothing is saved."""
    out, image, old, new = saved
    st = report(out)["firmware"]["storage"]
    slot, page = st["slot_bytes"], st["write_bytes"]   # the data starts after one write unit
    flash = tmp_path / "flash.bin"
    for where in (slot + page + 5, slot + 9):   # slot B: a data byte, the sequence number
        broken = bytearray(image)
        broken[where] ^= 0x10
        flash.write_bytes(bytes(broken))
        s, params, step, console = after_restart(out, flash)
        assert s.valid == (True, False) and (s.loaded, s.loaded_seq) == (0, 1)
        assert "storage: restored slot A seq 1" in console and step == 1
        assert params != old[0]
    broken = bytearray(image)
    broken[page + 3] ^= 1
    broken[slot + page + 3] ^= 1
    flash.write_bytes(bytes(broken))
    s, params, step, console = after_restart(out, flash)
    assert s.loaded is None and s.valid == (False, False) and step == 0
    assert "storage: nothing saved: the built parameters" in console
    with HostTrainer(out) as t:
        from tinyc.targets.firmware_train import params_bytes
        assert params == params_bytes(t.params(), table(out))
    with boot(out, flash) as q:
        with pytest.raises(dv.DeviceError, match="nothing saved"):
            q.device.restore()


def test_storage_command_line(saved, tmp_path):
    out, image, old, new = saved
    flash = tmp_path / "f.bin"
    x, y = labelled(3, seed=8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = tinyc("device", out, "--qemu", "--storage", flash, "train", "--train-data",
                tmp_path / "d.npz", "--save", "--save-params", tmp_path / "t.npz")
    assert "saved: parameters from slot A seq 1" in res.stdout
    res = tinyc("device", out, "--qemu", "--storage", flash, "pull", "-o", tmp_path / "p.npz")
    assert "step 3" in res.stdout
    t, p = np.load(tmp_path / "t.npz"), np.load(tmp_path / "p.npz")
    assert all(np.array_equal(t[k], p[k]) for k in t.files)
    res = tinyc("device", out, "--qemu", "--storage", flash, "storage")
    assert "parameters from slot A seq 1; slot A seq 1, slot B empty" in res.stdout
    assert_clean_failure(tinyc("device", out, "--port", "/dev/null", "--storage", flash, "info",
                               check=False), "use it with --qemu")
    assert_clean_failure(tinyc("device", out, "--qemu", "save", check=False),
                         "no persistent storage in this build")
    # the storage's flash is in the build's flash plan and checked with it
    fw = report(out)["firmware"]
    assert fw["storage"]["flash_bytes"] == 2 * fw["storage"]["slot_bytes"] >= 2 * (
        sum(p["bytes"] for p in table(out)) + 4 + fw["storage"]["write_bytes"])
    assert json.loads((out / "report.json").read_text())["firmware"]["storage"]["slots"] == 2


# each real board's flash back end: its erase unit and the routine that writes the slots
REAL_BOARD_STORAGE = {
    "nano33ble": (4096, "storage_nrf52_nvmc.c"),          # NVMC pages
    "nucleo_f411re": (128 * 1024, "storage_stm32_flash.c"),  # STM32F4 sectors 5-7
    "disco_f746ng": (256 * 1024, "storage_stm32_flash.c"),   # STM32F7 sectors 5-7
    "pico": (4096, "storage_rp2040_flash.c"),             # QSPI sectors, boot ROM routines
}


# the boards whose console and device link are a USB CDC device by default: the USB
# controller's interrupt (nRF52840 USBD 39, RP2040 USBCTRL_IRQ 5)
USB_CONSOLE_IRQ = {"nano33ble": 39, "pico": 5}


def assert_usb_console(out, irq):
    """The firmware links the USB CDC device (runtime_c/firmware/usb_cdc.c and the chip's
    driver), its interrupt handler sits in the vector table at the controller's interrupt, its
    buffers are in the report's RAM figures, and the worst-case stack counts the handler."""
    from elftools.elf.elffile import ELFFile
    from tinyc.targets.elf import Elf
    elf_path = out / ".pio" / "build" / "tinyc" / "firmware.elf"
    syms = {s.name: s for s in Elf(elf_path).symbols()}
    assert {"usb_cdc_setup", "usb_cdc_getc", "usb_cdc_write", "tinyc_usb_irq_handler",
            "rx_ring", "tx_ring"} <= set(syms)
    assert syms["rx_ring"].size == 256 and syms["tx_ring"].size == 512   # usb_cdc.h
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        vectors = elf.get_section_by_name(".vectors")
        table = vectors.data()
        handler = elf.get_section_by_name(".symtab").get_symbol_by_name("tinyc_usb_irq_handler")[0]
        entry = int.from_bytes(table[4 * (16 + irq):4 * (16 + irq) + 4], "little")
        assert entry == handler["st_value"] | 1   # a Thumb function
        assert vectors["sh_addr"] % 256 == 0      # VTOR's alignment for a table this long
    fw = report(out)["firmware"]
    assert fw["usb"]["ram_bytes"] >= 256 + 512 and 0 < fw["usb"]["flash_bytes"] < 8192
    assert (fw["usb"]["rx_buffer_bytes"], fw["usb"]["tx_buffer_bytes"]) == (256, 512)
    assert fw["ram_bytes"] >= fw["usb"]["ram_bytes"]
    config = (out / "lib" / "tinyc_board" / "tinyc_board_config.h").read_text()
    assert f"#define TINYC_BOARD_USB_IRQ {irq}" in config
    assert fw["stack_worst_case_interrupt_bytes"] > 36   # the USB handler's frames counted
    assert fw["stack_worst_case_bytes"] is not None, fw["stack_worst_case_unknown"]


@pytest.mark.parametrize("board_id", sorted(REAL_BOARD_STORAGE))
def test_real_board_storage_is_reserved_in_its_flash(board_id, real_board_training_build):
    """On every real board the slots are the top of the application flash, on erase-unit
    boundaries: the linker script ends the firmware below them, the report and the flash check
    count them, and the firmware links with the board's flash back end (not run on a board).
    The build: conftest's training build of the board (the partial scheme of the device tests,
    3 samples in flash), which the firmware test of the board reads too."""
    from tinyc.targets.elf import Elf
    erase, source = REAL_BOARD_STORAGE[board_id]
    out = real_board_training_build(board_id)
    rep = report(out)
    st, fw, board = rep["firmware"]["storage"], rep["firmware"], load_board(board_id)
    assert st["in_board_flash"] and st["erase_bytes"] == erase and st["slot_bytes"] % erase == 0
    assert st["source"] == source and (out / "lib" / "tinyc_board" / source).is_file()
    assert st["slot_bytes"] >= st["write_bytes"] + sum(p["bytes"] for p in table(out)) + 4
    start = board.memory.flash_origin + board.memory.flash_length - st["flash_bytes"]
    syms = {s.name: s for s in Elf(out / ".pio" / "build" / "tinyc" / "firmware.elf").symbols()}
    assert "tinyc_board_storage_program" in syms and "tinyc_store_save" in syms
    assert f"__tinyc_storage_start = ORIGIN(FLASH) + LENGTH(FLASH);" in (
        out / "lib" / "tinyc_board" / "link.ld").read_text()
    assert f"LENGTH = {board.memory.flash_length - st['flash_bytes']}" in (
        out / "lib" / "tinyc_board" / "link.ld").read_text()
    assert start % erase == 0 and board.memory.flash_origin + fw["flash_bytes"] <= start
    if board_id == "pico":   # the routine around the boot ROM's calls runs from RAM
        assert syms["flash_op"].section == ".data"
    if board_id in USB_CONSOLE_IRQ:
        assert_usb_console(out, USB_CONSOLE_IRQ[board_id])
    if source == "storage_stm32_flash.c":   # the slots are on the uniform sectors (5 and up)
        assert start >= board.memory.flash_origin + erase

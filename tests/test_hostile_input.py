"""Hostile input: names in a model, values in a board file and output paths never become code.

A model whose tensor and node names (and file name) are drawn from a hostile alphabet must build,
compile with -Werror and compute exactly what the same model with clean names computes, and no
name may run a command (a canary file that a name would create if it ever ran). Hostile board
values are refused with a one-line error naming the field, before anything is written. One
firmware build (and upload, under QEMU) into a path full of shell characters works and runs
nothing."""
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import assert_clean_failure, tinyc
from tinyc.build import BuildOptions, build
from tinyc.errors import TinycError
from tinyc.targets.boards import load_board
from tinyc.targets.host import HostTrainer, run_host
from tinyc.targets.platformio import toolchain_missing

ROOT = Path(__file__).resolve().parents[1]

# pieces of names: comment closers and openers, line splices (backslash before CR or LF),
# trigraphs, quotes, shell and SCons/ini substitutions, unicode (a line separator among it)
HOSTILE = ["*\\", "\\", "\r", "\n", "\r\n", '"', "'", "$(", ")", "`", ";", "%", "%(x)s", " ",
           "/*", "*/", "*", "/", "??/", "??=", "{{", "}}", "${x}", "\t", "é", "\u2028", "\u202e",
           "#include <stdlib.h>\n", "\\\r/", "*\\\n/"]


def hostile_names(rng, count: int, canary: Path) -> list[str]:
    """`count` distinct names from the hostile alphabet; the first ones would put a system()
    call into the code through a comment that only rewrote `*/` and newlines."""
    run = f'system("touch {canary}");'
    names = [f'a *\\\r/ {run} /* ', f"b *\\\n/ {run} /*", f"c */ {run} /* ", f"d\n{run}\n",
             f"e ??/\n{run}", "f \\"]
    while len(names) < count:
        names.append("".join(rng.choice(HOSTILE, rng.integers(1, 6))) + f"#{len(names)}")
    return names[:count]


def rename_all(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The same model with its tensors, then its nodes, named from `names` in order of appearance
    (None keeps a name)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    tensors = [t.name for t in list(g.input) + list(g.initializer)]
    for n in g.node:
        tensors += list(n.input) + list(n.output)
    tensors += [t.name for t in g.output]
    order = list(dict.fromkeys(t for t in tensors if t))
    assert len(names) >= len(order) + len(g.node), "not enough names"
    new = {old: name or old for old, name in zip(order, names)}
    for t in list(g.input) + list(g.output) + list(g.value_info) + list(g.initializer):
        t.name = new.get(t.name, t.name)
    for k, n in enumerate(g.node):
        n.input[:] = [new.get(t, t) for t in n.input]
        n.output[:] = [new.get(t, t) for t in n.output]
        n.name = names[len(order) + k] or n.name
    return model


def exploit_names(canary: Path) -> list[str]:
    """One name that, in a comment that only rewrote `*/` and newlines, becomes a function run
    before main() (a backslash and CR splice `*` and `/`; CR ends the line for GCC); the first
    weight carries it, everything else keeps its name."""
    code = (f'__attribute__((constructor)) static void pwn(void) {{ if (system("touch {canary}")) '
            '{} }')
    return [None, f"w *\\\r/\r#include <stdlib.h>\r{code}\r/* "] + [None] * 400


def strip_comments(c_text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", c_text, flags=re.S)


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "a name ran a command"


@pytest.mark.parametrize("net,names", [("mbv2_block", "fuzz"), ("fc_only", "fuzz"),
                                       ("fc_only", "exploit")])
def test_hostile_names_build_and_compute_like_clean_ones(net, names, small_nets, tmp_path, canary):
    clean = onnx.load(small_nets[net])
    names = (hostile_names(np.random.default_rng(len(net)), 400, canary) if names == "fuzz"
             else exploit_names(canary))
    hostile = tmp_path / "m \"$(touch CANARY)\" `touch CANARY`;%'é\n\\*\r.onnx"
    onnx.save(rename_all(clean, names), hostile)
    calib = tmp_path / "calib.npy"
    shape = [d.dim_value for d in clean.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).uniform(-1, 1, (4, *shape[1:])).astype(np.float32)
    np.save(calib, x)
    board = load_board("mps2_an386")
    outs = {}
    for which, model in (("clean", small_nets[net]), ("hostile", hostile)):
        out = tmp_path / which
        rep = build(str(model), board, str(out), BuildOptions(calib=str(calib)))
        xq = np.clip(np.round(x / rep["input"]["scale"]) + rep["input"]["zero_point"], -128, 127)
        # run_host compiles with -Werror -pedantic (-Wcomment among them) and runs the model
        outs[which] = run_host(out, np.moveaxis(xq.astype(np.int8), 1, -1)).tobytes()
    assert outs["hostile"] == outs["clean"]
    for name in ("model.c", "model.h"):
        text = (tmp_path / "hostile" / name).read_text()
        assert "\r" not in text and "\\\n" not in text and "system(" not in strip_comments(text)
        # outside comments, the hostile build's C is the clean build's, character for character
        assert strip_comments(text) == strip_comments((tmp_path / "clean" / name).read_text())


def test_hostile_names_of_trained_parameters(small_nets, tmp_path, canary):
    """A training build: parameter names also reach a C string table (tinyc_params). Rounding
    to nearest: stochastic rounding salts each layer with a hash of its name."""
    clean = onnx.load(small_nets["fc_only"])
    hostile = tmp_path / "hostile.onnx"
    onnx.save(rename_all(clean, hostile_names(np.random.default_rng(1), 100, canary)), hostile)
    board = load_board("mps2_an386")
    rng = np.random.default_rng(0)
    xq = rng.integers(-128, 128, (6, 1, 1, 16)).astype(np.int8)
    labels = np.arange(6) % 10
    results = {}
    for which, model in (("clean", small_nets["fc_only"]), ("hostile", hostile)):
        out = tmp_path / which
        build(str(model), board, str(out), BuildOptions(train="full", lr=0.05, rounding="nearest"))
        with HostTrainer(out) as t:
            losses = t.train(xq, labels, 0.05)
            results[which] = (list(losses), [v.tobytes() for v in t.params().values()])
    assert results["hostile"] == results["clean"]


# ------------------------------------------------------------------------ board files

BOARD = (ROOT / "boards" / "nucleo_f411re.toml").read_text()
# (field as the error names it, the line of nucleo_f411re.toml that sets it)
BOARD_TEXT_FIELDS = [("id", 'id = "nucleo_f411re"'),
                     ("name", 'name = "ST Nucleo-F411RE (STM32F411RE, Cortex-M4F)"'),
                     ("mcu", 'mcu = "STM32F411RET6"'), ("cpu", 'cpu = "cortex-m4"'),
                     ("console", 'console = "stm32f4_usart"'),
                     ("platform", 'platform = "ststm32"'), ("board", 'board = "nucleo_f411re"'),
                     ("upload_protocol", 'upload_protocol = "stlink"'),
                     ("default", 'default = "stlink"'), ("tool", 'tool = "openocd"'),
                     ("install", 'install = "apt-get install --no-install-recommends openocd"'),
                     ("command", 'command = "st-flash --reset write {bin} 0x08000000"'),
                     ("pio_protocol", 'pio_protocol = "stlink"')]
BOARD_INT_FIELDS = [("sram_bytes", "sram_bytes = 131072"), ("f_cpu", "f_cpu = 16000000"),
                    ("flash_origin", "flash_origin = 0x08000000"),
                    ("ram_length", "ram_length = 131072"), ("baud", "baud = 115200")]


NEVER_IN_A_BOARD = ["\n", "\r", "\t", "`", "\\", "$(", "${x}", "\u2028", "\u202e", "\x1b[2J"]


def with_value(line: str, value) -> str:
    key, old = line.split(" = ")
    text = json.dumps(value) if isinstance(value, str) else str(value).lower()
    if key == "command":   # keep the tool's name first: the rest of the command is hostile
        text = json.dumps("st-flash " + value)
    return BOARD.replace(line, f"{key} = {text}", 1)


def test_hostile_board_values_are_refused_naming_the_field(tmp_path):
    rng = np.random.default_rng(3)
    # every value holds at least one character that no field may hold
    cases = [(f, line, "".join(rng.choice(HOSTILE, rng.integers(0, 4)))
              + rng.choice(NEVER_IN_A_BOARD) + "".join(rng.choice(HOSTILE, rng.integers(0, 4))))
             for f, line in BOARD_TEXT_FIELDS for _ in range(8)]
    cases += [(f, line, v) for f, line in BOARD_TEXT_FIELDS
              for v in ("x\nbuild_src_flags = !touch CANARY", "${__import__('os')}")]
    cases += [(f, line, v) for f, line in BOARD_INT_FIELDS
              for v in (-1, 2 ** 33, True, "1", 1.5)]
    cases += [("flash_length", "flash_length = 524288", 0),
              ("counter_unit", 'counter_unit = "cycles"', "cycles\nx"),
              ("unknown field", "emulated = false", None)]
    for field, line, value in cases:
        if field == "unknown field":
            text = BOARD.replace(line, line + '\nbuild_src_flags = "!touch CANARY"')
        else:
            text = with_value(line, value)
        path = tmp_path / "b.toml"
        path.write_text(text)
        with pytest.raises(TinycError) as err:
            load_board(str(path))
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and field in msg, (field, value, msg)


def test_hostile_board_file_writes_nothing(small_nets, tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(with_value(BOARD_TEXT_FIELDS[1][1],
                               f"x\nbuild_src_flags = !touch {tmp_path / 'CANARY'}\nname = y"))
    res = tinyc("build", small_nets["fc_only"], "--board", path, "-o", tmp_path / "o", check=False)
    assert_clean_failure(res, "field 'name'")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "CANARY").exists()


# ------------------------------------------------------------------------ output paths

def test_output_path_with_a_dollar_is_refused_for_firmware(small_nets, tmp_path):
    """PlatformIO expands ${...} in project paths (SCons evaluates it as Python)."""
    out = tmp_path / "p${__import__('os').system('touch CANARY')}"
    res = subprocess.run([sys.executable, "-m", "tinyc.cli", "build", small_nets["fc_only"],
                          "--board", "mps2_an386", "-o", out], capture_output=True, text=True,
                         cwd=tmp_path)
    assert_clean_failure(res, "contains '$'")
    assert not out.exists() and not list(tmp_path.rglob("CANARY"))


@pytest.mark.skipif(toolchain_missing() is not None, reason=f"{toolchain_missing()}")
def test_firmware_builds_and_uploads_into_a_path_of_shell_characters(small_nets, tmp_path):
    out = tmp_path / "fw ;touch CANARY;(x'y%z `touch CANARY` \"q\" \\"
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
    # the model's file name reaches main.c as a C string and platformio.ini as a comment
    model = tmp_path / "m \"$(touch CANARY)\" `touch CANARY`;%'é*\\??=.onnx"
    shutil.copy(small_nets["fc_only"], model)
    res = cli("build", model, "--board", "mps2_an386", "-o", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / ".pio" / "build" / "tinyc" / "firmware.map").is_file()
    dry = cli("flash", out, "--dry-run").stdout.splitlines()
    words = shlex.split(dry[0])
    assert words[words.index("-d") + 1] == str(out.resolve())
    assert shlex.split(dry[2])[-1] == str(out.resolve() / ".pio/build/tinyc/firmware.elf")
    if shutil.which("qemu-system-arm"):   # the board's upload runs the firmware under QEMU
        res = cli("flash", out)
        assert res.returncode == 0 and "done 1 samples" in res.stdout, res.stdout + res.stderr
        assert f"model {model.name}, input" in res.stdout
    assert not list(tmp_path.rglob("CANARY"))


def test_hostile_names_in_errors_stay_one_line_of_text(small_nets, tmp_path):
    """A name that reaches an error message cannot add lines or send terminal commands (ESC,
    CR, a right-to-left override): they are printed as escapes."""
    model = onnx.load(small_nets["fc_only"])
    bad = onnx.helper.make_node("Frobnicate", [model.graph.node[0].output[0]], ["z"],
                                name="evil\x1b[2J\r\nfake line\u202e")
    model.graph.node.insert(1, bad)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                check=False)
    assert_clean_failure(res, "Frobnicate")
    assert res.stderr.count("\n") == 1 and "\r" not in res.stderr, res.stderr
    assert "\x1b" not in res.stderr and "\u202e" not in res.stderr
    assert "\\x1b[2J\\r\\nfake line\\u202e" in res.stderr
    assert not (tmp_path / "o").exists()

"""The firmware's per-layer profile (tinyc build --profile, tinyc emulate --qemu --profile) and
the two kernel variants on the emulated Cortex-M4 (--kernels auto: the DSP ones; portable)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import assert_clean_failure, tinyc
from test_firmware import (ELF_PATH, TRAIN_SCHEME, an386_build, calib,  # noqa: F401 (fixtures)
                           inputs, labelled, needs_qemu, needs_toolchain)

pytestmark = [needs_toolchain, needs_qemu]


def _has_smlad(out) -> bool:
    disasm = subprocess.run(["arm-none-eabi-objdump", "-d", str(out / ELF_PATH)],
                            capture_output=True, text=True, check=True).stdout
    return "smlad" in disasm


def test_profile_of_an_inference_and_both_kernel_variants(small_nets, calib, tmp_path):
    net = small_nets["mbv2_block"]
    np.save(tmp_path / "x.npy", inputs(2, seed=3))
    dsp, portable = tmp_path / "dsp", tmp_path / "portable"
    tinyc("build", net, "--board", "mps2_an386", "-o", dsp, "--calib", calib, "--profile",
          "--patch", "off")
    res = tinyc("emulate", dsp, "--qemu", "--profile", "--input", tmp_path / "x.npy",
                "--output", tmp_path / "y_dsp.npy")
    assert "by layer type:" in res.stdout and "pointwise" in res.stdout, res.stdout
    prof = json.loads((dsp / "profile.json").read_text())
    rep = json.loads((dsp / "report.json").read_text())
    # every layer that computes something was timed, named as in the report (an alias, which
    # runs no code, only gets the few instructions between two marks)
    timed = {r["index"]: r for r in prof["layers"]}
    kernels = [r for r in rep["ops"] if r["in_place"] != "alias"]
    assert {r["index"] for r in kernels} <= set(timed) <= {r["index"] for r in rep["ops"]}
    assert all(timed[r["index"]]["name"] == r["name"] and timed[r["index"]]["count"] > 0
               for r in kernels)
    # the layers add up to the whole inference, less the profile marks' own counter reads
    layers = sum(r["count"] for r in prof["layers"])
    assert prof["unit"] == "instructions" and 0.9 * prof["whole"] < layers <= prof["whole"]
    types = {r["layer_type"]: r for r in prof["by_layer_type"]}
    assert {"pointwise", "depthwise 3x3 s1"} <= set(types)
    assert sum(r["count"] for r in types.values()) == layers
    # the plain C99 kernels on the same core: no SMLAD, the same bytes, more instructions
    tinyc("build", net, "--board", "mps2_an386", "-o", portable, "--calib", calib, "--patch",
          "off", "--kernels", "portable")
    assert _has_smlad(dsp) and not _has_smlad(portable)
    res_p = tinyc("emulate", portable, "--qemu", "--input", tmp_path / "x.npy", "--output",
                  tmp_path / "y_portable.npy")
    tinyc("emulate", dsp, "--input", tmp_path / "x.npy", "--output", tmp_path / "y_host.npy")
    y_dsp, y_portable = np.load(tmp_path / "y_dsp.npy"), np.load(tmp_path / "y_portable.npy")
    assert np.array_equal(y_dsp, y_portable) and np.array_equal(y_dsp, np.load(tmp_path / "y_host.npy"))
    count = int(res_p.stdout.split("sample 0: ")[1].split()[0].replace(",", ""))
    assert count > prof["whole"]


def test_profile_of_a_training_step_by_phase(small_nets, calib, tmp_path):
    (tmp_path / "scheme.json").write_text(json.dumps(TRAIN_SCHEME))
    out = tmp_path / "o"
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out, "--calib", calib,
          "--train", tmp_path / "scheme.json", "--num-classes", "4", "--profile")
    x, y = labelled(2)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = tinyc("emulate", out, "--qemu", "--profile", "--train-data", tmp_path / "d.npz")
    assert "by phase:" in res.stdout, res.stdout
    prof = json.loads((out / "profile.json").read_text())
    assert prof["what"] == "training step"
    phases = {r["phase"]: r["count"] for r in prof["by_phase"]}
    assert {"forward", "backward"} <= set(phases) and all(c > 0 for c in phases.values())
    assert any("update" in p for p in phases)
    layers = sum(r["count"] for r in prof["layers"])
    assert 0.9 * prof["whole"] < layers <= prof["whole"]


def test_profile_needs_a_profiled_qemu_build(an386_build, tmp_path):
    np.save(tmp_path / "x.npy", inputs(1, seed=3))
    args = ("--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert_clean_failure(tinyc("emulate", an386_build, "--qemu", "--profile", *args, check=False),
                         "built without --profile", "tinyc build")
    assert_clean_failure(tinyc("emulate", an386_build, "--profile", *args, check=False),
                         "--qemu")


@pytest.mark.parametrize("bad", ["kernels", "profile"])
def test_bad_recorded_profile_options_are_refused(an386_build, bad):
    """report.json is read back (tinyc export redoes the build from it): the new build options
    are checked like the others, and never reach a compiler command line."""
    from tinyc.build import options_from_report
    from tinyc.errors import TinycError
    rep = json.loads((an386_build / "report.json").read_text())
    assert rep["build_options"]["kernels"] == "auto" and rep["build_options"]["profile"] is False
    rep["build_options"][bad] = "-DEVIL; rm -rf /" if bad == "kernels" else "yes"
    with pytest.raises(TinycError, match=f"build option '{bad}'"):
        options_from_report(rep)

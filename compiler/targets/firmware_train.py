"""On-device training in the firmware: the labelled data the training demo trains on, what it
prints, and the host's answer to compare it with.

A training build's demo (templates/firmware/train_main.c.j2) runs one tinyc_train_step() per
step over labelled int8 samples in a given order, then the accuracy over evaluation samples, then
writes (emulated boards) or checksums (real boards) the trained parameters. Emulated boards read
the data through semihosting from a file in the format below (`TrainingData.pack`); real boards
get it compiled into flash (train_samples.c).

    header   b"TCTD", version 1, input size, classes, samples N, steps S, eval V, epochs E
             (uint32 each), lr (float32, the peak), lr schedule (uint32: 0 constant, 1 linear;
             lr_schedule.py)                                              40 bytes, little-endian
    labels   N x int32
    order    S x uint32        the sample of each step
    eval     V x uint32        the samples the accuracy is measured on after training
    inputs   N x input size int8 (NHWC)

The step order is the one `tinyc emulate --train-data` uses on the host (training_order), and
the firmware computes step k's rate with tinyc_lr_schedule(lr, schedule, k, S) (model.h), the
same float32 bits as lr_schedule.rates on the host, so the firmware's parameters after training
can be compared bit for bit with the host build's (HostTrainer on the same steps and rates).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import TinycError
from ..lr_schedule import DEFAULT_LR_SCHEDULE, LR_SCHEDULE_CODES, check_schedule, rates

MAGIC, VERSION = b"TCTD", 1
HEADER = struct.Struct("<4sIIIIIIIfI")
MAX_FILE_BYTES = (1 << 31) - 1       # semihosting's SYS_FLEN answers an int32
DEMO_SAMPLES = 4                     # the demo of a training build (no --samples): inputs ...
DEMO_EPOCHS = 3                      # ... and epochs over them
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619

STEP_RE = re.compile(r"^step (\d+) epoch (\d+) sample (\d+) label (-?\d+) lr 0x([0-9a-f]{8}) "
                     r"loss (\S+) 0x([0-9a-f]{8}) (instructions|cycles) (\d+)$")
PLAN_RE = re.compile(r"^plan (\d+) steps, (\d+) epochs, lr \S+ 0x([0-9a-f]{8}) (constant|linear), "
                     r"eval (\d+) samples$")
EPOCH_RE = re.compile(r"^epoch (\d+) mean loss (\S+)$")
GUARD_RE = re.compile(r"^guard (\d+) steps (\d+) skipped (\d+) guarded (\d+) updates (\d+) "
                      r"refused (\d+) (\d+)$")
ACCURACY_RE = re.compile(r"^accuracy (\d+) of (\d+)$")
PARAMS_RE = re.compile(r"^params (\d+) bytes fnv1a 0x([0-9a-f]{8})$")
STACK_RE = re.compile(r"^(train )?stack (\d+) of (\d+) bytes$")


def training_order(n: int, epochs: int) -> np.ndarray:
    """The sample of each step: epoch e (from 1) visits the samples in the order of
    numpy.random.default_rng(e).permutation(n) (what `tinyc emulate --train-data` does)."""
    if epochs < 1:
        raise TinycError(f"--epochs {epochs}: must be at least 1")
    return np.concatenate([np.random.default_rng(e).permutation(n)
                           for e in range(1, epochs + 1)]).astype(np.int64)


@dataclass
class TrainingData:
    """Labelled int8 NHWC samples, the order of the training steps and the samples the accuracy
    is measured on afterwards (indices into x)."""
    x: np.ndarray
    y: np.ndarray
    order: np.ndarray
    eval: np.ndarray
    epochs: int
    lr: float                  # the peak rate (the first step's)
    lr_schedule: str = DEFAULT_LR_SCHEDULE   # over all the steps (lr_schedule.py)

    @classmethod
    def make(cls, x, y, epochs: int, lr: float, eval_x=None, eval_y=None,
             lr_schedule: str = DEFAULT_LR_SCHEDULE) -> "TrainingData":
        """`epochs` passes over (x, y) in training_order at rates from peak `lr` by
        `lr_schedule` over all the steps; the accuracy over (eval_x, eval_y), or over the
        training samples when none are given."""
        check_schedule(lr_schedule)
        x = np.ascontiguousarray(np.asarray(x, np.int8))
        y = np.asarray(y, np.int64).reshape(-1)
        if len(x) == 0 or len(x) != len(y):
            raise TinycError(f"training data: {len(x)} inputs and {len(y)} labels")
        order = training_order(len(x), epochs)
        if eval_x is None:
            evals = np.arange(len(x))
        else:
            eval_x = np.asarray(eval_x, np.int8)
            if len(eval_x) == 0:
                raise TinycError("evaluation data: holds no sample")
            evals = np.arange(len(x), len(x) + len(eval_x))
            x = np.concatenate([x, eval_x])
            y = np.concatenate([y, np.asarray(eval_y, np.int64).reshape(-1)])
        lr = float(np.float32(lr))
        if not (np.isfinite(lr) and lr > 0):
            raise TinycError(f"learning rate {lr}: must be a positive number")
        return cls(x, y, order, evals, epochs, lr, lr_schedule)

    @property
    def steps(self) -> int:
        return len(self.order)

    @property
    def rates(self) -> np.ndarray:
        """The float32 rate of each step (what the firmware computes with tinyc_lr_schedule)."""
        return rates(self.lr, self.lr_schedule, self.steps)

    def check(self, input_size: int, num_classes: int) -> None:
        if self.x[0].size != input_size:
            raise TinycError(f"training data: samples of {self.x[0].size} values, the model "
                             f"takes {input_size}")
        bad = np.flatnonzero((self.y < 0) | (self.y >= num_classes))
        if len(bad):
            raise TinycError(f"training data: label {self.y[bad[0]]} of sample {bad[0]} is out "
                             f"of range (0..{num_classes - 1})")
        if self.steps % self.epochs:
            raise TinycError("training data: the steps are not whole epochs")

    def pack(self, input_size: int, num_classes: int) -> bytes:
        """The data file of the emulated boards' training demo (module docstring)."""
        self.check(input_size, num_classes)
        n = len(self.x)
        head = HEADER.pack(MAGIC, VERSION, input_size, num_classes, n, self.steps,
                           len(self.eval), self.epochs, self.lr,
                           LR_SCHEDULE_CODES[check_schedule(self.lr_schedule)])
        body = [self.y.astype("<i4").tobytes(), self.order.astype("<u4").tobytes(),
                self.eval.astype("<u4").tobytes(), self.x.tobytes()]
        size = len(head) + sum(map(len, body))
        if size > MAX_FILE_BYTES:
            raise TinycError(f"training data of {size:,} bytes: the firmware reads at most "
                             f"{MAX_FILE_BYTES:,} (semihosting); use fewer samples or epochs")
        return head + b"".join(body)

    def c_arrays(self, input_size: int, num_classes: int) -> dict:
        """Template values of train_samples.c/.h (real boards: the data in flash)."""
        from ..codegen.c import c_float, format_values
        self.check(input_size, num_classes)
        if not np.array_equal(self.eval, np.arange(len(self.x))):
            raise TinycError("the embedded training demo measures the accuracy on its training "
                             "samples")
        return dict(samples=[format_values(s.reshape(-1)) for s in self.x],
                    labels=format_values(self.y), order=format_values(self.order),
                    order_ctype="uint8_t" if len(self.x) <= 256 else
                    "uint16_t" if len(self.x) <= 65536 else "uint32_t",
                    count=len(self.x), steps=self.steps, epochs=self.epochs,
                    lr=repr(self.lr), lr_c=c_float(self.lr),
                    lr_schedule=check_schedule(self.lr_schedule))


# ------------------------------------------------------------------------ the demo's output

@dataclass
class TrainDemoOutput:
    """What the training demo printed."""
    unit: str = ""
    steps_planned: int | None = None
    epochs: int | None = None
    lr_bits: int | None = None
    lr_schedule: str | None = None
    samples: list[int] = field(default_factory=list)
    rate_bits: list[int] = field(default_factory=list)   # each step's learning rate
    labels: list[int] = field(default_factory=list)
    loss_bits: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    guard: list = field(default_factory=list)   # GuardStats after each epoch (totals so far)
    correct: int | None = None
    evaluated: int | None = None
    params_bytes: int | None = None
    params_hash: int | None = None
    train_stack_used: int | None = None
    stack_used: int | None = None
    stack_size: int | None = None
    done: int | None = None
    profile: dict[int, int] = field(default_factory=dict)   # layer -> count (--profile)

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self.loss_bits, np.uint32).view(np.float32)

    @property
    def rates(self) -> np.ndarray:
        return np.asarray(self.rate_bits, np.uint32).view(np.float32)

    @property
    def accuracy(self) -> float | None:
        return None if not self.evaluated else self.correct / self.evaluated


def parse_train_output(text: str) -> TrainDemoOutput:
    """Parses the lines the training demo prints (templates/firmware/train_main.c.j2)."""
    from .qemu import PROFILE_RE, QemuError
    d = TrainDemoOutput()
    for line in text.splitlines():
        line = line.strip()
        m = STEP_RE.match(line)
        if m:
            if int(m.group(1)) != len(d.counts):
                raise QemuError(f"training demo output out of order: {line[:60]}")
            d.samples.append(int(m.group(3)))
            d.labels.append(int(m.group(4)))
            d.rate_bits.append(int(m.group(5), 16))
            d.loss_bits.append(int(m.group(7), 16))
            d.unit = m.group(8)
            d.counts.append(int(m.group(9)))
            continue
        if m := PROFILE_RE.match(line):
            d.profile[int(m.group(1))] = int(m.group(2))
        elif m := PLAN_RE.match(line):
            d.steps_planned, d.epochs = int(m.group(1)), int(m.group(2))
            d.lr_bits, d.lr_schedule = int(m.group(3), 16), m.group(4)
        elif m := EPOCH_RE.match(line):
            d.epoch_loss.append(float(m.group(2)))
        elif m := GUARD_RE.match(line):
            from ..reference.train import GuardStats
            d.guard.append(GuardStats(*(int(v) for v in m.groups()[1:])))
        elif m := ACCURACY_RE.match(line):
            d.correct, d.evaluated = int(m.group(1)), int(m.group(2))
        elif m := PARAMS_RE.match(line):
            d.params_bytes, d.params_hash = int(m.group(1)), int(m.group(2), 16)
        elif m := STACK_RE.match(line):
            if m.group(1):
                d.train_stack_used = int(m.group(2))
            else:
                d.stack_used = int(m.group(2))
            d.stack_size = int(m.group(3))
        elif line.startswith("done "):
            d.done = int(line.split()[1])
    return d


def fnv1a(data: bytes, h: int = FNV_OFFSET) -> int:
    """32-bit FNV-1a, the checksum the demo prints over the trained parameters."""
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def params_bytes(params: dict, table: list[dict]) -> bytes:
    """Parameters (name -> array) as the firmware lays them out: tinyc_params[] order."""
    return b"".join(np.ascontiguousarray(
        params[p["name"]], np.int8 if p["dtype"] == "int8" else "<i4").tobytes() for p in table)


def unpack_params(raw: bytes, table: list[dict]) -> dict[str, np.ndarray]:
    """The firmware's parameter file -> name -> int8 / int32 array (train_params.json shapes)."""
    out, at = {}, 0
    for p in table:
        dt = np.dtype(np.int8) if p["dtype"] == "int8" else np.dtype("<i4")
        if at + p["bytes"] > len(raw):
            raise TinycError(f"the parameter file ends inside '{p['name']}' ({len(raw)} bytes)")
        out[p["name"]] = np.frombuffer(raw[at:at + p["bytes"]], dt).astype(
            dt.newbyteorder("=")).reshape(p["shape"])
        at += p["bytes"]
    if at != len(raw):
        raise TinycError(f"the parameter file holds {len(raw)} bytes, expected {at}")
    return out


@dataclass
class HostRun:
    """The host build trained on the same steps: the reference for the firmware's run."""
    losses: np.ndarray
    params: dict
    correct: int
    evaluated: int
    guard: object = None   # the guard's counters after the run (reference.train.GuardStats)
    rates: np.ndarray | None = None   # the float32 rate of each step


def host_training(out, data: TrainingData) -> HostRun:
    """HostTrainer (host gcc) from the initial parameters over data's steps, then its accuracy."""
    from .host import HostTrainer
    chunk = 256   # steps gathered at a time (x[order] of a whole run can be large)
    with HostTrainer(out) as t:
        rate = data.rates
        losses = np.concatenate([t.train(data.x[data.order[part]], data.y[data.order[part]],
                                         rate[part])
                                 for part in np.array_split(np.arange(data.steps),
                                                            max(1, -(-data.steps // chunk)))])
        params = t.params()
        guard = t.guard_stats()
        logits = np.concatenate([t.infer(data.x[part]).reshape(len(part), -1)
                                 for part in np.array_split(data.eval,
                                                            max(1, -(-len(data.eval) // chunk)))])
    correct = int(np.sum(np.argmax(logits, axis=1) == data.y[data.eval]))
    return HostRun(losses, params, correct, len(data.eval), guard, rate)


@dataclass
class Comparison:
    params_identical: bool
    differing: list[str]
    losses_identical: bool
    loss_max_rel_diff: float
    accuracy_identical: bool
    guard_identical: bool = True
    rates_identical: bool = True   # the firmware's tinyc_lr_schedule bits == the host's

    @property
    def ok(self) -> bool:
        return (self.params_identical and self.loss_max_rel_diff <= 1e-6
                and self.accuracy_identical and self.guard_identical and self.rates_identical)


def compare(demo: TrainDemoOutput, params: dict, host: HostRun) -> Comparison:
    differing = [k for k in host.params if not np.array_equal(params.get(k), host.params[k])]
    fw = demo.losses
    same_bits = fw.shape == host.losses.shape and np.array_equal(
        fw.view(np.uint32), host.losses.astype(np.float32).view(np.uint32))
    if fw.shape != host.losses.shape:
        rel = float("inf")
    else:
        denom = np.maximum(np.abs(host.losses), np.float32(1e-30))
        rel = float(np.max(np.abs(fw.astype(np.float64) - host.losses) / denom)) if len(fw) else 0.0
    same_rates = host.rates is None or np.array_equal(
        demo.rates.view(np.uint32), np.asarray(host.rates, np.float32).view(np.uint32))
    return Comparison(not differing, differing, same_bits, rel,
                      (demo.correct, demo.evaluated) == (host.correct, host.evaluated),
                      host.guard is None or (demo.guard[-1:] or [None])[0] == host.guard,
                      same_rates)

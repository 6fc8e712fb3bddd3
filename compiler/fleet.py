"""A fleet that learns together: federated sparse updates of tinyc devices through Flower.

Each device (a board on a serial port, a firmware under QEMU, or the host build of the model as a
process) trains on its own data; a Flower client on the host side of its link moves only the
parameters the update scheme trains, and Flower's server averages them.

    layout = ParamLayout.from_build(out)                  # which elements train, their scales
    client = FleetClient(HostBackend(out), layout, x, y)  # a flwr NumPyClient
    strategy = fleet_strategy(layout, "fedavg")           # Flower's FedAvg (or FedProx), wrapped

What crosses, per device and round: the device's own int8 weight / int32 bias codes of the trained
elements (never a frozen weight, nor a frozen channel of a partly trained tensor), up and down.
Every device of a fleet runs the same build (the link checks its build id), so both ends know
the scales (train_params.json). The server dequantizes the codes to float64, lets Flower's
strategy aggregate them (FedAvg weighted by samples) and keeps the float result as the
fleet's master copy (the devices' updates are added to it); the devices are sent its codes in
their own fixed scales (QAS keeps the scales and steps the int8 values), to the nearest code,
weights held to +-127 and biases to +-2^30 as a trained parameter is
(runtime_c/src/optim/sgd.c). Pulling and pushing back what was pulled changes nothing, bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .errors import TinycError
from .lr_schedule import DEFAULT_LR_SCHEDULE, check_schedule, rates

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")   # Flower phones home unless told not to

try:
    import flwr  # noqa: F401
    from flwr.client import NumPyClient
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg, FedAvgM, FedProx, Strategy
except ImportError:   # pragma: no cover - the CLI says how to install it
    raise TinycError("tinyc fleet needs Flower: pip install 'tinyc[fleet]' (or pip install "
                     "'flwr>=1.42,<1.43')") from None

WEIGHT_LIMIT, BIAS_LIMIT = 127, 1 << 30   # runtime_c/include/tinyc/train.h


def quiet_flower(level: str = "WARNING") -> None:
    """Flower logs every message it handles and each deprecation at length: keep its log to
    `level` (tinyc prints its own one line per round)."""
    import logging
    logging.getLogger("flwr").setLevel(getattr(logging, level))


# --------------------------------------------------------------------------- the trained elements
@dataclasses.dataclass
class _Entry:
    name: str
    kind: str
    dtype: str
    shape: tuple
    scale: np.ndarray          # float64 per element of the trained part
    index: np.ndarray | None   # flat indices of the trained elements (None: all of them)

    @property
    def count(self) -> int:
        return int(np.prod(self.shape)) if self.index is None else len(self.index)

    @property
    def itemsize(self) -> int:
        return 1 if self.dtype == "int8" else 4


class ParamLayout:
    """The trained elements of a training build's parameter table (train_params.json): which
    elements of each tensor a training step changes, and the scale of each."""

    def __init__(self, table: list[dict], source: str = "train_params.json",
                 rounding: str = "nearest"):
        self.table, self.rounding = table, rounding
        self.build_id: int | None = None   # the CRC-32 of model.c (from_build)
        self.entries = []
        for p in table:
            if "scale" not in p:
                raise TinycError(f"{source}: no scales of the trained parameters; rebuild with "
                                 "this tinyc (tinyc build ... --train SCHEME)")
            if p["scale"] is None:
                raise TinycError(f"{source}: trained parameter '{p['name']}' has no scale (the "
                                 "model gives it no quantization parameters): the fleet cannot "
                                 "average it")
            shape = tuple(p["shape"])
            per_out = np.asarray(p["scale"], np.float64)
            if per_out.shape != (shape[0],):
                raise TinycError(f"{source}: '{p['name']}' has {per_out.size} scales for "
                                 f"{shape[0]} output channels")
            index = None
            if p.get("channels") is not None:
                index = np.flatnonzero(_trained_mask(shape, p["channels"], p.get("groups", 1)))
            scale = np.broadcast_to(per_out.reshape((-1,) + (1,) * (len(shape) - 1)),
                                    shape).reshape(-1)
            self.entries.append(_Entry(p["name"], p["kind"], p["dtype"], shape,
                                       scale if index is None else scale[index], index))

    @classmethod
    def from_build(cls, out) -> "ParamLayout":
        from .targets.platformio import model_dir
        path = model_dir(out) / "train_params.json"
        if not path.is_file():
            raise TinycError(f"{out}: not a training build (no train_params.json); build it "
                             "with --train SCHEME")
        try:
            table = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TinycError(f"{path}: unreadable ({e}); rebuild") from None
        rep = Path(out) / "report.json"
        try:
            rounding = json.loads(rep.read_text())["training"].get("rounding", "nearest")
        except (OSError, ValueError, KeyError, TypeError):
            rounding = "nearest"   # a bare generate_c folder
        layout = cls(table, str(path), rounding)
        from .targets.platformio import link_build_id
        model_c = model_dir(out) / "model.c"
        layout.build_id = link_build_id(model_c) if model_c.is_file() else None
        return layout

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def nbytes(self) -> int:
        """Bytes of the trained elements as the device stores them (int8 / int32): what a
        device sends, and receives, per round."""
        return sum(e.count * e.itemsize for e in self.entries)

    @property
    def count(self) -> int:
        return sum(e.count for e in self.entries)

    def extract(self, params: dict) -> list[np.ndarray]:
        """Whole tensors (name -> int8 / int32, as the device's table) -> the trained elements'
        codes, one 1-D array per tensor."""
        out = []
        for e in self.entries:
            flat = np.asarray(params[e.name]).reshape(-1)
            out.append(np.ascontiguousarray(flat if e.index is None else flat[e.index],
                                            np.int8 if e.dtype == "int8" else np.int32))
        return out

    def insert(self, params: dict, codes: list) -> dict:
        """`params` (whole tensors) with their trained elements replaced by `codes`."""
        self.check(codes)
        out = dict(params)
        for e, c in zip(self.entries, codes):
            flat = np.array(params[e.name], dtype=np.int8 if e.dtype == "int8" else np.int32
                            ).reshape(-1)
            if e.index is None:
                flat[:] = c
            else:
                flat[e.index] = c
            out[e.name] = flat.reshape(e.shape)
        return out

    def check(self, codes: list) -> None:
        if len(codes) != len(self.entries):
            raise TinycError(f"{len(codes)} parameter arrays for {len(self.entries)} trained "
                             "tensors: is the server serving this build?")
        for e, c in zip(self.entries, codes):
            c = np.asarray(c)
            want = np.int8 if e.dtype == "int8" else np.int32
            if c.shape != (e.count,) or c.dtype != want:
                raise TinycError(f"trained elements of '{e.name}': got {c.dtype}{list(c.shape)}, "
                                 f"expected {np.dtype(want)}[{e.count}]: is the server serving "
                                 "this build?")

    def dequantize(self, codes: list) -> list[np.ndarray]:
        """Codes -> float64 values (code x scale of its output channel)."""
        self.check(codes)
        return [np.asarray(c, np.float64) * e.scale for e, c in zip(self.entries, codes)]

    def clamp(self, values: list) -> list[np.ndarray]:
        """Float values held to the range of the codes (+-127 / +-2^30 codes)."""
        return [np.clip(np.asarray(v, np.float64).reshape(-1),
                        -(WEIGHT_LIMIT if e.dtype == "int8" else BIAS_LIMIT) * e.scale,
                        (WEIGHT_LIMIT if e.dtype == "int8" else BIAS_LIMIT) * e.scale)
                for e, v in zip(self.entries, values)]

    def quantize(self, values: list, rng=None) -> list[np.ndarray]:
        """Float values -> codes as the device stores a trained parameter: in its scale, to the
        nearest code, or with `rng` (a numpy Generator) stochastically (floor(v / scale + u),
        u uniform in [0, 1): the rounding of a build's stochastic steps, which keeps in
        expectation an update smaller than a code), weights held to +-127, biases to +-2^30.
        A value q x scale comes back as q exactly either way."""
        out = []
        for e, v in zip(self.entries, values):
            q = np.asarray(v, np.float64).reshape(-1) / e.scale
            q = np.rint(q) if rng is None else np.floor(q + rng.random(q.shape))
            q = np.nan_to_num(q, nan=0.0)
            lim = WEIGHT_LIMIT if e.dtype == "int8" else BIAS_LIMIT
            out.append(np.clip(q, -lim, lim).astype(np.int8 if e.dtype == "int8" else np.int32))
        self.check(out)
        return out


def _trained_mask(shape: tuple, channels, groups: int) -> np.ndarray:
    """Which elements of a weight its update changes (train_params.json 'channels': global input
    channels; a conv's weight is [out_c, kh, kw, in_c / groups], a fully connected one
    [out, in])."""
    ch = np.zeros(0 if not len(shape) else shape[-1] * max(groups, 1), bool)
    ch[np.asarray(channels, np.int64)] = True
    if len(shape) == 2:                         # fully connected: [o, i]
        return np.broadcast_to(ch[None, :], shape)
    out_c, kh, kw, cin_g = shape
    cout_g = out_c // groups
    glob = (np.arange(out_c)[:, None] // cout_g) * cin_g + np.arange(cin_g)[None, :]
    return np.broadcast_to(ch[glob][:, None, None, :], shape)


# --------------------------------------------------------------------------- backends
class HostBackend:
    """The host build of a training model (targets/host.py HostTrainer: the generated C as a
    process). `trainer`: one to use (shared, e.g. a simulation's pool; the client pushes the
    parameters it trains from, so nothing leaks between clients)."""

    kind = "host"

    def __init__(self, out, trainer=None):
        from .targets.host import HostTrainer
        self.out = Path(out)
        self._own = trainer is None
        self.trainer = trainer if trainer is not None else HostTrainer(out)
        self.table = self.trainer.table
        self.name = f"host build of {out}"

    def pull(self) -> dict:
        return self.trainer.params()

    def push(self, params: dict) -> None:
        self.trainer.set_params(params)

    def train(self, x, y, lr) -> np.ndarray:
        """One step per sample; `lr` one rate or one per sample."""
        return self.trainer.train(x, y, lr)

    def infer(self, x) -> np.ndarray:
        return self.trainer.infer(x).reshape(len(x), -1)

    def set_step(self, step: int) -> None:
        self.trainer.set_step(step)

    def close(self) -> None:
        if self._own:
            self.trainer.close()


class DeviceBackend:
    """A device on the link (tinyc.device.Device: a board's serial port, socket://, or a QEMU
    firmware's pty with `link` a QemuLink to close at the end). Samples go over the link one
    by one; the device does the training."""

    kind = "device"

    def __init__(self, device, out, link=None):
        from .targets.platformio import model_dir
        self.dev, self.link = device, link
        self.info = device.check_build(out)
        if not self.info.training:
            raise TinycError(f"the device on {device.port} runs an inference build: it has no "
                             "trained parameters")
        self.table = json.loads((model_dir(out) / "train_params.json").read_text())
        self.name = f"device on {device.port}"

    @classmethod
    def qemu(cls, out, rep: dict, storage=None, timeout: float = 30.0) -> "DeviceBackend":
        """The build's firmware under QEMU (emulated boards)."""
        from .cli import board_of_report
        from .targets.qemu import QemuLink
        link = QemuLink(out, board_of_report(rep), rep, timeout=timeout,
                        storage=Path(storage) if storage else None)
        try:
            return cls(link.device, out, link)
        except BaseException:
            link.close()
            raise

    def pull(self) -> dict:
        return self.dev.pull(self.table)

    def push(self, params: dict) -> None:
        self.dev.push(params, self.table)

    def train(self, x, y, lr) -> np.ndarray:
        """One step per sample over the link; `lr` one rate or one per sample."""
        lrs = np.broadcast_to(np.asarray(lr, np.float32).reshape(-1), (len(x),))
        return np.asarray([self.dev.train(xi.reshape(-1), int(yi), float(r)).loss
                           for xi, yi, r in zip(x, y, lrs)], np.float32)

    def infer(self, x) -> np.ndarray:
        return np.stack([self.dev.infer(xi.reshape(-1))[0] for xi in x])

    def set_step(self, step: int) -> None:
        self.dev.step(step)

    def save(self):
        return self.dev.save()

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        else:
            self.dev.close()


_POOL: dict = {}


def pooled(key, make):
    """One object per process and key, made on first use: a simulation's worker process keeps
    one host build (and its data) for all the virtual devices it runs."""
    if key not in _POOL:
        _POOL[key] = make()
    return _POOL[key]


# --------------------------------------------------------------------------- the client
def payload_bytes(arrays) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays))


class FleetClient(NumPyClient):
    """A Flower client for one device. fit(): push the fleet's parameters, train `epochs`
    passes over the device's own samples (x int8 in the model layout, y labels), return the
    trained elements and the sample count; evaluate(): push them, classify the held-out
    samples (or the training samples when none are given). Raw samples never leave.

    Each fit is one run of the learning-rate schedule (lr_schedule.py): its local steps from
    the peak `lr` (the server's config may send "lr" and "lr_schedule") down, linear by default;
    the next round starts again from the peak."""

    def __init__(self, backend, layout: ParamLayout, x, y, lr: float, epochs: int = 1,
                 eval_x=None, eval_y=None, output_q: tuple[float, int] = (1.0, 0),
                 seed: int = 0, step_base: int | None = None, log=None,
                 lr_schedule: str = DEFAULT_LR_SCHEDULE):
        if len(x) == 0 or len(x) != len(y):
            raise TinycError(f"a device's data: {len(x)} inputs and {len(y)} labels")
        self.backend, self.layout = backend, layout
        self.x, self.y = np.asarray(x, np.int8), np.asarray(y, np.int64)
        self.eval_x = self.x if eval_x is None else np.asarray(eval_x, np.int8)
        self.eval_y = self.y if eval_y is None else np.asarray(eval_y, np.int64)
        self.lr, self.epochs, self.seed, self.step_base = float(lr), int(epochs), seed, step_base
        self.lr_schedule = check_schedule(lr_schedule)
        self.output_q = output_q
        self.bytes_up = self.bytes_down = 0
        self.rounds = 0
        self.log = log

    # -- the parameters
    def get_parameters(self, config) -> list[np.ndarray]:
        codes = self.layout.extract(self.backend.pull())
        self.bytes_up += payload_bytes(codes)
        return codes

    def set_parameters(self, codes) -> None:
        codes = [np.asarray(c) for c in codes]
        self.layout.check(codes)
        self.bytes_down += payload_bytes(codes)
        self.backend.push(self.layout.insert(self.backend.pull(), codes))

    # -- Flower's calls
    def check_server(self, config) -> None:
        """The server serves the build this device runs (the build id in its config)."""
        theirs, mine = config.get("build_id"), self.layout.build_id
        if theirs is not None and mine is not None and int(theirs) != mine:
            raise TinycError(f"the fleet server serves another build (build id "
                             f"0x{int(theirs):08x}; this device runs 0x{mine:08x})")

    def fit(self, parameters, config):
        self.check_server(config)
        down0, up0 = self.bytes_down, self.bytes_up
        self.set_parameters(parameters)
        lr = float(config.get("lr", self.lr))
        epochs = int(config.get("epochs", self.epochs))
        rnd = int(config.get("server_round", self.rounds + 1))
        if self.step_base is not None:   # a pooled host build: a step counter of its own
            self.backend.set_step(self.step_base + rnd * 100_000)
        order = np.concatenate([np.random.default_rng((self.seed, rnd, e)).permutation(len(self.x))
                                for e in range(epochs)])
        if int(config.get("steps", 0)) > 0:
            # a number of local steps instead of whole passes: the samples taken in turn, each
            # round going on where the last stopped (less drift between non-IID devices)
            steps = int(config["steps"])
            perm = np.random.default_rng((self.seed, 0)).permutation(len(self.x))
            order = perm[(np.arange(steps) + (rnd - 1) * steps) % len(self.x)]
        # the round's local steps are one run of the schedule
        step_rates = rates(lr, check_schedule(str(config.get("lr_schedule", self.lr_schedule)),
                                              "the server's lr_schedule"), len(order))
        losses = self.backend.train(self.x[order], self.y[order], step_rates)
        mu = float(config.get("proximal_mu", 0.0))
        if mu > 0:
            # FedProx: the device's step has no proximal term, so it is applied once, as the
            # proximal step of the local training: w <- (w + c w_global) / (1 + c),
            # c = mu x (the sum of the steps' rates) (the local update shrunk towards the
            # fleet's parameters; lr x steps at a constant rate).
            c = mu * float(np.sum(step_rates, dtype=np.float64))
            local = self.layout.dequantize(self.layout.extract(self.backend.pull()))
            glob = self.layout.dequantize([np.asarray(p) for p in parameters])
            prox = self.layout.quantize(
                [(w + c * g) / (1 + c) for w, g in zip(local, glob)],
                np.random.default_rng((self.seed, rnd)) if self.layout.rounding == "stochastic"
                else None)
            self.backend.push(self.layout.insert(self.backend.pull(), prox))
        codes = self.get_parameters({})
        self.rounds += 1
        finite = losses[np.isfinite(losses)]
        metrics = {"loss": float(finite.mean()) if len(finite) else float("nan"),
                   "bytes_down": self.bytes_down - down0, "bytes_up": self.bytes_up - up0}
        if self.log:
            self.log(f"round {rnd}: trained {len(order)} steps on {len(self.x)} samples, loss "
                     f"{metrics['loss']:.4f}; {metrics['bytes_down']:,} B in, "
                     f"{metrics['bytes_up']:,} B out")
        return codes, len(self.x), metrics

    def evaluate(self, parameters, config):
        self.check_server(config)
        self.set_parameters(parameters)
        acc, loss = self.accuracy(self.eval_x, self.eval_y)
        if self.log:
            self.log(f"round {config.get('server_round', self.rounds)}: the fleet's parameters "
                     f"pushed; accuracy {acc:.1%} on {len(self.eval_y)} samples")
        return loss, len(self.eval_y), {"accuracy": acc}

    def accuracy(self, x, y) -> tuple[float, float]:
        """(accuracy, mean cross-entropy of the dequantized logits) of the device on (x, y)."""
        return accuracy_loss(self.backend.infer(x), y, self.output_q)


def accuracy_loss(logits_q: np.ndarray, y, output_q: tuple[float, int]) -> tuple[float, float]:
    y = np.asarray(y, np.int64)
    z = (logits_q.reshape(len(y), -1).astype(np.float64) - output_q[1]) * output_q[0]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.mean(np.argmax(logits_q.reshape(len(y), -1), axis=1) == y)), \
        float(-logp[np.arange(len(y)), y].mean())


# --------------------------------------------------------------------------- the server
ROUNDINGS = ("master", "nearest", "stochastic")


class QuantizedStrategy(Strategy):
    """A Flower strategy (FedAvg, FedProx, ...) over the devices' codes: the results are
    dequantized before `inner` aggregates them, its aggregate is quantized back (ParamLayout).
    The global parameters Flower keeps and sends are codes. `wait_for`: clients to wait for
    before the first round (later rounds go on with those still there: a device that drops out
    does not stop the fleet); `on_round(round, summary)` is called after each round's fit.
    The devices are sent the aggregate on its own (Flower's evaluate: they push it, report their
    accuracy) after round `rounds`, the last, and every `eval_every` rounds (0: never else)."""

    def __init__(self, inner: FedAvg, layout: ParamLayout, wait_for: int = 1,
                 wait_timeout: float = 600.0, on_round=None, on_evaluate=None,
                 rounds: int | None = None, eval_every: int = 0, rounding: str = "master"):
        if rounding not in ROUNDINGS:
            raise TinycError(f"aggregate rounding {rounding!r}: one of {', '.join(ROUNDINGS)}")
        self.inner, self.layout, self.rounding = inner, layout, rounding
        self.master: list[np.ndarray] | None = None
        self._sent = None
        self.rounds, self.eval_every = rounds, eval_every
        self.wait_for, self.wait_timeout = wait_for, wait_timeout
        self.on_round, self.on_evaluate = on_round, on_evaluate
        self.history: list[dict] = []
        self.final_codes: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"QuantizedStrategy({self.inner!r})"

    def _round(self, values: list, server_round: int) -> list[np.ndarray]:
        """The aggregate (float) -> the codes the devices are sent. "master" (default): the
        server keeps the float aggregate as the fleet's master copy, adds the devices' updates
        to it (their codes after training minus the codes they were sent) and sends its
        nearest codes, so that progress under half a code accumulates on the server instead of
        being lost (nearest rounding of the aggregate) or turned into a random walk of every
        weight (stochastic rounding of it); bench/results/fleet.md compares the three."""
        if self.rounding == "stochastic":
            return self.layout.quantize(values, np.random.default_rng((0x7C1EE7, server_round)))
        return self.layout.quantize(values)

    def initialize_parameters(self, client_manager):
        params = self.inner.initialize_parameters(client_manager)
        if params is None:   # Flower then takes them from one device: wait for them all first
            self._wait(client_manager)
        return params

    def _wait(self, client_manager) -> None:
        if not client_manager.wait_for(self.wait_for, timeout=self.wait_timeout):
            raise TinycError(f"{client_manager.num_available()} of {self.wait_for} devices "
                             f"joined within {self.wait_timeout:g} s")

    def configure_fit(self, server_round, parameters, client_manager):
        if server_round == 1:
            self._wait(client_manager)
        self._sent = parameters_to_ndarrays(parameters) if parameters.tensors else None
        if client_manager.num_available() == 0:   # all gone: no round (Flower would wait a day)
            return []
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        deq = []
        sent = self._sent
        if self.rounding == "master" and sent is not None and self.master is None:
            self.master = self.layout.dequantize(sent)
        for proxy, res in results:
            values = self.layout.dequantize(parameters_to_ndarrays(res.parameters))
            if self.rounding == "master" and sent is not None:   # master + the device's update
                values = [m + v - s for m, v, s in zip(self.master, values,
                                                       self.layout.dequantize(sent))]
            deq.append((proxy, dataclasses.replace(
                res, parameters=ndarrays_to_parameters(values))))
        if isinstance(self.inner, FedAvgM) and sent is not None:
            # FedAvgM steps from the fleet's current parameters (its pseudo-gradient is their
            # difference to the average): the float master copy, or what the devices were sent
            self.inner.initial_parameters = ndarrays_to_parameters(
                self.master if self.master is not None else self.layout.dequantize(sent))
        params, metrics = self.inner.aggregate_fit(server_round, deq, failures)
        summary = {"round": server_round, "results": len(results), "failures": len(failures),
                   "samples": int(sum(r.num_examples for _, r in results)),
                   "bytes_up": [int(r.metrics.get("bytes_up", 0)) for _, r in results],
                   "bytes_down": [int(r.metrics.get("bytes_down", 0)) for _, r in results],
                   "loss": float(np.average([r.metrics.get("loss", np.nan) for _, r in results],
                                            weights=[r.num_examples for _, r in results]))
                   if results else float("nan")}
        self.history.append(summary)
        if params is None:
            if self.on_round:
                self.on_round(server_round, summary)
            return None, metrics
        values = parameters_to_ndarrays(params)
        if self.rounding == "master":
            self.master = self.layout.clamp(values)
        codes = self._round(values, server_round)
        self.final_codes = codes
        if self.on_round:
            self.on_round(server_round, summary)
        return ndarrays_to_parameters(codes), metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        # the aggregate reaches the devices with the next round's fit; after the last round (and
        # every eval_every rounds) it is sent to them on its own, and they report their accuracy
        last = self.rounds is not None and server_round >= self.rounds
        if not (last or self.eval_every and server_round % self.eval_every == 0) \
                or client_manager.num_available() == 0:
            return []
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        if not results:
            return None, {}
        n = sum(r.num_examples for _, r in results)
        acc = sum(r.num_examples * float(r.metrics.get("accuracy", 0.0)) for _, r in results) / n
        loss = sum(r.num_examples * float(r.loss) for _, r in results) / n
        if self.history and self.history[-1]["round"] == server_round:
            self.history[-1].update(eval_accuracy=acc, eval_loss=loss, eval_devices=len(results))
        if self.on_evaluate:
            self.on_evaluate(server_round, acc, len(results), len(failures))
        return loss, {"accuracy": acc}

    def evaluate(self, server_round, parameters):
        return self.inner.evaluate(server_round, parameters)


STRATEGIES = ("fedavg", "fedprox", "fedavgm")
SERVER_MOMENTUM = 0.9       # fedavgm: Flower's FedAvgM, server learning rate 1


def fleet_strategy(layout: ParamLayout, name: str = "fedavg", lr=None,
                   epochs: int = 1, proximal_mu: float = 0.01, wait_for: int = 1,
                   initial_codes: list | None = None, evaluate_fn=None,
                   fraction_fit: float = 1.0, fraction_evaluate: float = 1.0,
                   on_round=None, on_evaluate=None, wait_timeout: float = 600.0,
                   rounds: int | None = None, eval_every: int = 0,
                   rounding: str = "master", steps: int | None = None) -> QuantizedStrategy:
    """Flower's FedAvg (weighted by samples) or FedProx (`proximal_mu`), failures accepted,
    every available device in every round, wrapped in QuantizedStrategy. Each device is sent
    the round, `lr` (None: its own; a function of the round: a schedule) and `epochs` as its
    fit config, or `steps`: that many local steps per round instead of whole passes; after each round every
    device is sent the aggregate after the last round (`rounds`; and every `eval_every`):
    every device then holds it."""
    if name not in STRATEGIES:
        raise TinycError(f"strategy {name!r}: one of {', '.join(STRATEGIES)}")

    def fit_config(server_round: int) -> dict:
        rate = lr(server_round) if callable(lr) else lr
        return {"server_round": server_round, "epochs": int(epochs), "steps": int(steps or 0),
                **({"build_id": int(layout.build_id)} if layout.build_id is not None else {}),
                **({"lr": float(rate)} if rate is not None else {})}

    common = dict(fraction_fit=fraction_fit, fraction_evaluate=fraction_evaluate,
                  min_fit_clients=1, min_evaluate_clients=1 if fraction_evaluate else 0,
                  min_available_clients=1, accept_failures=True, on_fit_config_fn=fit_config,
                  on_evaluate_config_fn=lambda r: {"server_round": r, **(
                      {"build_id": int(layout.build_id)} if layout.build_id is not None else {})},
                  initial_parameters=ndarrays_to_parameters(initial_codes)
                  if initial_codes is not None else None, evaluate_fn=evaluate_fn,
                  fit_metrics_aggregation_fn=lambda m: {},
                  evaluate_metrics_aggregation_fn=lambda m: {})
    if name == "fedprox":
        inner = FedProx(proximal_mu=proximal_mu, **common)
    elif name == "fedavgm":   # server momentum: FedAvg's average as a step, with momentum
        inner = FedAvgM(server_momentum=SERVER_MOMENTUM, server_learning_rate=1.0, **common)
    else:
        inner = FedAvg(**common)
    return QuantizedStrategy(inner, layout, wait_for=wait_for, wait_timeout=wait_timeout,
                             on_round=on_round, on_evaluate=on_evaluate, rounds=rounds,
                             eval_every=eval_every, rounding=rounding)


def say(text: str) -> None:
    print(text, flush=True)


def serve(out, rounds: int, address: str, devices: int, strategy: str = "fedavg",
          lr: float | None = None, epochs: int = 1, proximal_mu: float = 0.01,
          wait_timeout: float = 600.0, save: str | None = None, eval_every: int = 0) -> dict:
    """Flower's gRPC server (flwr.server.start_server) for `rounds` rounds of the fleet of
    build `out`: waits for `devices` devices before the first round. Returns the history."""
    from flwr.server import ServerConfig, start_server
    layout = ParamLayout.from_build(out)
    quiet_flower("ERROR")

    def on_round(r, s):
        up, down = s["bytes_up"], s["bytes_down"]
        say(f"round {r}: {s['results']} devices trained on {s['samples']:,} samples"
            + (f", {s['failures']} failed (left out)" if s["failures"] else "")
            + f"; loss {s['loss']:.4f}; per device {max(down, default=0):,} B down, "
              f"{max(up, default=0):,} B up (trained parameters: {layout.nbytes:,} B)")

    def on_evaluate(r, acc, n, failed):
        say(f"round {r}: the aggregate pushed to {n} devices"
            + (f" ({failed} failed)" if failed else "") + f"; their accuracy {acc:.1%}")

    strat = fleet_strategy(layout, strategy, lr=lr, epochs=epochs, proximal_mu=proximal_mu,
                           wait_for=devices, on_round=on_round, on_evaluate=on_evaluate,
                           wait_timeout=wait_timeout, rounds=rounds, eval_every=eval_every)
    say(f"fleet      serving {out} on {address}: {rounds} rounds of {strategy}, waiting for "
        f"{devices} device{'s' * (devices != 1)}; {layout.count:,} trained elements "
        f"({layout.nbytes:,} B) cross per device and direction")
    try:
        start_server(server_address=address, config=ServerConfig(num_rounds=rounds),
                     strategy=strat)
    except (SystemExit, RuntimeError) as e:   # an address Flower cannot parse, or bind
        raise TinycError(f"the fleet server cannot listen on {address!r} ({e})") from None
    if strat.final_codes is None:
        raise TinycError("no round completed: no device returned parameters")
    if save:
        np.savez(save, **dict(zip(layout.names, strat.final_codes)))
    return {"history": strat.history, "codes": strat.final_codes}


def join(client: FleetClient, server: str, retries: int = 30) -> None:
    """Runs the client against the fleet server at `server` until the server ends the run
    (flwr.client.start_client over gRPC)."""
    import grpc
    from flwr.client import start_client
    quiet_flower("CRITICAL")
    try:
        start_client(server_address=server, client=client.to_client(), insecure=True,
                     max_retries=retries, max_wait_time=float(retries))
    except grpc.RpcError as e:
        # the legacy transport: a server that has finished its rounds cancels the stream
        if client.rounds == 0:
            raise TinycError(f"cannot reach the fleet server at {server}, or it ended before "
                             f"any round ({e.code().name}): is `tinyc fleet serve` running "
                             "there?") from None
    except (ConnectionError, OSError) as e:
        raise TinycError(f"cannot reach the fleet server at {server}: {e}") from None
    if client.rounds == 0:
        raise TinycError(f"cannot reach the fleet server at {server} (no round was run)")


"""The host side of the device link (runtime_c/src/link/tinyc_link.h): talk to a running tinyc
firmware over a serial port (a board's UART or USB CDC, QEMU's -serial pty) or a TCP socket
(`socket://HOST:PORT`), with pyserial for all of them.

    with Device("/dev/ttyACM0") as dev:        # or open_qemu(out) for the emulated board
        info = dev.info()
        y, cost = dev.infer(x_int8)             # int8 NHWC input -> int8 output
        t = dev.train(x_int8, label=3, lr=0.003)
        params = dev.pull(table)                # name -> array (train_params.json order)

Frame (both directions, little-endian): 0xA5 | version 1 | type u8 | length u16 | payload |
CRC-32 (zlib) of version .. payload. Answers carry type | 0x80; errors type 0xFF with payload
code u8, request type u8, message. README.md (Device link) lists the commands.
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import TinycError

SYNC, VERSION = 0xA5, 1
INFO, INFER, TRAIN, PARAMS_READ, PARAMS_WRITE, PARAMS_RESET, STATS, STEP, SAVE, RESTORE, \
    STORAGE = range(1, 12)
ERROR = 0xFF
ANSWER = 0x80
HEADER = struct.Struct("<BBBH")     # sync, version, type, length
MAX_FRAME_PAYLOAD = 0xFFFF
COMMAND_NAMES = {INFO: "info", INFER: "infer", TRAIN: "train", PARAMS_READ: "params read",
                 PARAMS_WRITE: "params write", PARAMS_RESET: "params reset", STATS: "stats",
                 STEP: "step", SAVE: "save", RESTORE: "restore", STORAGE: "storage"}
ERROR_NAMES = {1: "bad CRC", 2: "protocol version", 3: "unknown command", 4: "bad length",
               5: "timeout", 6: "not supported in this build", 7: "bad argument", 8: "storage"}
FLAG_TRAINING, FLAG_PROFILE, FLAG_STORAGE, FLAG_INSTRUCTIONS = 1, 2, 4, 8
INFO_ANSWER = struct.Struct("<BBHIIIIIIIIIII")
TRAIN_ANSWER = struct.Struct("<fIIIIIQ")
STATS_ANSWER = struct.Struct("<IIIQQIIIIIIIHHH")
STORAGE_ANSWER = struct.Struct("<BIBIBI")
NO_SLOT = 0xFF


def encode_frame(kind: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """One frame as the device expects it."""
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise TinycError(f"a frame payload holds at most {MAX_FRAME_PAYLOAD} bytes "
                         f"(got {len(payload)})")
    body = struct.pack("<BBH", version, kind, len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<I", zlib.crc32(body))


class DeviceError(TinycError):
    """The device answered a request with an error frame."""

    def __init__(self, code: int, request: int, message: str):
        self.code, self.request, self.message = code, request, message
        super().__init__(f"the device refused '{COMMAND_NAMES.get(request, request)}': "
                         f"{ERROR_NAMES.get(code, f'error {code}')} ({message})")


@dataclass
class DeviceInfo:
    version: int
    flags: int
    max_payload: int
    build_id: int
    input_size: int
    output_size: int
    arena_bytes: int
    layers: int
    classes: int
    param_bytes: int
    params: int
    param_sram_bytes: int
    link_buffer_bytes: int

    @property
    def training(self) -> bool:
        return bool(self.flags & FLAG_TRAINING)

    @property
    def storage(self) -> bool:
        return bool(self.flags & FLAG_STORAGE)

    @property
    def unit(self) -> str:
        return "instructions" if self.flags & FLAG_INSTRUCTIONS else "cycles"


@dataclass
class TrainAnswer:
    loss: float
    step: int            # the training step index after this step (stochastic rounding's)
    steps: int           # guard counters since the last reset (model.h tinyc_train_stats)
    skipped: int
    guarded: int
    refused: int
    cost: int            # cycles or instructions of tinyc_train_step


@dataclass
class Stats:
    frames: int
    errors: int
    skipped_bytes: int
    last_infer_cost: int
    last_train_cost: int
    steps: int
    steps_skipped: int
    steps_guarded: int
    updates: int
    refused_nonfinite: int
    refused_saturation: int
    step: int
    layers: int
    profile: dict            # layer -> count of the last run (--profile builds), this page


@dataclass
class StorageStatus:
    """The slot the device's parameters were last restored from or saved to (0 = A, 1 = B;
    None: none, the built parameters), its sequence number, and both slots' state."""
    loaded: int | None
    loaded_seq: int
    valid: tuple[bool, bool]
    seq: tuple[int, int]

    @classmethod
    def unpack(cls, data: bytes) -> "StorageStatus":
        if len(data) != STORAGE_ANSWER.size:
            raise TinycError(f"malformed storage answer from the device ({len(data)} bytes)")
        loaded, lseq, va, sa, vb, sb = STORAGE_ANSWER.unpack(data)
        return cls(None if loaded == NO_SLOT else loaded, lseq, (bool(va), bool(vb)), (sa, sb))

    def describe(self) -> str:
        slots = ", ".join(f"slot {'AB'[i]} " + (f"seq {self.seq[i]}" if self.valid[i] else "empty")
                          for i in range(2))
        src = (f"slot {'AB'[self.loaded]} seq {self.loaded_seq}" if self.loaded is not None
               else "no slot (the built parameters)")
        return f"parameters from {src}; {slots}"


class Device:
    """A tinyc firmware on the other end of `port`: a serial device (/dev/ttyACM0, COM3, a pty)
    or any pyserial URL (socket://HOST:PORT). `timeout`: seconds to wait for an answer."""

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 30.0):
        try:
            import serial
        except ImportError:
            raise TinycError("the device link needs pyserial: pip install pyserial") from None
        self.port, self.timeout = port, timeout
        try:
            self._serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.2,
                                                 write_timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise TinycError(f"cannot open the device port {port!r}: {e}; give the board's "
                             "serial port (e.g. /dev/ttyACM0) or socket://HOST:PORT") from None
        self._info: DeviceInfo | None = None

    # -------------------------------------------------------------------- frames
    def close(self) -> None:
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Bytes to the device as they are (tests send broken frames with it)."""
        import serial
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as e:
            raise TinycError(f"cannot write to the device on {self.port}: {e}") from None

    def _read(self, n: int, deadline: float) -> bytes:
        import serial
        got = bytearray()
        while len(got) < n:
            if time.monotonic() > deadline:
                raise TinycError(f"no answer from the device on {self.port} within "
                                 f"{self._waited:g} s: is the firmware running and the port "
                                 "right? (a board answers between two demo runs)")
            try:
                got += self._serial.read(n - len(got))
            except (serial.SerialException, OSError) as e:
                raise TinycError(f"cannot read from the device on {self.port}: {e}") from None
        return bytes(got)

    def read_frame(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next frame from the device: (type, payload). Bytes before the sync byte (a
        console's text) are skipped."""
        self._waited = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + self._waited
        while self._read(1, deadline)[0] != SYNC:
            pass
        head = self._read(4, deadline)
        version, kind, length = struct.unpack("<BBH", head)
        if version != VERSION:
            raise TinycError(f"the device on {self.port} speaks link protocol version {version}; "
                             f"this tinyc speaks {VERSION}: rebuild the firmware with this tinyc")
        payload = self._read(length, deadline)
        crc, = struct.unpack("<I", self._read(4, deadline))
        if crc != zlib.crc32(head + payload):
            raise TinycError(f"corrupt answer from the device on {self.port} (CRC mismatch): "
                             "check the cable and the baud rate")
        return kind, payload

    def request(self, kind: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Sends one request and returns the payload of its answer; an error answer raises
        DeviceError."""
        self.send_raw(encode_frame(kind, payload))
        answer, data = self.read_frame(timeout)
        if answer == ERROR:
            if len(data) < 2:
                raise TinycError(f"malformed error answer from the device on {self.port}")
            raise DeviceError(data[0], data[1], data[2:].decode("ascii", "replace"))
        if answer != kind | ANSWER:
            raise TinycError(f"the device answered type 0x{answer:02x} to a "
                             f"'{COMMAND_NAMES.get(kind, kind)}' request")
        return data

    # -------------------------------------------------------------------- commands
    def connect(self, attempt_seconds: float = 3.0) -> DeviceInfo:
        """INFO until the device answers, within the timeout: a board's demo listens only in
        the pause between two runs, and a request sent meanwhile is lost or cut short (the
        device then answers what it got with an error). The last error if none succeeds.
        Each attempt waits twice as long as the one before: a request sent while the device
        still waits for the rest of a cut frame only extends that frame, so attempts shorter
        than the device's byte time limit (TINYC_LINK_BYTE_TIMEOUT_MS on its clock, longer in
        wall time on a slow emulator) would keep it waiting for ever."""
        deadline = time.monotonic() + self.timeout
        attempt = attempt_seconds
        while True:
            try:
                return self.info(timeout=min(attempt, max(deadline - time.monotonic(), 0.1)))
            except TinycError:   # an error answer, a broken one or none: INFO never fails
                if time.monotonic() > deadline:
                    raise
            attempt *= 2
            time.sleep(0.2)
            self._serial.reset_input_buffer()

    def _unpack(self, layout: struct.Struct, data: bytes, what: str, exact: bool = True):
        if len(data) < layout.size or (exact and len(data) != layout.size):
            raise TinycError(f"malformed '{what}' answer from the device on {self.port} "
                             f"({len(data)} bytes)")
        return layout.unpack_from(data)

    def info(self, timeout: float | None = None) -> DeviceInfo:
        fields = self._unpack(INFO_ANSWER, self.request(INFO, timeout=timeout), "info")
        self._info = DeviceInfo(*fields[:13])
        return self._info

    @property
    def described(self) -> DeviceInfo:
        return self._info or self.info()

    def _input(self, x) -> bytes:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise TinycError(f"the device takes int8 inputs (got {x.dtype}): quantize them with "
                             "the model's input scale and zero point")
        if x.size != self.described.input_size:
            raise TinycError(f"an input holds {x.size} values; the device's model takes "
                             f"{self.described.input_size}")
        return np.ascontiguousarray(x).tobytes()

    def infer(self, x) -> tuple[np.ndarray, int]:
        """One int8 input (NHWC, input size values) -> (int8 output, cost of the inference in
        cycles or instructions)."""
        data = self.request(INFER, self._input(x))
        cost, = self._unpack(struct.Struct("<Q"), data, "infer", exact=False)
        out = np.frombuffer(data[8:], np.int8).copy()
        if out.size != self.described.output_size:
            raise TinycError(f"the device sent {out.size} output values, expected "
                             f"{self.described.output_size}")
        return out, cost

    def train(self, x, label: int, lr: float) -> TrainAnswer:
        """One training step on the device (tinyc_train_step) on int8 input x and its label."""
        payload = struct.pack("<if", int(label), float(lr)) + self._input(x)
        return TrainAnswer(*self._unpack(TRAIN_ANSWER, self.request(TRAIN, payload), "train"))

    def _chunk(self) -> int:
        return self.described.max_payload - 4

    def read_params(self) -> bytes:
        """Every trained parameter as one byte string (tinyc_params[] order, whole tensors)."""
        total, out = self.described.param_bytes, bytearray()
        while len(out) < total:
            n = min(self._chunk(), total - len(out))
            data = self.request(PARAMS_READ, struct.pack("<IH", len(out), n))
            if len(data) != 4 + n or struct.unpack_from("<I", data)[0] != len(out):
                raise TinycError("malformed parameter chunk from the device")
            out += data[4:]
        return bytes(out)

    def write_params(self, raw: bytes) -> None:
        if len(raw) != self.described.param_bytes:
            raise TinycError(f"{len(raw)} parameter bytes; the device's model has "
                             f"{self.described.param_bytes}")
        for at in range(0, len(raw), self._chunk()):
            self.request(PARAMS_WRITE, struct.pack("<I", at) + raw[at:at + self._chunk()])

    def pull(self, table: list[dict]) -> dict[str, np.ndarray]:
        """The trained parameters, name -> int8 / int32 array (train_params.json's table)."""
        from .targets.firmware_train import unpack_params
        return unpack_params(self.read_params(), table)

    def push(self, params: dict, table: list[dict]) -> None:
        """Replaces the trained parameters with `params` (name -> array, every tensor of the
        table, its shape)."""
        from .targets.firmware_train import params_bytes
        missing = [p["name"] for p in table if p["name"] not in params]
        if missing:
            raise TinycError(f"parameters missing: {', '.join(missing[:5])}")
        for p in table:
            a = np.asarray(params[p["name"]])
            if tuple(a.shape) != tuple(p["shape"]):
                raise TinycError(f"parameter '{p['name']}' has shape {a.shape}; the model's is "
                                 f"{tuple(p['shape'])}")
            want = np.int8 if p["dtype"] == "int8" else np.int32
            if a.dtype != want:
                raise TinycError(f"parameter '{p['name']}' is {a.dtype}; the model's is "
                                 f"{np.dtype(want)}")
        self.write_params(params_bytes(params, table))

    def reset_params(self) -> None:
        """Back to the parameters the firmware was built with; step and guard counters to 0."""
        self.request(PARAMS_RESET)

    def step(self, value: int | None = None) -> int:
        """The training step index (stochastic rounding's); sets it when `value` is given."""
        data = self.request(STEP, b"" if value is None else struct.pack("<I", value))
        return self._unpack(struct.Struct("<I"), data, "step")[0]

    def stats(self, first_layer: int = 0) -> Stats:
        data = self.request(STATS, struct.pack("<H", first_layer))
        head = self._unpack(STATS_ANSWER, data, "stats", exact=False)
        n = head[-1]
        if len(data) != STATS_ANSWER.size + 4 * n:
            raise TinycError(f"malformed 'stats' answer from the device on {self.port}")
        counts = struct.unpack_from(f"<{n}I", data, STATS_ANSWER.size)
        first = head[-2]
        return Stats(*head[:-3], layers=head[-3],
                     profile={first + i: c for i, c in enumerate(counts)})

    def save(self) -> StorageStatus:
        """The trained parameters (and the step index) to the device's persistent storage."""
        return StorageStatus.unpack(self.request(SAVE))

    def restore(self) -> StorageStatus:
        """The newest valid saved parameters back (a device also does this at boot)."""
        return StorageStatus.unpack(self.request(RESTORE))

    def storage(self) -> StorageStatus:
        return StorageStatus.unpack(self.request(STORAGE))

    def check_build(self, out) -> DeviceInfo:
        """The device must run the model of build folder `out` (CRC-32 of its model.c)."""
        from .targets.platformio import link_build_id, model_dir
        info = self.connect()
        model_c = model_dir(out) / "model.c"
        if not model_c.is_file():
            raise TinycError(f"{out}: no model.c; is it a tinyc build folder?")
        want = link_build_id(model_c)
        if info.build_id != want:
            raise TinycError(f"the device on {self.port} runs another model (build id "
                             f"0x{info.build_id:08x}, {out} is 0x{want:08x}): flash it with "
                             f"`tinyc flash {out}`, or give the build folder it was built from")
        return info

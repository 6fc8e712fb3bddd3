"""A fleet that learns together: Flower's simulation of 100 host-build devices on non-IID splits.

The model: the learner demo's network (examples/digits_net.py: a dense layer written as a
full-image Conv, a 1x1 Conv, a Gemm head) on Fashion-MNIST downsampled to 14x14 (the Debian
package dataset-fashion-mnist; no download), pretrained in float on the classes 0-4 and built
for training with `--train last:1` (the last hidden layer and a new 5-class head: 2,356 B of
trained parameters) to learn the classes 5-9 (sandal, shirt, sneaker, bag, ankle boot).

The fleet: DEVICES virtual devices of 60 samples of the new task each, non-IID: each device's
class mix drawn from Dirichlet(0.5) (--split dirichlet:0.5, the usual benchmark split), or two
class-sorted shards of 30 per device (--split shards: McMahan et al.'s pathological split, most
devices see two classes). Flower's
simulation engine (flwr.simulation.run_simulation, Ray backend, 2 CPUs) runs one ClientApp per
device per round; every device trains one pass over its own samples per round in the host build
of the generated C (tinyc_train_step as on the board). 100 processes of the C are too heavy for
2 cores: each Ray worker keeps one host-build process (HostTrainer) and the virtual devices it
runs swap their parameters in and out of it (each fit pushes the fleet's parameters first, and
sets a step counter of its own for the stochastic rounding). The server's evaluation runs the
aggregate on the held-out set after each round.

Compared with: each device alone (the same passes over its own data, from the same start) and
centralised training on the union of the devices' data (one pass per round, at the build's lr
and at the fleet's: the better is the reference).

Usage: python bench/fleet.py [--devices 100] [--rounds 20] [--fleet-lr 0.01] [--lr-to LR]
       [--local-epochs 1 | --local-steps K] [--split dirichlet:0.5|shards]
       [--variants fedavg,fedprox,fedavg-nearest,fedavg-stochastic] [--out bench/results/fleet]
       -> bench/results/fleet.md and .json (needs the 'bench' extra: Flower's simulation on Ray)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.REPO
sys.path.insert(0, str(ROOT / "examples"))
HW = 14
HIDDEN = (64, 32)
OLD, NEW = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SHARD = 30
N_TEST = 1000
LR = 0.01
SEED = 0


def fashion(which: str) -> tuple[np.ndarray, np.ndarray]:
    import gzip
    images = common.fashion_images(which)
    with gzip.open(common.FASHION_DIR / f"{which}-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8).astype(np.int64)
    x = images.reshape(-1, HW, 2, HW, 2).mean(axis=(2, 4)) / 255.0   # 28x28 -> 14x14
    return x.astype(np.float32)[:, None], labels


def build_model(path: Path, x, y) -> Path:
    """digits_net's layers for 14x14 inputs, pretrained (float, scikit-learn) on OLD."""
    from sklearn.neural_network import MLPClassifier
    from digits_net import save_mlp_as_cnn
    keep = np.isin(y, OLD)
    mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=60, random_state=SEED)
    mlp.fit(x[keep][:6000].reshape(-1, HW * HW), y[keep][:6000])
    return save_mlp_as_cnn(mlp, HW, path, "fashion_net")


def dirichlet_pick(new: np.ndarray, y: np.ndarray, devices: int, alpha: float, rng
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each device: 2 * SHARD samples whose class mix is drawn from Dirichlet(alpha) (the usual
    non-IID split of federated-learning benchmarks), taken without replacement from the
    shuffled pool `new` of the new task. Returns (the union's indices, each device's indices
    into it)."""
    by_class = {c: list(new[y[new] == c]) for c in NEW}
    picks, parts, at = [], [], 0
    for _ in range(devices):
        counts = rng.multinomial(2 * SHARD, rng.dirichlet([alpha] * len(NEW)))
        mine = [by_class[c].pop() for c, n in zip(NEW, counts) for _ in range(n)]
        picks += mine
        parts.append(np.arange(at, at + len(mine)))
        at += len(mine)
    return np.asarray(picks), parts


def non_iid(y: np.ndarray, devices: int, rng) -> list[np.ndarray]:
    """2 shards of SHARD samples per device, the shards cut from the samples sorted by class."""
    order = np.argsort(y, kind="stable")
    shards = order[:2 * devices * SHARD].reshape(2 * devices, SHARD)
    pick = rng.permutation(2 * devices).reshape(devices, 2)
    return [np.concatenate([shards[a], shards[b]]) for a, b in pick]


# ------------------------------------------------------------------ the virtual devices (Ray)
def client_fn(context):
    """One virtual device: its partition of the data file; a host-build process of the Ray
    worker (tinyc.fleet.pooled), its parameters swapped in by each fit."""
    from tinyc import fleet
    work = Path(context.run_config["work"]) if "work" in context.run_config else \
        Path(os.environ["TINYC_FLEET_BENCH"])
    k = int(context.node_config["partition-id"])
    data = fleet.pooled(("data", str(work)), lambda: dict(np.load(work / "devices.npz")))
    trainer = fleet.pooled(("trainer", str(work)),
                           lambda: fleet.HostBackend(work / "build").trainer)
    layout = fleet.pooled(("layout", str(work)),
                          lambda: fleet.ParamLayout.from_build(work / "build"))
    idx = data[f"d{k}"]
    return fleet.FleetClient(fleet.HostBackend(work / "build", trainer), layout,
                             data["x"][idx], data["y"][idx], lr=LR, seed=k,
                             step_base=k * 1000,
                             # constant within a round, as the centralised and alone baselines
                             # below train (and as bench/results/fleet*.md were measured)
                             lr_schedule="constant").to_client()


def lr_schedule(a):
    """The fleet's lr in round r (from 1): --fleet-lr, decayed geometrically to --lr-to."""
    if not a.lr_to:
        return lambda r: a.fleet_lr
    return lambda r: float(a.fleet_lr * (a.lr_to / a.fleet_lr) ** ((r - 1) / max(a.rounds - 1, 1)))


def evaluate(trainer, layout, base, codes, x, y, out_q):
    from tinyc import fleet
    trainer.set_params(layout.insert(base, [np.asarray(c) for c in codes]))
    return fleet.accuracy_loss(trainer.infer(x).reshape(len(y), -1), y, out_q)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--split", default="dirichlet:0.5",
                    help="non-IID split: dirichlet:ALPHA (class mix of each device drawn from "
                         "Dirichlet(ALPHA), default 0.5) or shards (two class-sorted shards per "
                         "device: most devices see two classes)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--variants", default="fedavg,fedprox,fedavg-nearest,fedavg-stochastic",
                    help="fleets to run, the first is the main one: " + ", ".join(VARIANTS))
    ap.add_argument("--mu", type=float, default=0.01)
    ap.add_argument("--fleet-lr", type=float, default=LR,
                    help="the devices' learning rate in the fleet (default: the build's)")
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--local-steps", type=int, default=0,
                    help="local steps per device and round instead of --local-epochs passes")
    ap.add_argument("--lr-to", type=float,
                    help="decay the fleet's lr geometrically from --fleet-lr in round 1 to this "
                         "in the last round (default: constant)")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_fleet"))
    ap.add_argument("--out", default=str(common.RESULTS_DIR / "fleet"))
    a = ap.parse_args()
    t_start = time.monotonic()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from tinyc import fleet
    from tinyc.cli import load_report
    from tinyc.datasets import model_inputs
    from tinyc.targets.host import HostTrainer
    import subprocess

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    x, y = fashion("train")
    xt, yt = fashion("t10k")
    rng = np.random.default_rng(SEED)
    new = np.flatnonzero(np.isin(y, NEW))
    new = new[rng.permutation(len(new))]
    calib, new = new[-64:], new[:-64]
    if a.split == "shards":
        pool = new[:2 * a.devices * SHARD]
    else:
        pool, parts = dirichlet_pick(new, y, a.devices, float(a.split.split(":")[1]), rng)
    test = np.flatnonzero(np.isin(yt, NEW))[:N_TEST]
    model = build_model(work / "fashion_net.onnx", x, y)
    np.save(work / "calib.npy", x[calib])
    subprocess.run([sys.executable, "-m", "tinyc.cli", "build", model, "--board", "mps2_an386",
                    "-o", work / "build", "--calib", work / "calib.npy", "--train", "last:1",
                    "--num-classes", "5", "--lr", str(LR)], check=True, stdout=subprocess.DEVNULL)
    rep = load_report(work / "build")
    out_q = (rep["output"]["scale"], rep["output"]["zero_point"])
    xq, yq = model_inputs(rep, x[pool], "x"), y[pool] - NEW[0]
    xtq, ytq = model_inputs(rep, xt[test], "x"), yt[test] - NEW[0]
    if a.split == "shards":
        parts = non_iid(yq, a.devices, rng)
    np.savez(work / "devices.npz", x=xq, y=yq, **{f"d{k}": p for k, p in enumerate(parts)})
    classes = [int((np.bincount(yq[p], minlength=len(NEW)) >= 0.1 * len(p)).sum()) for p in parts]
    layout = fleet.ParamLayout.from_build(work / "build")
    print(f"{a.devices} devices x {2 * SHARD} samples (classes per device: "
          f"{np.bincount(classes, minlength=len(NEW) + 1).tolist()}), test {len(ytq)}; trained elements "
          f"{layout.count:,} ({layout.nbytes:,} B)", flush=True)

    trainer = HostTrainer(work / "build")
    base = trainer.params()
    start = layout.extract(base)
    acc0 = evaluate(trainer, layout, base, start, xtq, ytq, out_q)

    # centralised: one pass over the union per round, the union shuffled each pass, at the
    # build's lr and at the fleet's (the better one is the reference)
    t0 = time.monotonic()
    centrals = {}
    sched = lr_schedule(a)
    # a device's passes over its data per round; centralised makes as many over the union
    per_round = a.local_steps / (2 * SHARD) if a.local_steps else a.local_epochs
    passes = int(np.ceil(a.rounds * per_round))
    for lr in sorted({LR, a.fleet_lr}, key=str) + (["schedule"] if a.lr_to else []):
        trainer.reset()
        centrals[lr] = []
        for r in range(1, passes + 1):
            order = np.random.default_rng((SEED, r)).permutation(len(yq))
            rate = sched(int((r - 1) / per_round) + 1) if lr == "schedule" else lr
            trainer.train(xq[order], yq[order], rate)
            centrals[lr].append(evaluate(trainer, layout, trainer.params(), layout.extract(
                trainer.params()), xtq, ytq, out_q))
        print(f"centralised lr {lr}: {centrals[lr][-1]:.1%} after {len(centrals[lr])} passes",
              flush=True)
    central_lr = max(centrals, key=lambda k: centrals[k][-1])
    central = [centrals[central_lr][max(int(np.ceil(r * per_round)), 1) - 1]
               for r in range(1, a.rounds + 1)]   # after as many passes as the fleet's round r
    t_central = time.monotonic() - t0

    # each device alone: a.rounds passes over its own samples
    t0 = time.monotonic()
    alone = []
    for k, p in enumerate(parts):
        trainer.reset()
        for r in range(1, passes + 1):
            order = np.random.default_rng((k, r, 0)).permutation(len(p))
            trainer.train(xq[p][order], yq[p][order], sched(int((r - 1) / per_round) + 1))
        alone.append(evaluate(trainer, layout, trainer.params(),
                              layout.extract(trainer.params()), xtq, ytq, out_q))
    t_alone = time.monotonic() - t0
    print(f"alone: best device {max(alone):.1%}, mean {np.mean(alone):.1%} ({t_alone:.0f} s)",
          flush=True)

    # the fleet: Flower's simulation engine, once per variant
    os.environ["TINYC_FLEET_BENCH"] = str(work)
    fleets = {}
    for variant in a.variants.split(","):
        fleets[variant] = run_fleet(variant, a, work, trainer, layout, base, start,
                                    (xtq, ytq, out_q))
    trainer.close()
    main_run = fleets[a.variants.split(",")[0]]["rows"]
    within = next((r["round"] for r in main_run if r["fleet"] >= central[-1] - 0.02), None)
    result = {"provenance": common.provenance(), "devices": a.devices, "rounds": a.rounds,
              "variants": {k: VARIANTS[k] for k in fleets}, "mu": a.mu,
              "split": a.split, "lr": LR, "fleet_lr": a.fleet_lr, "lr_to": a.lr_to, "local_epochs": a.local_epochs,
              "local_steps": a.local_steps, "passes": passes,
              "central_lr": central_lr, "centrals": {str(k): v for k, v in centrals.items()},
              "shard": SHARD, "classes_per_device": np.bincount(classes, minlength=len(NEW) + 1).tolist(),
              "trained_elements": layout.count, "trained_bytes": layout.nbytes,
              "start_accuracy": acc0, "alone": alone, "central": central, "fleets": fleets,
              "main": a.variants.split(",")[0], "fleet_final": main_run[-1]["fleet"],
              "within_2_points_round": within,
              "wall_s": {"central": t_central, "alone": t_alone,
                         **{k: v["wall_s"] for k, v in fleets.items()},
                         "total": time.monotonic() - t_start}}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    write_md(out.with_suffix(".md"), result)
    print(f"wrote {out.with_suffix('.md')} and .json", flush=True)
    return 0


SPLITS = {"dirichlet": "each device's class mix drawn from Dirichlet({})",
          "shards": "two class-sorted shards of 30 samples per device"}

VARIANTS = {
    "fedavg": "Flower's FedAvg (weighted by samples); the server keeps the float aggregate as "
              "the master copy and sends its nearest codes (tinyc fleet's default)",
    "fedprox": "Flower's FedProx (mu, the proximal step applied once after the local pass); "
               "master copy as fedavg",
    "fedavgm": "Flower's FedAvgM (server momentum 0.9, server learning rate 1) over the master "
               "copy: the average as a step of the fleet's parameters, with momentum",
    "fedavg-nearest": "FedAvg, no master copy: the aggregate rounded to the nearest code each "
                      "round (ablation)",
    "fedavg-stochastic": "FedAvg, no master copy: the aggregate rounded stochastically each round "
                         "(ablation)",
}


def run_fleet(variant: str, a, work: Path, trainer, layout, base, start, test) -> dict:
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation
    from tinyc import fleet
    if variant not in VARIANTS:
        common.die(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
    fleet.quiet_flower("ERROR")
    xtq, ytq, out_q = test
    per_round = []
    t0 = time.monotonic()

    def server_eval(r, codes, config):
        acc = evaluate(trainer, layout, base, codes, xtq, ytq, out_q)
        per_round.append({"round": r, "accuracy": acc, "t": time.monotonic() - t0})
        print(f"{variant} round {r}: fleet accuracy {acc:.1%}", flush=True)
        return 1.0 - acc, {"accuracy": acc}

    strategy = fleet.fleet_strategy(layout, variant.split("-")[0], lr=lr_schedule(a),
                                    rounding=(variant.split("-") + ["master"])[1],
                                    epochs=a.local_epochs, steps=a.local_steps,
                                    proximal_mu=a.mu, wait_for=1, initial_codes=start,
                                    evaluate_fn=server_eval, fraction_evaluate=0.0)

    def server_fn(context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=a.rounds))

    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn),
                   num_supernodes=a.devices,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False,
                                                 "log_to_driver": False}})
    wall = time.monotonic() - t0
    hist = {h["round"]: h for h in strategy.history}
    rows = []
    for e in per_round:
        r = e["round"]
        if r == 0:
            continue
        h = hist.get(r, {})
        rows.append({"round": r, "fleet": e["accuracy"], "devices": h.get("results"),
                     "failures": h.get("failures"),
                     "bytes_up_max": max(h.get("bytes_up", [0])),
                     "bytes_down_max": max(h.get("bytes_down", [0])),
                     "bytes_up_total": sum(h.get("bytes_up", [])),
                     "bytes_down_total": sum(h.get("bytes_down", [])), "loss": h.get("loss"),
                     "t": e["t"]})
    return {"rows": rows, "wall_s": wall}


def write_md(path: Path, r: dict) -> None:
    names = list(r["fleets"])
    main = r["fleets"][r["main"]]["rows"]
    rows = []
    for i, x in enumerate(main):
        rows.append([x["round"], *(f"{r['fleets'][n]['rows'][i]['fleet']:.1%}" for n in names),
                     f"{r['central'][x['round'] - 1]:.1%}", x["devices"], x["failures"],
                     f"{x['bytes_down_max']:,}", f"{x['bytes_up_max']:,}",
                     f"{x['bytes_up_total'] + x['bytes_down_total']:,}", f"{x['t']:.0f}"])
    alone = np.asarray(r["alone"])
    within = r["within_2_points_round"]
    finals = "; ".join(f"{n} {r['fleets'][n]['rows'][-1]['fleet']:.1%} "
                       f"({r['fleets'][n]['wall_s']:.0f} s)" for n in names)
    variants = "\n".join(f"- `{n}`: {r['variants'][n]}" for n in names)
    text = f"""# A fleet that learns together: {r['devices']} devices in Flower's simulation

bench/fleet.py (its docstring: model, data, split). Fashion-MNIST at 14x14 (the Debian package
dataset-fashion-mnist); a network pretrained in float on the classes 0-4 learns the classes 5-9
with `--train last:1` (the last hidden layer and a new head: {r['trained_elements']:,} trained
elements, {r['trained_bytes']:,} B as the device stores them: int8 weights, int32 biases).
{r['devices']} virtual devices of {2 * r['shard']} samples each, non-IID ({SPLITS[r['split'].split(':')[0]].format(*r['split'].split(':')[1:])};
devices holding 1/2/3/4/5 classes (>= 10% of their samples): {r['classes_per_device'][1:]}); in the
fleet each device trains {f"{r['local_steps']} steps (its samples in turn)" if r['local_steps'] else f"{r['local_epochs']} pass(es) over its own data"} per round at lr
{r['fleet_lr']}{f" decayed geometrically to {r['lr_to']} in the last round" if r['lr_to'] else ""}
(the build's: {r['lr']}), every device in every round (Flower's
simulation engine on Ray, 2 CPUs: a pool of 2 host-build processes, the virtual devices'
parameters swapped in and out). Accuracy of the aggregate on {N_TEST:,} held-out test images of
the new task (before any training: {r['start_accuracy']:.1%}).

{variants}

## Results

- **fleet ({r['main']}) after {r['rounds']} rounds: {r['fleet_final']:.1%}**; centralised
  training on the union of the devices' data (as many passes as a device makes, the best of
  lr {', '.join(r['centrals'])}: {r['central_lr']}): {r['central'][-1]:.1%} after
  {r['passes']} passes
  ({'; '.join(f"lr {k}: {v[-1]:.1%}" for k, v in r['centrals'].items())}). The fleet is within 2 points of that
  {f"from round **{within}**" if within is not None else "in **no** round"}
  ({'target met' if within is not None else 'target NOT met'}).
- each device alone ({r['passes']} passes over its own samples at the fleet's
  lr, from the same start): best
  **{alone.max():.1%}**, mean {alone.mean():.1%}, worst {alone.min():.1%} (its own class mix): the fleet {'beats' if r['fleet_final'] > alone.max() else 'does NOT beat'} the
  best single device by {100 * (r['fleet_final'] - alone.max()):.1f} points.
- after {r['rounds']} rounds: {finals}.
- bytes per round and device, each way: the trained elements only, {r['trained_bytes']:,} B (=
  the trained parameters' size as the device stores them; no frozen weight, no sample).
  Flower's serialisation adds an .npy header of ~128 B to each of its 4 arrays (not counted).
- wall time (2 cores shared with other jobs): centralised {r['wall_s']['central']:.0f} s, the
  {r['devices']} single devices {r['wall_s']['alone']:.0f} s, each fleet above (Ray's start-up
  included); the whole bench {r['wall_s']['total']:.0f} s.

{common.md_table(["round", *names, "centralised", "devices", "failed", "B down / device",
                  "B up / device", "B all devices", "t (s)"], rows)}

(devices, failures, bytes and t: the {r['main']} fleet.)

## Provenance

{common.provenance_md(r['provenance'], r['wall_s']['total'])}
"""
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

"""The ``p2pspace`` command line: ``demo``, ``simulate`` and ``bench``.

Every error a user can cause prints one line on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from p2pspace import bench
from p2pspace.errors import P2PSpaceError
from p2pspace.identity import format_endpoint_id
from p2pspace.testing.simnet import (
    FAULT_KINDS,
    Faults,
    SimNetwork,
    run_simulation,
    write_logs,
)


def _faults(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown)}; choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _workloads(text: str) -> list[str]:
    names = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in bench.WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"workloads are {', '.join(bench.WORKLOADS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pspace", description="Peer-to-peer shared spaces: replicated, signed, ordered."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="three endpoints edit records concurrently under faults, then converge"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated network")
    demo.add_argument("--deltas", type=_positive, default=60, help="edits to make in all")

    sim = sub.add_parser("simulate", help="random rdb workloads on the simulated network")
    sim.add_argument("--endpoints", type=_positive, default=3)
    sim.add_argument("--deltas", type=_positive, default=100)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--faults", type=_faults, default=[], help=",".join(FAULT_KINDS))
    sim.add_argument("--topology", choices=("mesh", "ring"), default="mesh")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--dump-logs", type=Path, metavar="DIR", help="write each executed order")

    ben = sub.add_parser("bench", help="run the benchmark workloads with same-run baselines")
    ben.add_argument("--json", action="store_true", help="one JSON object per workload and line")
    ben.add_argument("--workload", type=_workloads, default=list(bench.WORKLOADS))
    ben.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ben.add_argument(
        "--repeat", type=_positive, default=3, help="runs per workload; medians are reported"
    )
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="p2pspace-demo-") as tmp:
        net = SimNetwork(Path(tmp), endpoints=3, seed=args.seed, faults=Faults.of(FAULT_KINDS))
        try:
            print("p2pspace demo: 3 endpoints share one space on a simulated LAN")
            print("  faults: dropped, duplicated and reordered frames, a partition, crashes")
            span = max(2000, args.deltas * 30)
            net.schedule_workload(args.deltas, over_ms=span)
            net.schedule_faults(over_ms=span)
            net.run_for(span + 100)
            print(
                f"  after {span} ms: {net.stats.deltas_created} edits, {net.stats.dropped} frames "
                f"dropped, {net.stats.duplicated} duplicated, {net.stats.partitions} partition(s), "
                f"{net.stats.crashes} crash(es)"
            )
            net.heal()
            quiet = net.run_until_quiet()
            result = net.check_convergence()
            for node in net.nodes:
                replica = net.replica(node.index)
                assert node.endpoint is not None
                print()
                shown_id = format_endpoint_id(node.endpoint.endpoint_id)[:14]
                print(
                    f"endpoint {node.index} ({shown_id}): "
                    f"{replica.executed_count()} deltas executed, {replica.stats.undone} undone, "
                    f"{replica.stats.redone} redone"
                )
                view = replica.rdb()
                for record, fields in view.records("t"):
                    shown = ", ".join(f"{k}={v}" for k, v in sorted(fields.items()))
                    print(f"    t/{record:<28} {shown}")
            print()
            if quiet and result.converged:
                print("all replicas are identical (same order, same state)")
                return 0
            print("replicas differ: " + "; ".join(result.reasons or ("did not settle",)))
            return 1
        finally:
            net.close()


def cmd_simulate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="p2pspace-sim-") as tmp:
        report = run_simulation(
            Path(tmp),
            endpoints=args.endpoints,
            deltas=args.deltas,
            seed=args.seed,
            faults=args.faults,
            topology=args.topology,
            dump_logs=args.dump_logs,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "converged": report.converged,
                    "deltas": report.deltas,
                    "undone": report.undone,
                    "redone": report.redone,
                    "seconds": round(report.seconds, 3),
                    "endpoints": list(report.endpoints),
                }
            )
        )
    else:
        state = "converged" if report.converged else "DID NOT CONVERGE"
        print(
            f"seed {args.seed}: {args.endpoints} endpoints, {report.deltas} deltas, "
            f"faults {','.join(args.faults) or 'none'}: {state} in {report.seconds:.2f} s "
            f"({report.undone} undone, {report.redone} redone)"
        )
        for reason in report.reasons:
            print(f"  {reason}")
    return 0 if report.converged else 1


def cmd_bench(args: argparse.Namespace) -> int:
    results = bench.run(args.workload, quick=args.quick, repeat=args.repeat)
    print(bench.to_json_lines(results) if args.json else bench.format_table(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "simulate":
            return cmd_simulate(args)
        return cmd_bench(args)
    except P2PSpaceError as exc:
        print(f"p2pspace: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"p2pspace: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


__all__ = ["build_parser", "entry", "main", "write_logs"]

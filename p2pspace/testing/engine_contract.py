"""check_engine: the Engine contract as a suite that runs on any engine, built-in or a tool's own.

Theory of operation. Replicas undo and redo already-executed deltas whenever a late one sorts
before them, and they store undo records with the log; so an engine that is wrong in a way that
never shows on a single replica (an undo that leaves a byte behind, a record that does not
survive storage, a validate that answers differently tomorrow) makes replicas diverge. The suite
checks each rule of :mod:`p2pspace.core.engine` directly, on states the engine reaches from its
own sample commands:

1. ``validate`` accepts every sample command and rejects every known-invalid one with
   :class:`~p2pspace.errors.CommandError`, and gives the same verdicts after any execution or
   undo (it sees no state, so a changed verdict means it reads hidden state).
2. On every visited state, each command alone: ``execute`` does not raise (a command that does
   not apply is a recorded no-op), leaves the command's arguments as they were, and is
   deterministic (twice from the same state and context: the same state and undo record); the
   undo record is CBOR-native and survives a canonical encode/decode round trip (the replica
   stores it); ``undo`` with the original record and with the decoded one restores the state
   byte for byte.
3. Seeded random sequences of the commands, executed in order then undone in reverse with the
   decoded records, restore every intermediate state byte for byte.
4. When ``footprint`` is declared (not ``None``): every key that execute or undo touched (get,
   put, delete, and each key a scan yielded) is in it; and two commands with disjoint declared
   footprints commute (either order gives the same state and the same undo records), which is
   what lets a merge leave them in place. The second rule also catches a footprint that misses a
   key a scan *would* have seen.

Every check runs against :class:`MemoryEngineState`, which records what was touched and compares
full snapshots. Randomness comes from one ``random.Random(seed)``: a failure names the seed, and
the same call replays it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from p2pspace.core import codec
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext, Engine
from p2pspace.errors import CommandError, LocalProtocolError, MalformedError

SPACE = b"\x5a" * 16
DEFAULT_CREATORS = (b"\x01" * 16, b"\x02" * 16)
_SHOWN = 120  # characters of a value or command shown in a failure message


class EngineContractError(AssertionError):
    """The engine under test broke the Engine contract. The message names the command, the rule
    and the seed to replay with.

    An ``AssertionError`` (a test failure) rather than a :class:`~p2pspace.errors.P2PSpaceError`:
    it reports a bug in the engine being checked, never a condition p2pspace raises at run time.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineContractReport:
    """What :func:`check_engine` exercised, so a test can assert its samples reach the cases it
    means to cover (for example that some commands were recorded no-ops)."""

    commands: int
    invalid: int
    states: int  # states on which every command was checked alone
    executions: int  # single-command checks (each executes twice and undoes twice)
    changes: int  # of those, executions that changed the state
    no_ops: int  # of those, executions that left the state as it was
    sequences: int
    commuting_pairs: int  # pairs with disjoint declared footprints executed in both orders


class MemoryEngineState:
    """An :class:`~p2pspace.core.engine.EngineState` in a dict that records every key touched.

    Raises :class:`~p2pspace.errors.LocalProtocolError` if an engine stores a key or value that is
    not ``bytes`` (the store would refuse it too).
    """

    def __init__(self, entries: Mapping[bytes, bytes] | None = None) -> None:
        self._entries: dict[bytes, bytes] = dict(entries or {})
        self.touched: set[bytes] = set()

    def get(self, key: bytes) -> bytes | None:
        self.touched.add(key)
        return self._entries.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise LocalProtocolError(
                f"engine state keys and values must be bytes, got "
                f"{type(key).__name__} and {type(value).__name__}"
            )
        self.touched.add(key)
        self._entries[key] = value

    def delete(self, key: bytes) -> None:
        self.touched.add(key)
        self._entries.pop(key, None)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # A sorted copy, like the store's scan: the engine may write while it iterates.
        found = sorted((k, v) for k, v in self._entries.items() if k.startswith(prefix))
        for key, value in found:
            self.touched.add(key)
            yield key, value

    def snapshot(self) -> dict[bytes, bytes]:
        return dict(self._entries)

    def copy(self) -> MemoryEngineState:
        """The same entries, nothing touched yet."""
        return MemoryEngineState(self._entries)


def check_engine(
    engine: Engine,
    commands: Sequence[Command],
    *,
    invalid: Sequence[Command] = (),
    seed: int = 0,
    sequences: int = 12,
    steps: int = 8,
    creators: Sequence[bytes] = DEFAULT_CREATORS,
) -> EngineContractReport:
    """Check that ``engine`` keeps the Engine contract on the sample ``commands``.

    ``commands`` must all be valid; ``invalid`` are commands ``validate`` must reject. Give
    commands that reach each case of the engine: ones that change state, ones that are recorded
    no-ops on some state (an edit of a deleted record), ones on shared and on separate keys.
    ``sequences`` random sequences of ``steps`` commands are drawn with ``random.Random(seed)``;
    each execution gets a context whose creator is drawn from ``creators`` (so creator-dependent
    rules, like owned records, see more than one creator).

    Returns what was exercised. Raises :class:`EngineContractError` on the first broken rule (see
    the module docstring), naming the command and the seed. Raises
    :class:`~p2pspace.errors.LocalProtocolError` if the call itself is unusable: no commands, no
    creators, or a sample command whose arguments are not CBOR-native (it could never be in a
    delta).
    """
    if not commands:
        raise LocalProtocolError("check_engine needs at least one valid command")
    if not creators:
        raise LocalProtocolError("check_engine needs at least one creator")
    for command in (*commands, *invalid):
        try:
            codec.check_value(command.args)
        except MalformedError as exc:
            raise LocalProtocolError(
                f"sample command {_label(command)} cannot travel in a delta: {exc}"
            ) from None
    # The engine works on copies: an engine that edits a command's arguments (a broken rule)
    # must not change the caller's samples, or the next check would start from other ones.
    samples, wrong = copy.deepcopy(list(commands)), copy.deepcopy(list(invalid))
    run = _ContractRun(engine, samples, wrong, seed, list(creators))
    for number in range(sequences):
        run.run_sequence(number, steps)
    return run.report(sequences)


class _ContractRun:
    """One check_engine call: the engine, its samples, the seeded generator and the counters."""

    def __init__(
        self,
        engine: Engine,
        commands: list[Command],
        invalid: list[Command],
        seed: int,
        creators: list[bytes],
    ) -> None:
        self.engine, self.commands, self.invalid = engine, commands, invalid
        self.seed, self.creators = seed, creators
        self.rng = random.Random(seed)
        # Labelled before anything runs, so that a message shows the command as it was given.
        self.labels = {id(c): _label(c) for c in commands + invalid}
        self.states = self.executions = self.changes = self.pairs = 0
        self.where = "checking validate"
        self.verdicts = [self._verdict(c) for c in commands + invalid]
        for command, verdict in zip(commands, self.verdicts, strict=False):
            if verdict is not None:
                raise self.broken(command, f"validate rejects a valid command: {verdict}")
        for command, verdict in zip(invalid, self.verdicts[len(commands) :], strict=True):
            if verdict is None:
                raise self.broken(command, "validate accepts a command given as invalid")
        self.footprints = [self._footprint(c) for c in commands]
        self.disjoint = [
            (i, j)
            for i, a in enumerate(self.footprints)
            for j, b in enumerate(self.footprints)
            if i < j and a is not None and b is not None and not a & b
        ]

    def report(self, sequences: int) -> EngineContractReport:
        return EngineContractReport(
            commands=len(self.commands),
            invalid=len(self.invalid),
            states=self.states,
            executions=self.executions,
            changes=self.changes,
            no_ops=self.executions - self.changes,
            sequences=sequences,
            commuting_pairs=self.pairs,
        )

    def broken(self, command: Command, what: str) -> EngineContractError:
        return EngineContractError(
            f"{type(self.engine).__name__}, command {self.labels[id(command)]}: {what} "
            f"({self.where}; replay with seed={self.seed})"
        )

    # -- the rules ---------------------------------------------------------------------------

    def _verdict(self, command: Command) -> str | None:
        """``None`` if validate accepts ``command``, else its CommandError's message."""
        try:
            self.engine.validate(command)
        except CommandError as exc:
            return str(exc) or type(exc).__name__
        except Exception as exc:
            raise self.broken(
                command, f"validate raised {_error(exc)}; a malformed command raises CommandError"
            ) from exc
        return None

    def check_verdicts(self, where: str) -> None:
        self.where = where
        for command, before in zip(self.commands + self.invalid, self.verdicts, strict=True):
            now = self._verdict(command)
            if (now is None) != (before is None):
                said = "accepted" if before is None else "rejected"
                says = "accepts" if now is None else "rejects"
                raise self.broken(
                    command, f"validate {said} it at first and {says} it now: it depends on state"
                )

    def _footprint(self, command: Command) -> frozenset[bytes] | None:
        try:
            first, second = self.engine.footprint(command), self.engine.footprint(command)
        except Exception as exc:
            raise self.broken(command, f"footprint raised {_error(exc)}") from exc
        for answer in (first, second):
            if answer is not None and (
                type(answer) is not frozenset or not all(type(key) is bytes for key in answer)
            ):
                raise self.broken(
                    command, f"footprint returned {_show(answer)}: a frozenset of bytes, or None"
                )
        if first != second:
            raise self.broken(command, "footprint gave two different answers")
        return first

    def _execute(
        self, state: MemoryEngineState, index: int, context: DeltaContext
    ) -> tuple[Any, bytes]:
        """Execute command ``index``; its undo record and that record's canonical encoding."""
        command = self.commands[index]
        args = codec.encode(command.args)
        try:
            record = self.engine.execute(state, command, context)
        except Exception as exc:
            raise self.broken(
                command,
                f"execute raised {_error(exc)} on a validated command (a command that does "
                "not apply must be a recorded no-op, not an exception)",
            ) from exc
        try:
            unchanged = codec.encode(command.args) == args
        except MalformedError:
            unchanged = False
        if not unchanged:
            raise self.broken(command, "execute changed the command's arguments")
        try:
            encoded = codec.encode(record)
        except MalformedError as exc:
            raise self.broken(
                command, f"undo record {_show(record)} is not CBOR-native ({exc})"
            ) from None
        return record, encoded

    def _undo(self, state: MemoryEngineState, index: int, record: Any) -> None:
        command = self.commands[index]
        try:
            self.engine.undo(state, command, record)
        except Exception as exc:
            raise self.broken(command, f"undo raised {_error(exc)}") from exc

    def _restored(
        self, index: int, before: dict[bytes, bytes], state: MemoryEngineState, how: str
    ) -> None:
        after = state.snapshot()
        if after != before:
            raise self.broken(
                self.commands[index], f"{how} did not restore the state: {_diff(before, after)}"
            )

    def _covered(self, index: int, touched: set[bytes]) -> None:
        footprint = self.footprints[index]
        if footprint is not None and not touched <= footprint:
            missing, declared = _show(sorted(touched - footprint)), _show(sorted(footprint))
            raise self.broken(
                self.commands[index], f"touched {missing} outside its declared footprint {declared}"
            )

    def check_alone(self, state: MemoryEngineState, index: int, context: DeltaContext) -> None:
        """Rules 2 and 4 (inclusion) for command ``index`` on ``state``; ``state`` is unchanged."""
        command, before = self.commands[index], state.snapshot()
        first, second = state.copy(), state.copy()
        record, encoded = self._execute(first, index, context)
        executed, touched = first.snapshot(), set(first.touched)
        record_again, encoded_again = self._execute(second, index, context)
        if second.snapshot() != executed:
            raise self.broken(
                command,
                "execute is not deterministic: the same state, command and context gave "
                f"different states: {_diff(executed, second.snapshot())}",
            )
        if encoded_again != encoded:
            raise self.broken(
                command,
                "execute is not deterministic: the same state, command and context gave undo "
                f"records {_show(record)} and {_show(record_again)}",
            )
        self.executions += 1
        self.changes += executed != before
        self._undo(first, index, record)
        self._restored(index, before, first, f"undo with {_show(record)}")
        decoded = codec.decode(encoded)
        self._undo(second, index, decoded)
        self._restored(
            index, before, second, f"undo with the stored (decoded) record {_show(decoded)}"
        )
        self._covered(index, touched | first.touched | second.touched)

    def check_pair(self, state: MemoryEngineState, i: int, j: int, step: int) -> None:
        """Rule 4 (commuting): commands ``i`` and ``j`` declare disjoint footprints."""
        ci, cj = self._context(step), self._context(step + 1)
        forward, backward = state.copy(), state.copy()
        fi, fj = self._execute(forward, i, ci)[1], self._execute(forward, j, cj)[1]
        bj, bi = self._execute(backward, j, cj)[1], self._execute(backward, i, ci)[1]
        self.pairs += 1
        if forward.snapshot() != backward.snapshot() or (fi, fj) != (bi, bj):
            difference = _diff(forward.snapshot(), backward.snapshot()) or "different undo records"
            other = self.labels[id(self.commands[j])]
            raise self.broken(
                self.commands[i],
                f"it and {other} declare disjoint footprints but do not commute: executed in the "
                f"other order, {difference}",
            )

    def run_sequence(self, number: int, steps: int) -> None:
        """Rule 3, checking rules 1, 2 and 4 on each state the sequence reaches."""
        state = MemoryEngineState()
        done: list[tuple[int, dict[bytes, bytes], Any]] = []  # (command, state before, record)
        for step in range(steps + 1):
            self.where = self._history(number, done)
            self.states += 1
            for index in range(len(self.commands)):
                self.check_alone(state, index, self._context(step))
            initial = number == 0 and step == 0
            count = len(self.disjoint) if initial else min(len(self.disjoint), len(self.commands))
            for i, j in self.rng.sample(self.disjoint, count):
                self.check_pair(state, i, j, step)
            if step == steps:
                break
            index = self.rng.randrange(len(self.commands))
            before = state.snapshot()
            _record, encoded = self._execute(state, index, self._context(step))
            done.append((index, before, codec.decode(encoded)))
            self.check_verdicts(self._history(number, done))
        self.where = self._history(number, done) + ", undoing them in reverse order"
        for index, before, record in reversed(done):
            self._undo(state, index, record)
            self._restored(index, before, state, "undo, in that reverse order,")
        self.check_verdicts(f"sequence {number}, after undoing it")

    def _history(self, number: int, done: list[tuple[int, dict[bytes, bytes], Any]]) -> str:
        if not done:
            return f"sequence {number}, on the empty state"
        labels = ", ".join(self.labels[id(self.commands[i])] for i, _before, _r in done)
        return f"sequence {number}, after executing [{labels}]"

    def _context(self, step: int) -> DeltaContext:
        return DeltaContext(SPACE, self.rng.choice(self.creators), step + 1, 1_000 + step)


def _label(command: Command) -> str:
    return f"{command.engine}.{command.name}({_show(command.args)})"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _diff(expected: Mapping[bytes, bytes], got: Mapping[bytes, bytes]) -> str:
    keys = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    shown = "; ".join(
        f"key {_show(k)} was {_show(expected.get(k))}, is {_show(got.get(k))}" for k in keys[:3]
    )
    return shown + (f"; and {len(keys) - 3} more keys" if len(keys) > 3 else "")

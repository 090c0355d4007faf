"""gdb commands for programs that run goroutines on the goro runtime.

Load it with ``source crates/goro/gdb/goro.py`` (or ``gdb -x crates/goro/gdb/goro.py``), stop
the program, then:

``goro goroutines``
    Lists every live goroutine of every runtime: id, status, wait reason, and the M that runs
    it.

``goro bt ID``
    Prints the backtrace of goroutine ID while it is suspended (runnable or waiting). The
    command points the selected thread's stack pointer, program counter and callee-saved
    registers at the context that goro's switch saved on the goroutine's stack, runs gdb's own
    ``backtrace``, and restores the registers, as Go's runtime-gdb.py does.

The goroutines are found through ``GORO_ALLGS``, an unmangled static of the goro crate: a
header that states its own layout, then one list head per shard. Each list node points to a
g header, whose field offsets are frozen in ``goro_abi::offsets`` (docs/abi.md). Nothing here
needs Rust type information, so it also works on release builds without debug info, as long as
the symbol table is present.
"""

import re
import struct

import gdb

# The registry header (crates/goro/src/dump.rs, `AllGs`).
REGISTRY_MAGIC = int.from_bytes(b"GOROALLG", "little")
REGISTRY_VERSION = 1
ABI_VERSION = 1
REGISTRY_HEADS = 32  # offset of `heads` in the header

# goro_abi::offsets
SCHED_SP = 0
STACK_LO = 8
STACK_HI = 16
STATUS = 32
WAIT_REASON = 36
GOID = 40
M = 88

STATUS_NAMES = {0: "idle", 1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 5: "dead"}
WAIT_REASONS = {
    0: "",
    1: "park",
    2: "join",
    3: "sleep",
    4: "chan send",
    5: "chan receive",
    6: "select",
    7: "lock",
    8: "wait group",
}
SUSPENDED = {"idle", "runnable", "waiting"}

# Offsets from the saved stack pointer of the registers that goro_context's switch saves for a
# suspended context, and the number of bytes the switch pushed (the goroutine's stack pointer
# after the switch returns is saved_sp + frame). See crates/goro-context/src/arch/*.rs.
LAYOUTS = {
    "x86_64": {
        "frame": 64,
        "pc": 56,
        "sp": "rsp",
        "registers": [("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32), ("rbx", 40), ("rbp", 48)],
    },
    "aarch64": {
        "frame": 176,
        "pc": 168,
        "sp": "sp",
        "registers": [("x%d" % (19 + i), 80 + 8 * i) for i in range(10)]
        + [("x29", 160), ("x30", 168)],
    },
    "riscv64": {
        "frame": 208,
        "pc": 8,
        "sp": "sp",
        "registers": [("ra", 8), ("s0", 16), ("s1", 24)]
        + [("s%d" % (2 + i), 32 + 8 * i) for i in range(10)],
    },
}


def read_u64(address):
    return struct.unpack("<Q", bytes(gdb.selected_inferior().read_memory(address, 8)))[0]


def read_u32(address):
    return struct.unpack("<I", bytes(gdb.selected_inferior().read_memory(address, 4)))[0]


def registry_address():
    """Returns the address of GORO_ALLGS, or raises gdb.GdbError naming what is missing."""
    try:
        text = gdb.execute("info address GORO_ALLGS", to_string=True)
    except gdb.error as error:
        raise gdb.GdbError(
            "GORO_ALLGS not found (%s): is this a goro program, with its symbol table?" % error
        )
    match = re.search(r"0x[0-9a-fA-F]+", text)
    if match is None:
        raise gdb.GdbError("cannot read the address of GORO_ALLGS from: %s" % text.strip())
    address = int(match.group(0), 16)
    if read_u64(address) != REGISTRY_MAGIC:
        raise gdb.GdbError("GORO_ALLGS at %#x does not start with GOROALLG" % address)
    version = read_u32(address + 8)
    abi = read_u32(address + 12)
    if version != REGISTRY_VERSION or abi != ABI_VERSION:
        raise gdb.GdbError(
            "GORO_ALLGS has registry version %d and g header ABI %d; this script reads version "
            "%d and ABI %d: use the goro.py of the goro version the program was built with"
            % (version, abi, REGISTRY_VERSION, ABI_VERSION)
        )
    return address


def goroutines():
    """Yields (goid, g header address) of every live goroutine, sorted by goid."""
    registry = registry_address()
    shards = read_u32(registry + 16)
    next_offset = read_u32(registry + 20)
    g_offset = read_u32(registry + 24)
    found = []
    for shard in range(shards):
        node = read_u64(registry + REGISTRY_HEADS + 8 * shard)
        seen = 0
        while node != 0:
            seen += 1
            if seen > 10_000_000:
                raise gdb.GdbError("shard %d of GORO_ALLGS does not end: a broken list" % shard)
            g = read_u64(node + g_offset)
            if g != 0:
                found.append((read_u64(g + GOID), g))
            node = read_u64(node + next_offset)
    return sorted(found)


def describe(g):
    status = STATUS_NAMES.get(read_u32(g + STATUS), "unknown")
    reason = WAIT_REASONS.get(read_u32(g + WAIT_REASON), "") if status == "waiting" else ""
    return status, reason


def find_goroutine(goid):
    for candidate, g in goroutines():
        if candidate == goid:
            return g
    raise gdb.GdbError("no live goroutine with id %d; `goro goroutines` lists them" % goid)


def arch_layout():
    name = gdb.selected_frame().architecture().name()
    if name.startswith("i386:x86-64"):
        return LAYOUTS["x86_64"]
    if name.startswith("aarch64"):
        return LAYOUTS["aarch64"]
    if name.startswith("riscv"):
        return LAYOUTS["riscv64"]
    raise gdb.GdbError("goro bt does not know the saved context layout of %s" % name)


class GoroCommand(gdb.Command):
    """Commands for goro's goroutines: `goro goroutines`, `goro bt ID`."""

    def __init__(self):
        super().__init__("goro", gdb.COMMAND_STACK, prefix=True)

    def invoke(self, argument, from_tty):
        # A bare `goro` lists the subcommands, as gdb's own prefix commands do.
        if argument.strip():
            raise gdb.GdbError(
                "unknown command `goro %s`; the commands are `goro goroutines` and `goro bt ID`"
                % argument.strip()
            )
        gdb.execute("help goro", from_tty)


class GoroutinesCommand(gdb.Command):
    """List every live goroutine: id, status, wait reason, and the M that runs it."""

    def __init__(self):
        super().__init__("goro goroutines", gdb.COMMAND_STACK)

    def invoke(self, argument, from_tty):
        listed = goroutines()
        if not listed:
            print("no live goroutine")
            return
        print("%8s  %-9s  %-13s  %s" % ("goid", "status", "wait reason", "m"))
        for goid, g in listed:
            status, reason = describe(g)
            m = read_u64(g + M)
            print("%8d  %-9s  %-13s  %s" % (goid, status, reason or "-", "%#x" % m if m else "-"))


class BacktraceCommand(gdb.Command):
    """Print the backtrace of a suspended goroutine: goro bt ID."""

    def __init__(self):
        super().__init__("goro bt", gdb.COMMAND_STACK)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if len(words) != 1 or not words[0].isdigit():
            raise gdb.GdbError("usage: goro bt ID, where ID is a goid from `goro goroutines`")
        goid = int(words[0])
        g = find_goroutine(goid)
        status, reason = describe(g)
        if status not in SUSPENDED:
            raise gdb.GdbError(
                "goroutine %d is %s: its registers are live on its M's thread, so select that "
                "thread (`info threads`) and use `bt` there" % (goid, status)
            )
        layout = arch_layout()
        saved_sp = read_u64(g + SCHED_SP)
        if saved_sp == 0:
            # A yielding goroutine is Runnable before its switch has saved it, and an M that
            # resumes a goroutine empties the slot first.
            raise gdb.GdbError(
                "goroutine %d is %s but not saved: it was stopped in the middle of a switch, so "
                "step its M's thread past the switch and try again" % (goid, status)
            )
        values = [(name, read_u64(saved_sp + offset)) for name, offset in layout["registers"]]
        values.append((layout["sp"], saved_sp + layout["frame"]))
        values.append(("pc", read_u64(saved_sp + layout["pc"])))

        selected = gdb.selected_frame()
        # Registers can only be assigned in the innermost frame.
        gdb.execute("select-frame 0")
        names = [name for name, _ in values]
        saved = [(name, int(gdb.parse_and_eval("$" + name))) for name in names]
        print("goroutine %d [%s]:" % (goid, reason or status))
        try:
            for name, value in values:
                gdb.execute("set $%s = %d" % (name, value))
            gdb.execute("backtrace")
        finally:
            gdb.execute("select-frame 0")
            # The pc last, after the stack pointer it belongs with.
            ordered = [s for s in saved if s[0] != "pc"] + [s for s in saved if s[0] == "pc"]
            for name, value in ordered:
                gdb.execute("set $%s = %d" % (name, value))
            try:
                selected.select()
            except gdb.error:
                pass


GoroCommand()
GoroutinesCommand()
BacktraceCommand()

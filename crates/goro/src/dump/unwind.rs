//! Backtraces of suspended goroutines, unwound with the DWARF call frame information (CFI) in
//! `.eh_frame`, the same tables that panics unwind with.
//!
//! A suspended g's registers are on its own stack, where the context switch pushed them (see
//! `goro_context`'s per-arch layouts). The dump copies the used part of that stack, rebuilds
//! the registers from the copy, and steps from frame to frame. For each return address it looks
//! up the frame description entry with libgcc's `_Unwind_Find_FDE`, runs its CFI program up to the
//! address, and applies the resulting rules (where the caller's frame address, return address
//! and callee-saved registers are) to the copy. It never runs on the g's stack and never reads
//! the live stack after the copy, so a g that resumes meanwhile cannot be disturbed.
//!
//! A frame-pointer walk would be shorter, but Rust omits frame pointers by default, also in
//! debug builds, so it would stop after one frame unless every crate were built with
//! `-C force-frame-pointers=yes`.
//!
//! Supported: the CFI instructions that compilers emit for ordinary functions. A frame whose
//! rules use DWARF expressions (PLT stubs, signal trampolines) ends the backtrace.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

/// The maximum number of frames in a backtrace.
pub(crate) const MAX_FRAMES: usize = 64;

/// DWARF register numbers and the layout of a suspended context, per arch.
#[cfg(target_arch = "x86_64")]
mod arch {
    /// The DWARF number of the stack pointer.
    pub(super) const SP: usize = 7;
    /// The DWARF column of the return address.
    pub(super) const RETURN_ADDRESS: usize = 16;
    /// Bytes the switch pushes, from the saved stack pointer up to the caller's stack pointer.
    pub(super) const SAVED_FRAME: usize = 64;
    /// (DWARF register, offset from the saved stack pointer) of each register the switch
    /// saved: r15, r14, r13, r12, rbx, rbp and the return address.
    pub(super) const SAVED: &[(usize, usize)] = &[
        (15, 8),
        (14, 16),
        (13, 24),
        (12, 32),
        (3, 40),
        (6, 48),
        (16, 56),
    ];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub(super) const SP: usize = 31;
    /// x30, the link register.
    pub(super) const RETURN_ADDRESS: usize = 30;
    pub(super) const SAVED_FRAME: usize = 176;
    /// x19-x28 from sp + 80, x29 at sp + 160 and x30 at sp + 168.
    pub(super) const SAVED: &[(usize, usize)] = &[
        (19, 80),
        (20, 88),
        (21, 96),
        (22, 104),
        (23, 112),
        (24, 120),
        (25, 128),
        (26, 136),
        (27, 144),
        (28, 152),
        (29, 160),
        (30, 168),
    ];
}

#[cfg(target_arch = "riscv64")]
mod arch {
    pub(super) const SP: usize = 2;
    /// x1, ra.
    pub(super) const RETURN_ADDRESS: usize = 1;
    pub(super) const SAVED_FRAME: usize = 208;
    /// ra at sp + 8, s0 (x8) at sp + 16, s1 (x9) at sp + 24, s2-s11 (x18-x27) from sp + 32.
    pub(super) const SAVED: &[(usize, usize)] = &[
        (1, 8),
        (8, 16),
        (9, 24),
        (18, 32),
        (19, 40),
        (20, 48),
        (21, 56),
        (22, 64),
        (23, 72),
        (24, 80),
        (25, 88),
        (26, 96),
        (27, 104),
    ];
}

/// Number of DWARF register columns tracked; covers every integer register of the three
/// arches (riscv64's floating-point registers, 32-63, are never needed to find a frame).
const REGISTERS: usize = 33;

/// A copy of the used part of a suspended g's stack, addressed as the original.
pub(crate) struct StackCopy {
    /// The original address of `bytes[0]`: the g's saved stack pointer.
    base: usize,
    bytes: Vec<u8>,
}

impl StackCopy {
    /// Copies `[sp, hi)` of this process's memory without faulting: an unmapped range (a
    /// stack freed meanwhile) returns `None`.
    pub(crate) fn read(sp: usize, hi: usize) -> Option<StackCopy> {
        if sp == 0 || sp >= hi {
            return None;
        }
        let mut bytes = vec![0u8; hi - sp];
        read_memory(sp, &mut bytes).then_some(StackCopy { base: sp, bytes })
    }

    fn word(&self, address: u64) -> Option<u64> {
        let offset = (address as usize).checked_sub(self.base)?;
        let bytes = self.bytes.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    }
}

/// Whether `process_vm_readv` is usable: 0 not tried yet, 1 yes, 2 no (QEMU user mode does
/// not implement it, and seccomp filters may forbid it). Relaxed: a cached probe result.
static VM_READV: AtomicU8 = AtomicU8::new(0);

/// Copies `buffer.len()` bytes at `address` of this process, reporting an unmapped address as
/// `false` instead of faulting. The kernel does the reading (`process_vm_readv`, or a write of
/// the range into a pipe where that call is missing), so a concurrent writer cannot make it a
/// data race in Rust's memory model either.
pub(crate) fn read_memory(address: usize, buffer: &mut [u8]) -> bool {
    if VM_READV.load(Ordering::Relaxed) != 2 {
        let local = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        let remote = libc::iovec {
            iov_base: address as *mut c_void,
            iov_len: buffer.len(),
        };
        // SAFETY: `local` describes `buffer`, writable for its length; the remote side is only
        // read, by the kernel, which checks it.
        let copied = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if copied == buffer.len() as isize {
            VM_READV.store(1, Ordering::Relaxed);
            return true;
        }
        let error = std::io::Error::last_os_error().raw_os_error();
        if copied >= 0 || !matches!(error, Some(libc::ENOSYS | libc::EPERM)) {
            return false;
        }
        VM_READV.store(2, Ordering::Relaxed);
    }
    read_through_pipe(address, buffer)
}

/// Copies memory by writing it into a pipe and reading it back: `write` fails with `EFAULT`
/// on an unmapped source instead of raising SIGSEGV.
fn read_through_pipe(address: usize, buffer: &mut [u8]) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return false;
    }
    let [read_end, write_end] = fds;
    let mut done = 0;
    while done < buffer.len() {
        // A non-blocking write takes what fits in the pipe; the loop reads it back at once.
        // SAFETY: the kernel reads the source range and reports EFAULT if it is unmapped.
        let written = unsafe {
            libc::write(
                write_end,
                (address + done) as *const c_void,
                buffer.len() - done,
            )
        };
        if written <= 0 {
            break;
        }
        // SAFETY: `buffer[done..]` has room for the `written` bytes now in the pipe.
        let read = unsafe {
            libc::read(
                read_end,
                buffer[done..].as_mut_ptr().cast(),
                written as usize,
            )
        };
        if read != written {
            break;
        }
        done += written as usize;
    }
    // SAFETY: the descriptor was opened above and is closed once.
    unsafe { libc::close(read_end) };
    // SAFETY: as above.
    unsafe { libc::close(write_end) };
    done == buffer.len()
}

/// Returns the program counters of the frames of a g suspended by the context switch with
/// saved stack pointer `sp`, innermost first. `copy` contains `[sp, stack_hi)`.
pub(crate) fn backtrace(copy: &StackCopy) -> Vec<usize> {
    let sp = copy.base as u64;
    let mut registers = [None; REGISTERS];
    for &(register, offset) in arch::SAVED {
        registers[register] = copy.word(sp + offset as u64);
    }
    registers[arch::SP] = Some(sp + arch::SAVED_FRAME as u64);
    let mut pcs = Vec::new();
    let Some(mut pc) = registers[arch::RETURN_ADDRESS] else {
        return pcs;
    };
    while pc != 0 && pcs.len() < MAX_FRAMES {
        pcs.push(pc as usize);
        // A return address points after its call; the call itself is one byte before.
        let Some(caller) = step(copy, &registers, pc - 1) else {
            break;
        };
        let (Some(next_pc), Some(next_sp)) = (caller[arch::RETURN_ADDRESS], caller[arch::SP])
        else {
            break;
        };
        // Each caller's frame lies above its callee's; anything else is a broken table.
        if next_sp <= registers[arch::SP].unwrap_or(0) {
            break;
        }
        registers = caller;
        pc = next_pc;
    }
    pcs
}

/// `struct dwarf_eh_bases` of libgcc's `unwind-dw2-fde.h`.
#[repr(C)]
struct EhBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
}

unsafe extern "C" {
    /// libgcc's lookup of the frame description entry that covers `pc`, across every loaded
    /// object (GCC_3.0 in libgcc_s, which Rust's std links on Linux).
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut EhBases) -> *const u8;
}

/// Returns the caller's registers of the frame that contains `pc`, given the frame's own.
fn step(
    copy: &StackCopy,
    registers: &[Option<u64>; REGISTERS],
    pc: u64,
) -> Option<[Option<u64>; REGISTERS]> {
    let mut bases = EhBases {
        tbase: std::ptr::null_mut(),
        dbase: std::ptr::null_mut(),
        func: std::ptr::null_mut(),
    };
    // SAFETY: the function only reads the unwind tables of loaded objects and fills `bases`.
    let fde = unsafe { _Unwind_Find_FDE(pc as *mut c_void, &mut bases) };
    if fde.is_null() {
        return None;
    }
    // SAFETY: libgcc returned an FDE of a loaded, immutable `.eh_frame`.
    let frame = unsafe { Fde::parse(fde, bases.func as u64) }?;
    let row = frame.row_at(pc)?;
    let cfa = match row.cfa {
        Cfa::RegisterOffset(register, offset) => registers
            .get(register as usize)
            .copied()
            .flatten()?
            .wrapping_add(offset as u64),
        Cfa::Unsupported => return None,
    };
    let mut caller = *registers;
    caller[arch::SP] = Some(cfa);
    for (register, rule) in row.rules.iter().enumerate() {
        caller[register] = match *rule {
            Rule::SameValue => registers[register],
            Rule::Undefined => None,
            Rule::Offset(offset) => copy.word(cfa.wrapping_add(offset as u64)),
            Rule::ValOffset(offset) => Some(cfa.wrapping_add(offset as u64)),
            Rule::Register(other) => registers.get(other as usize).copied().flatten(),
            Rule::Unsupported => None,
        };
    }
    // The stack pointer is the CFA by definition, whatever rule the table gives for it.
    caller[arch::SP] = Some(cfa);
    Some(caller)
}

/// The rule that computes a frame's canonical frame address (CFA).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cfa {
    RegisterOffset(u16, i64),
    Unsupported,
}

/// The location of the caller's value of a register.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    SameValue,
    Undefined,
    /// Saved at CFA + offset.
    Offset(i64),
    /// Is CFA + offset.
    ValOffset(i64),
    /// Is in another register.
    Register(u16),
    /// A DWARF expression, which this unwinder does not evaluate.
    Unsupported,
}

#[derive(Clone, Debug)]
struct Row {
    cfa: Cfa,
    rules: [Rule; REGISTERS],
}

/// A frame description entry and its common information entry, as slices of `.eh_frame`.
struct Fde<'a> {
    code_align: u64,
    data_align: i64,
    return_address: usize,
    /// The encoding of addresses in `DW_CFA_set_loc`.
    pointer_encoding: u8,
    cie_instructions: &'a [u8],
    instructions: &'a [u8],
    start: u64,
}

impl<'a> Fde<'a> {
    /// Parses the FDE at `fde`, whose function starts at `start`.
    ///
    /// # Safety
    ///
    /// `fde` must point to a frame description entry of a loaded `.eh_frame` section, which
    /// stays mapped and unchanged for `'a`.
    unsafe fn parse(fde: *const u8, start: u64) -> Option<Fde<'a>> {
        // SAFETY: an FDE starts with its 32-bit length; the caller vouches for the pointer.
        let length = unsafe { (fde as *const u32).read_unaligned() };
        if length == 0 || length == u32::MAX {
            // 0 ends the section; u32::MAX introduces the 64-bit format, unused in .eh_frame.
            return None;
        }
        // SAFETY: `length` bytes follow the length field.
        let body = unsafe { std::slice::from_raw_parts(fde.add(4), length as usize) };
        let cie_offset = u32::from_ne_bytes(body.get(..4)?.try_into().ok()?) as usize;
        // The CIE pointer is the distance back from the field itself (at fde + 4).
        // SAFETY: the CIE lies earlier in the same section.
        let cie = unsafe { fde.add(4).sub(cie_offset) };
        // SAFETY: as for the FDE.
        let cie_length = unsafe { (cie as *const u32).read_unaligned() } as usize;
        // SAFETY: as above.
        let cie_body = unsafe { std::slice::from_raw_parts(cie.add(4), cie_length) };

        let mut reader = Reader::new(cie_body.get(4..)?);
        let version = reader.u8()?;
        let augmentation = reader.c_string()?;
        if augmentation.contains(&b'e') {
            // The "eh" augmentation of very old GCC, followed by a pointer; never emitted now.
            return None;
        }
        let code_align = reader.uleb()?;
        let data_align = reader.sleb()?;
        let return_address = if version == 1 {
            reader.u8()? as usize
        } else {
            reader.uleb()? as usize
        };
        let mut pointer_encoding = 0;
        let mut has_augmentation_data = false;
        if augmentation.first() == Some(&b'z') {
            let length = reader.uleb()? as usize;
            let mut data = Reader::new(reader.take(length)?);
            has_augmentation_data = true;
            for &letter in &augmentation[1..] {
                match letter {
                    b'R' => pointer_encoding = data.u8()?,
                    b'L' => {
                        data.u8()?;
                    }
                    b'P' => {
                        let encoding = data.u8()?;
                        data.encoded(encoding)?;
                    }
                    b'S' | b'B' | b'G' => {}
                    _ => return None,
                }
            }
        }
        let cie_instructions = reader.rest();

        let mut reader = Reader::new(body.get(4..)?);
        // pc_begin and pc_range; libgcc already decoded the start into `bases.func`.
        reader.encoded(pointer_encoding)?;
        reader.encoded(pointer_encoding & 0x0f)?;
        if has_augmentation_data {
            let length = reader.uleb()? as usize;
            reader.take(length)?;
        }
        Some(Fde {
            code_align,
            data_align,
            return_address,
            pointer_encoding,
            cie_instructions,
            instructions: reader.rest(),
            start,
        })
    }

    /// Runs the CIE's and then the FDE's instructions up to `pc` and returns the row there.
    fn row_at(&self, pc: u64) -> Option<Row> {
        let mut row = Row {
            cfa: Cfa::Unsupported,
            rules: [Rule::SameValue; REGISTERS],
        };
        if self.return_address >= REGISTERS {
            return None;
        }
        let mut location = self.start;
        self.execute(
            self.cie_instructions,
            &mut row,
            None,
            &mut location,
            u64::MAX,
        )?;
        let initial = row.clone();
        let mut location = self.start;
        self.execute(
            self.instructions,
            &mut row,
            Some(&initial),
            &mut location,
            pc,
        )?;
        Some(row)
    }

    /// Runs `instructions` until the location passes `pc`. `initial` is the row after the
    /// CIE's instructions, for `DW_CFA_restore`.
    fn execute(
        &self,
        instructions: &[u8],
        row: &mut Row,
        initial: Option<&Row>,
        location: &mut u64,
        pc: u64,
    ) -> Option<()> {
        let mut reader = Reader::new(instructions);
        let mut stack: Vec<Row> = Vec::new();
        let set = |row: &mut Row, register: u64, rule: Rule| {
            if let Some(slot) = row.rules.get_mut(register as usize) {
                *slot = rule;
            }
        };
        while let Some(opcode) = reader.u8() {
            let operand = u64::from(opcode & 0x3f);
            let advance = match opcode >> 6 {
                // DW_CFA_advance_loc
                1 => Some(operand * self.code_align),
                // DW_CFA_offset
                2 => {
                    let offset = reader.uleb()? as i64 * self.data_align;
                    set(row, operand, Rule::Offset(offset));
                    None
                }
                // DW_CFA_restore
                3 => {
                    let rule = initial.and_then(|i| i.rules.get(operand as usize).copied());
                    set(row, operand, rule.unwrap_or(Rule::SameValue));
                    None
                }
                _ => match opcode {
                    0x00 => None, // DW_CFA_nop
                    0x01 => {
                        // DW_CFA_set_loc
                        let target = reader.encoded(self.pointer_encoding)?;
                        if target > pc {
                            return Some(());
                        }
                        *location = target;
                        None
                    }
                    0x02 => Some(u64::from(reader.u8()?) * self.code_align),
                    0x03 => Some(u64::from(reader.u16()?) * self.code_align),
                    0x04 => Some(u64::from(reader.u32()?) * self.code_align),
                    0x05 => {
                        // DW_CFA_offset_extended
                        let register = reader.uleb()?;
                        let offset = reader.uleb()? as i64 * self.data_align;
                        set(row, register, Rule::Offset(offset));
                        None
                    }
                    0x06 => {
                        // DW_CFA_restore_extended
                        let register = reader.uleb()?;
                        let rule = initial.and_then(|i| i.rules.get(register as usize).copied());
                        set(row, register, rule.unwrap_or(Rule::SameValue));
                        None
                    }
                    0x07 => {
                        set(row, reader.uleb()?, Rule::Undefined);
                        None
                    }
                    0x08 => {
                        set(row, reader.uleb()?, Rule::SameValue);
                        None
                    }
                    0x09 => {
                        // DW_CFA_register
                        let register = reader.uleb()?;
                        let other = reader.uleb()?;
                        set(row, register, Rule::Register(other as u16));
                        None
                    }
                    0x0a => {
                        stack.push(row.clone());
                        None
                    }
                    0x0b => {
                        // DW_CFA_restore_state: the whole row comes back, the CFA rule
                        // included (DWARF 5, section 6.4.2.4).
                        *row = stack.pop()?;
                        None
                    }
                    0x0c => {
                        // DW_CFA_def_cfa
                        let register = reader.uleb()?;
                        let offset = reader.uleb()? as i64;
                        row.cfa = Cfa::RegisterOffset(register as u16, offset);
                        None
                    }
                    0x0d => {
                        // DW_CFA_def_cfa_register
                        let register = reader.uleb()? as u16;
                        row.cfa = match row.cfa {
                            Cfa::RegisterOffset(_, offset) => Cfa::RegisterOffset(register, offset),
                            Cfa::Unsupported => Cfa::Unsupported,
                        };
                        None
                    }
                    0x0e => {
                        // DW_CFA_def_cfa_offset
                        let offset = reader.uleb()? as i64;
                        if let Cfa::RegisterOffset(register, _) = row.cfa {
                            row.cfa = Cfa::RegisterOffset(register, offset);
                        }
                        None
                    }
                    0x0f => {
                        // DW_CFA_def_cfa_expression
                        let length = reader.uleb()? as usize;
                        reader.take(length)?;
                        row.cfa = Cfa::Unsupported;
                        None
                    }
                    0x10 | 0x16 => {
                        // DW_CFA_expression, DW_CFA_val_expression
                        let register = reader.uleb()?;
                        let length = reader.uleb()? as usize;
                        reader.take(length)?;
                        set(row, register, Rule::Unsupported);
                        None
                    }
                    0x11 => {
                        // DW_CFA_offset_extended_sf
                        let register = reader.uleb()?;
                        let offset = reader.sleb()? * self.data_align;
                        set(row, register, Rule::Offset(offset));
                        None
                    }
                    0x12 => {
                        // DW_CFA_def_cfa_sf
                        let register = reader.uleb()? as u16;
                        let offset = reader.sleb()? * self.data_align;
                        row.cfa = Cfa::RegisterOffset(register, offset);
                        None
                    }
                    0x13 => {
                        // DW_CFA_def_cfa_offset_sf
                        let offset = reader.sleb()? * self.data_align;
                        if let Cfa::RegisterOffset(register, _) = row.cfa {
                            row.cfa = Cfa::RegisterOffset(register, offset);
                        }
                        None
                    }
                    0x14 => {
                        // DW_CFA_val_offset
                        let register = reader.uleb()?;
                        let offset = reader.uleb()? as i64 * self.data_align;
                        set(row, register, Rule::ValOffset(offset));
                        None
                    }
                    0x15 => {
                        // DW_CFA_val_offset_sf
                        let register = reader.uleb()?;
                        let offset = reader.sleb()? * self.data_align;
                        set(row, register, Rule::ValOffset(offset));
                        None
                    }
                    0x2d => None, // DW_CFA_GNU_window_save, aarch64's negate_ra_state
                    0x2e => {
                        // DW_CFA_GNU_args_size
                        reader.uleb()?;
                        None
                    }
                    0x2f => {
                        // DW_CFA_GNU_negative_offset_extended
                        let register = reader.uleb()?;
                        let offset = -(reader.uleb()? as i64) * self.data_align;
                        set(row, register, Rule::Offset(offset));
                        None
                    }
                    _ => return None,
                },
            };
            if let Some(delta) = advance {
                if location.saturating_add(delta) > pc {
                    return Some(());
                }
                *location += delta;
            }
        }
        Some(())
    }
}

/// Reads the DWARF encodings of `.eh_frame` from a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }

    fn c_string(&mut self) -> Option<&'a [u8]> {
        let end = self.bytes.iter().position(|&b| b == 0)?;
        let text = self.take(end)?;
        self.take(1)?;
        Some(text)
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Some(value);
            }
        }
    }

    /// Reads a pointer in `DW_EH_PE_*` encoding `encoding`. Only the pc-relative adjustment
    /// is applied, because its base (the field's own address) is the only one known here. The
    /// value serves `DW_CFA_set_loc`, which is rare in `.eh_frame`, and skipping fields.
    fn encoded(&mut self, encoding: u8) -> Option<u64> {
        if encoding == 0xff {
            return Some(0);
        }
        let field = self.bytes.as_ptr() as u64;
        let value = match encoding & 0x0f {
            0x00 => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(self.u16()?),
            0x03 => u64::from(self.u32()?),
            0x04 => self.u64()?,
            0x09 => self.sleb()? as u64,
            0x0a => self.u16()? as i16 as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            0x0c => self.u64()?,
            _ => return None,
        };
        Some(match encoding & 0x70 {
            0x10 => field.wrapping_add(value),
            _ => value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_decodes() {
        let mut reader = Reader::new(&[0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f]);
        assert_eq!(reader.uleb(), Some(624_485));
        assert_eq!(reader.sleb(), Some(-1));
        assert_eq!(reader.sleb(), Some(-128));
        assert_eq!(reader.u8(), None);
    }

    #[test]
    fn pipe_read_copies_and_rejects_unmapped() {
        let words = [7u64, 8, 9];
        let mut copy = [0u8; 24];
        assert!(read_through_pipe(words.as_ptr() as usize, &mut copy));
        assert_eq!(copy[8], 8);
        let large = vec![5u8; 200_000];
        let mut copy = vec![0u8; large.len()];
        assert!(read_through_pipe(large.as_ptr() as usize, &mut copy));
        assert_eq!(copy, large);
        assert!(!read_through_pipe(8, &mut [0u8; 16]));
    }

    #[test]
    fn stack_copy_rejects_unmapped() {
        // Page 0 is never mapped.
        assert!(StackCopy::read(8, 4096).is_none());
        let words = [1u64, 2, 3];
        let start = words.as_ptr() as usize;
        let copy = StackCopy::read(start, start + 24).unwrap();
        assert_eq!(copy.word(start as u64 + 8), Some(2));
        assert_eq!(copy.word(start as u64 + 24), None);
    }
}

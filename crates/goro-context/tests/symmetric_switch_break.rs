//! Attacks on `switch_symmetric`, the x86_64 switch that resumes the other side with `ret`
//! instead of `pop rcx; jmp rcx`. It must behave exactly as `switch`:
//!
//! - every pair of switch forms, in both directions, carries each part of the FP control
//!   state. That holds under the compare policy that `init_frame` selects on Intel cores,
//!   and under the load policy in effect before the first `init_frame` of a process;
//! - callee-saved registers survive when a `switch_symmetric` resumes a context that another
//!   form suspended, and the other way round;
//! - a fresh context entered through `switch_symmetric` gets `arg` and the results pass back;
//! - the CFI unwinds to the caller at every instruction of the switch: the test single-steps
//!   a switch with the trap flag and unwinds with libgcc from each SIGTRAP.
//!
//! The other architectures alias `switch_symmetric` to `switch`, so this file is x86_64-only.
#![cfg(target_arch = "x86_64")]

mod common;

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{FpControl, JunkCheck, RawSwitch, TestStack, switch_with_junk};
use goro_context::init_stack;
use goro_context::raw::{
    switch, switch_always_load_fp, switch_compare_fp, switch_load_fp, switch_symmetric,
};

const STACK_SIZE: usize = 256 * 1024;

/// Installs the default FP control state when dropped, for the rest of the test binary.
struct RestoreDefaults;

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        // SAFETY: installing the defaults is what the rest of the test binary expects.
        unsafe { FpControl::DEFAULT.install() };
    }
}

/// Forms that a side with any FP state may suspend itself with.
const ANY_STATE_SWITCHES: [(&str, RawSwitch); 4] = [
    ("switch", switch),
    ("switch_symmetric", switch_symmetric),
    ("switch_always_load_fp", switch_always_load_fp),
    ("switch_compare_fp", switch_compare_fp),
];

/// States that differ from the defaults in one part only, plus the defaults.
const STATES: [(&str, FpControl); 5] = [
    (
        "x87 control word",
        FpControl {
            mxcsr: 0x1F80,
            x87_control_word: 0x037F | 0x0C00,
        },
    ),
    (
        "MXCSR control bits",
        FpControl {
            mxcsr: 0x1F80 | 0x6000,
            x87_control_word: 0x037F,
        },
    ),
    (
        "MXCSR flag",
        FpControl {
            mxcsr: 0x1F80 | 0x20,
            x87_control_word: 0x037F,
        },
    ),
    ("everything", FpControl::ROUND_TO_ZERO_FLUSH),
    ("nothing", FpControl::DEFAULT),
];

/// One main-and-context exchange: the context installs `context_state` and suspends with
/// `context_switch`, main resumes it with `main_switch` while running `main_state`.
struct FpScene {
    main_sp: usize,
    context_sp: usize,
    context_state: FpControl,
    context_switch: RawSwitch,
    seen_by_context: Option<FpControl>,
}

unsafe extern "C" fn install_then_switch(_arg: usize, data: usize) -> ! {
    let scene = data as *mut FpScene;
    // SAFETY: the scene outlives the context, and only the running side touches it.
    unsafe {
        (*scene).context_state.install();
        ((*scene).context_switch)(&raw mut (*scene).context_sp, (*scene).main_sp, 0);
        (*scene).seen_by_context = Some(FpControl::read());
        loop {
            ((*scene).context_switch)(&raw mut (*scene).context_sp, (*scene).main_sp, 0);
        }
    }
}

/// Every pair that contains `switch_symmetric` keeps each side's FP state, whichever side
/// differs from the defaults and whichever form suspended the resumed side.
#[test]
fn fp_state_crosses_symmetric_pairs() {
    let _restore = RestoreDefaults;
    let mut failures = Vec::new();
    for (main_state_name, main_state) in STATES {
        for (context_state_name, context_state) in STATES {
            for (main_name, main_switch) in ANY_STATE_SWITCHES {
                for (context_name, context_switch) in ANY_STATE_SWITCHES {
                    if main_name != "switch_symmetric" && context_name != "switch_symmetric" {
                        continue;
                    }
                    let case = format!(
                        "main differs in {main_state_name} and uses {main_name}, the context \
                         differs in {context_state_name} and uses {context_name}"
                    );
                    let stack = TestStack::new(STACK_SIZE);
                    let mut scene = FpScene {
                        main_sp: 0,
                        context_sp: 0,
                        context_state,
                        context_switch,
                        seen_by_context: None,
                    };
                    let scene_ptr = &raw mut scene;
                    // SAFETY: the stack and the scene outlive the context, which is
                    // suspended for good after the second switch.
                    let main_after = unsafe {
                        main_state.install();
                        (*scene_ptr).context_sp = init_stack(
                            stack.lo(),
                            stack.hi(),
                            install_then_switch,
                            scene_ptr as usize,
                        );
                        main_switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
                        let first = FpControl::read();
                        main_switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
                        let second = FpControl::read();
                        FpControl::DEFAULT.install();
                        [first, second]
                    };
                    if main_after != [main_state, main_state] {
                        failures.push(format!("{case}: main saw {main_after:x?}"));
                    }
                    if scene.seen_by_context != Some(context_state) {
                        failures.push(format!(
                            "{case}: the context saw {:x?}",
                            scene.seen_by_context
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// State of the junk exchange, whose context suspends itself with `context_switch`.
struct JunkScene {
    main_sp: usize,
    context_sp: usize,
    context_switch: RawSwitch,
    context_mismatches: u64,
    context_rounds: u64,
}

unsafe extern "C" fn junk_context(mut arg: usize, data: usize) -> ! {
    let scene = data as *mut JunkScene;
    loop {
        // SAFETY: the scene outlives the context, and only the running side touches it.
        unsafe {
            let mut check = JunkCheck {
                seed: 0x7000_0000_0000_0000 + (arg as u64) * 0x100,
                fp_control: FpControl::ROUND_DOWN.to_raw(),
                mismatches: 0,
                switch: (*scene).context_switch,
            };
            arg = switch_with_junk(
                &raw mut (*scene).context_sp,
                (*scene).main_sp,
                arg + 1,
                &mut check,
            );
            (*scene).context_mismatches |= check.mismatches;
            (*scene).context_rounds += 1;
        }
    }
}

/// Junk in every callee-saved register and the FP control registers survives when the two
/// sides suspend with different forms, one of them `switch_symmetric`, and `arg` reaches the
/// other side as the result.
#[test]
fn junk_survives_mixed_forms() {
    let _restore = RestoreDefaults;
    let mut all_forms: Vec<(&str, RawSwitch)> = ANY_STATE_SWITCHES.to_vec();
    all_forms.push(("switch_load_fp", switch_load_fp));
    for (main_name, main_switch) in all_forms.iter().copied() {
        for (context_name, context_switch) in ANY_STATE_SWITCHES {
            if main_name != "switch_symmetric" && context_name != "switch_symmetric" {
                continue;
            }
            // switch_load_fp records the defaults for main, so main must run with them.
            let main_state = if main_name == "switch_load_fp" {
                FpControl::DEFAULT
            } else {
                FpControl::ROUND_TO_ZERO_FLUSH
            };
            let stack = TestStack::new(STACK_SIZE);
            let mut scene = JunkScene {
                main_sp: 0,
                context_sp: 0,
                context_switch,
                context_mismatches: 0,
                context_rounds: 0,
            };
            let scene_ptr = &raw mut scene;
            let mut main_mismatches = 0;
            for round in 0..50usize {
                let mut check = JunkCheck {
                    seed: 0x3000_0000_0000_0000 + round as u64 * 0x100,
                    fp_control: main_state.to_raw(),
                    mismatches: 0,
                    switch: main_switch,
                };
                // SAFETY: the stack and the scene outlive the context, which stays suspended
                // for good after the last round.
                let result = unsafe {
                    if round == 0 {
                        (*scene_ptr).context_sp =
                            init_stack(stack.lo(), stack.hi(), junk_context, scene_ptr as usize);
                    }
                    switch_with_junk(
                        &raw mut (*scene_ptr).main_sp,
                        (*scene_ptr).context_sp,
                        round * 2,
                        &mut check,
                    )
                };
                assert_eq!(
                    result,
                    round * 2 + 1,
                    "main with {main_name}, context with {context_name}: wrong result"
                );
                main_mismatches |= check.mismatches;
            }
            let main_check = JunkCheck {
                mismatches: main_mismatches,
                ..JunkCheck::default()
            };
            let context_check = JunkCheck {
                mismatches: scene.context_mismatches,
                ..JunkCheck::default()
            };
            assert_eq!(
                main_check.changed_registers(),
                Vec::<&str>::new(),
                "main's registers, main with {main_name}, context with {context_name}"
            );
            assert_eq!(
                context_check.changed_registers(),
                Vec::<&str>::new(),
                "context's registers, main with {main_name}, context with {context_name}"
            );
            assert_eq!(scene.context_rounds, 49);
        }
    }
}

/// Echoes each `arg` back plus one, starting with the one its trampoline received.
unsafe extern "C" fn echo_context(arg: usize, data: usize) -> ! {
    let slots = data as *mut [usize; 2];
    let mut value = arg;
    loop {
        // SAFETY: the slots outlive the context, and only the running side touches them.
        value =
            unsafe { switch_symmetric(&raw mut (*slots)[1], (*slots)[0], value.wrapping_add(1)) };
    }
}

/// The first `switch_symmetric` into a fresh context reaches its entry with `arg`, and each
/// later one passes `arg` as the other side's result.
#[test]
fn fresh_context_gets_arg_through_ret() {
    let stack = TestStack::new(STACK_SIZE);
    let mut slots = [0usize; 2];
    let slots_ptr = &raw mut slots;
    for first in [0usize, 1, usize::MAX - 1, 0x5555_aaaa_5555_aaaa] {
        // SAFETY: the stack and the slots outlive the context; each run overwrites the frame
        // of the previous context, which is suspended for good.
        unsafe {
            (*slots_ptr)[1] = init_stack(stack.lo(), stack.hi(), echo_context, slots_ptr as usize);
            let mut value = first;
            for round in 0..10usize {
                let result = switch_symmetric(&raw mut (*slots_ptr)[0], (*slots_ptr)[1], value);
                assert_eq!(
                    result,
                    value.wrapping_add(1),
                    "round {round}, starting at {first:#x}"
                );
                value = result.wrapping_add(round);
            }
        }
    }
}

// The load policy, which `switch` uses before the first `init_frame` of a process.

const CHILD_VARIABLE: &str = "GORO_SYMMETRIC_LOAD_POLICY_CHILD";

/// Entry of a hand-built context: calls `entry(arg, data)` as the crate's trampoline does.
#[unsafe(naked)]
unsafe extern "C" fn hand_built_trampoline() -> ! {
    core::arch::naked_asm!("mov rdi, rax", "mov rsi, r12", "call rbx", "ud2")
}

/// Writes the frame of a fresh context as `init_frame` does, but with `slot` as its FP control
/// state, so that no `init_frame` runs and the FP policy stays unset.
fn hand_built_frame(stack: &TestStack, slot: FpControl, data: usize) -> usize {
    let top = stack.hi() & !15;
    let sp = top - 80;
    let entry: unsafe extern "C" fn(usize, usize) -> ! = install_then_switch;
    let words: [usize; 10] = [
        slot.to_raw() as usize,
        0,
        0,
        0,
        data,
        entry as usize,
        0,
        hand_built_trampoline as *const () as usize,
        0,
        0,
    ];
    // SAFETY: [sp, top) lies inside the stack, and sp is 16-byte aligned.
    unsafe { (sp as *mut [usize; 10]).write(words) };
    sp
}

/// Runs one exchange with a hand-built context and returns what each side saw.
fn hand_built_exchange(main_state: FpControl, context_state: FpControl) -> [FpControl; 3] {
    let stack = TestStack::new(STACK_SIZE);
    let mut scene = FpScene {
        main_sp: 0,
        context_sp: 0,
        context_state,
        context_switch: switch_symmetric,
        seen_by_context: None,
    };
    let scene_ptr = &raw mut scene;
    // SAFETY: the stack and the scene outlive the context, which is suspended for good after
    // the second switch.
    let main_after = unsafe {
        (*scene_ptr).context_sp =
            hand_built_frame(&stack, FpControl::ROUND_DOWN, scene_ptr as usize);
        main_state.install();
        switch_symmetric(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
        let first = FpControl::read();
        switch_symmetric(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
        let second = FpControl::read();
        FpControl::DEFAULT.install();
        [first, second]
    };
    let seen = scene.seen_by_context.expect("the context ran twice");
    [main_after[0], main_after[1], seen]
}

/// Runs the body of `load_policy_before_first_init_frame` in a child process, where no
/// `init_frame` ran before it.
#[test]
#[ignore = "runs only as the child of load_policy_before_first_init_frame"]
fn load_policy_child() {
    if std::env::var_os(CHILD_VARIABLE).is_none() {
        return;
    }
    let _restore = RestoreDefaults;
    let main_state = FpControl::ROUND_TO_ZERO_FLUSH;
    let context_state = STATES[0].1;
    // First with the policy unset (the load path), then after an init_frame has set it from
    // the CPU vendor (the compare path on Intel cores).
    for policy in ["unset", "set by init_frame"] {
        if policy == "set by init_frame" {
            let stack = TestStack::new(STACK_SIZE);
            // SAFETY: the context is never resumed.
            black_box(unsafe { init_stack(stack.lo(), stack.hi(), echo_context, 0) });
        }
        let [first, second, seen] = hand_built_exchange(main_state, context_state);
        assert_eq!(
            first, main_state,
            "policy {policy}: main after the first switch"
        );
        assert_eq!(
            second, main_state,
            "policy {policy}: main after the second switch"
        );
        assert_eq!(
            seen, context_state,
            "policy {policy}: the context after its resume"
        );
    }
    println!("load policy child passed");
}

#[test]
fn load_policy_before_first_init_frame() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "load_policy_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VARIABLE, "1")
        .output()
        .expect("the test binary runs as a child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("load policy child passed"),
        "child failed with {}:\n{stdout}\n{stderr}",
        output.status
    );
}

// Single-stepping a switch and unwinding from every instruction.

/// Trap records: the interrupted rip and the return address of the frame above it, as the
/// unwinder computes it from the CFI.
const MAX_TRAPS: usize = 1024;
static TRAP_RIPS: [AtomicUsize; MAX_TRAPS] = [const { AtomicUsize::new(0) }; MAX_TRAPS];
static TRAP_CALLERS: [AtomicUsize; MAX_TRAPS] = [const { AtomicUsize::new(0) }; MAX_TRAPS];
static TRAP_COUNT: AtomicUsize = AtomicUsize::new(0);
static TRACING: AtomicBool = AtomicBool::new(false);
/// Address of the traced switch function.
static TRACED_FORM: AtomicUsize = AtomicUsize::new(0);
/// Bound on the size of a switch's code, fast and slow paths: about 85 bytes in practice.
const SWITCH_CODE_BYTES: usize = 256;

#[repr(C)]
struct UnwindContext {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_int;
    fn _Unwind_GetIP(context: *mut UnwindContext) -> usize;
}

/// Walk state: the interrupted rip to look for and the frame found after it.
struct Walk {
    rip: usize,
    found: bool,
    caller: usize,
    frames: usize,
}

extern "C" fn walk_frame(context: *mut UnwindContext, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the Walk of the handler below, and `context` is the unwinder's.
    let (walk, ip) = unsafe { (&mut *(data as *mut Walk), _Unwind_GetIP(context)) };
    walk.frames += 1;
    if walk.found {
        walk.caller = ip;
        return 5; // _URC_END_OF_STACK: stop the walk.
    }
    if ip == walk.rip {
        walk.found = true;
    }
    if walk.frames > 64 { 5 } else { 0 }
}

extern "C" fn on_sigtrap(_signal: c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let rip =
        unsafe { (*(context as *mut libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] }
            as usize;
    let mut walk = Walk {
        rip,
        found: false,
        caller: 0,
        frames: 0,
    };
    // Unwind only inside the switch. Elsewhere, between the `pushfq` and the `popfq` of
    // `step_switch`, the compiler's CFI does not cover the pushed flags.
    let start = TRACED_FORM.load(Ordering::Relaxed);
    if rip >= start && rip < start + SWITCH_CODE_BYTES {
        // SAFETY: the callback only reads the unwinder's context.
        unsafe { _Unwind_Backtrace(walk_frame, (&raw mut walk).cast()) };
    }
    let index = TRAP_COUNT.fetch_add(1, Ordering::Relaxed);
    if index < MAX_TRAPS {
        TRAP_RIPS[index].store(rip, Ordering::Relaxed);
        TRAP_CALLERS[index].store(walk.caller, Ordering::Relaxed);
    }
}

/// The stepping pair: both sides switch from the one call site in `step_switch`.
struct StepScene {
    main_sp: usize,
    context_sp: usize,
    form: RawSwitch,
    context_state: FpControl,
}

/// Switches with the trap flag set when `traced`, from the one call site of the scene's form.
/// The side that this switch resumes returns from its own `step_switch` and clears the flag.
#[inline(never)]
unsafe extern "C" fn step_switch(
    save_sp: *mut usize,
    resume_sp: usize,
    form: RawSwitch,
    traced: bool,
) {
    // SAFETY: the caller upholds the raw switch's contract. Setting and clearing the trap flag
    // only makes the kernel raise SIGTRAP after each instruction.
    unsafe {
        if traced {
            core::arch::asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq");
        }
        form(save_sp, resume_sp, 0);
        core::arch::asm!("pushfq", "and qword ptr [rsp], ~0x100", "popfq");
    }
}

unsafe extern "C" fn stepping_context(_arg: usize, data: usize) -> ! {
    let scene = data as *mut StepScene;
    // SAFETY: the scene outlives the context, and only the running side touches it.
    unsafe {
        (*scene).context_state.install();
        loop {
            step_switch(
                &raw mut (*scene).context_sp,
                (*scene).main_sp,
                (*scene).form,
                false,
            );
        }
    }
}

/// At every instruction of a traced switch, libgcc's unwinder finds the return address into
/// `step_switch`: the suspended side's before the move to the other stack, the resumed
/// side's after it, which is the same address because both call from one site.
///
/// NOTE: this fails at `+0xe` and `+0x12` of `switch` and `switch_symmetric`, because the
/// macro states the `sub rsp, 8` of the FP slot in the CFI only after `stmxcsr` and `fnstcw`.
#[test]
fn cfi_unwinds_at_every_instruction() {
    let _restore = RestoreDefaults;
    // SAFETY: the handler only reads its context and writes atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigtrap as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        assert_eq!(
            libc::sigaction(libc::SIGTRAP, &action, std::ptr::null_mut()),
            0
        );
    }
    let forms: [(&str, RawSwitch); 2] =
        [("switch_symmetric", switch_symmetric), ("switch", switch)];
    // The same state on both sides takes the fast path; different states take the slow path.
    let states = [FpControl::DEFAULT, FpControl::ROUND_DOWN];
    let mut failures = Vec::new();
    for (form_name, form) in forms {
        for context_state in states {
            let stack = TestStack::new(STACK_SIZE);
            let mut scene = StepScene {
                main_sp: 0,
                context_sp: 0,
                form,
                context_state,
            };
            let scene_ptr = &raw mut scene;
            // SAFETY: the stack and the scene outlive the context, which stays suspended for
            // good in `step_switch` after the traced switch.
            unsafe {
                (*scene_ptr).context_sp =
                    init_stack(stack.lo(), stack.hi(), stepping_context, scene_ptr as usize);
                // Let the context start and suspend itself in `step_switch`, untraced.
                step_switch(
                    &raw mut (*scene_ptr).main_sp,
                    (*scene_ptr).context_sp,
                    form,
                    false,
                );
                TRAP_COUNT.store(0, Ordering::Relaxed);
                TRACED_FORM.store(form as usize, Ordering::Relaxed);
                TRACING.store(true, Ordering::Relaxed);
                step_switch(
                    &raw mut (*scene_ptr).main_sp,
                    (*scene_ptr).context_sp,
                    form,
                    true,
                );
                TRACING.store(false, Ordering::Relaxed);
            }
            let count = TRAP_COUNT.load(Ordering::Relaxed).min(MAX_TRAPS);
            let rips: Vec<usize> = (0..count)
                .map(|i| TRAP_RIPS[i].load(Ordering::Relaxed))
                .collect();
            let callers: Vec<usize> = (0..count)
                .map(|i| TRAP_CALLERS[i].load(Ordering::Relaxed))
                .collect();
            let start = form as usize;
            let first = rips
                .iter()
                .position(|&rip| rip == start)
                .unwrap_or_else(|| {
                    panic!("{form_name}: no trap at the switch's first instruction: {rips:x?}")
                });
            let inside = |rip: usize| rip >= start && rip < start + SWITCH_CODE_BYTES;
            let end = first
                + rips[first..]
                    .iter()
                    .position(|&rip| !inside(rip))
                    .unwrap_or_else(|| panic!("{form_name}: the trace never left the switch"));
            let return_address = rips[end];
            assert!(
                end - first >= 25,
                "{form_name}: only {} instructions traced",
                end - first
            );
            for i in (first..end).filter(|&i| callers[i] != return_address) {
                failures.push(format!(
                    "{form_name}, context state {context_state:x?}: at {form_name}+{:#x} the \
                     caller unwound to {:#x}, expected {return_address:#x}",
                    rips[i] - start,
                    callers[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

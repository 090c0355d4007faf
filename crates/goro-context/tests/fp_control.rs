//! FP control state: each context keeps its own, and a fresh context starts with the defaults
//! whatever its creator has installed.

mod common;

use common::{
    FpControl, ONE_TENTH_NEAREST, ONE_TENTH_TOWARD_ZERO, halved_min_positive, one_tenth_bits,
};
use goro_context::{Coroutine, CoroutineResult, init_stack, switch, switch_from_g0, switch_to_g0};

const STACK_SIZE: usize = 256 * 1024;

/// Restores the default FP control state when dropped, so that a failed assertion does not
/// leave the test thread with a strange rounding mode.
struct RestoreDefaults;

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        // SAFETY: installing the defaults is what the rest of the test binary expects.
        unsafe { FpControl::DEFAULT.install() };
    }
}

/// FP behaviour seen at one moment by one side.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    control: FpControl,
    one_tenth: u64,
    halved_min_positive: f64,
}

impl Seen {
    fn now() -> Seen {
        Seen {
            control: FpControl::read(),
            one_tenth: one_tenth_bits(),
            halved_min_positive: halved_min_positive(),
        }
    }
}

#[derive(Default)]
struct Scene {
    main_sp: usize,
    first_sp: usize,
    second_sp: usize,
    first_at_entry: Option<Seen>,
    first_after_resume: Option<Seen>,
    second_at_entry: Option<Seen>,
}

/// Installs round-toward-zero with flush-to-zero, switches to main, and records the FP state
/// it observes when the second context resumes it.
unsafe extern "C" fn first_context(_arg: usize, data: usize) -> ! {
    let scene = data as *mut Scene;
    // SAFETY: the Scene outlives both contexts, and only the running side touches it.
    unsafe {
        (*scene).first_at_entry = Some(Seen::now());
        FpControl::ROUND_TO_ZERO_FLUSH.install();
        switch(&raw mut (*scene).first_sp, (*scene).main_sp, 0);
        (*scene).first_after_resume = Some(Seen::now());
        FpControl::DEFAULT.install();
        loop {
            switch(&raw mut (*scene).first_sp, (*scene).main_sp, 0);
        }
    }
}

/// Records the FP state it observes at entry, then resumes the first context directly.
unsafe extern "C" fn second_context(_arg: usize, data: usize) -> ! {
    let scene = data as *mut Scene;
    // SAFETY: as in first_context.
    unsafe {
        (*scene).second_at_entry = Some(Seen::now());
        loop {
            switch(&raw mut (*scene).second_sp, (*scene).first_sp, 0);
        }
    }
}

fn expected(control: FpControl) -> Seen {
    let toward_zero = control == FpControl::ROUND_TO_ZERO_FLUSH;
    Seen {
        control,
        one_tenth: if toward_zero {
            ONE_TENTH_TOWARD_ZERO
        } else {
            ONE_TENTH_NEAREST
        },
        halved_min_positive: if control.flushes_to_zero() {
            0.0
        } else {
            f64::MIN_POSITIVE / 2.0
        },
    }
}

fn control_bits(seen: Option<Seen>) -> Option<Seen> {
    seen.map(|seen| Seen {
        control: seen.control.control_bits(),
        ..seen
    })
}

#[test]
fn each_context_keeps_its_fp_control() {
    let _restore = RestoreDefaults;
    let stacks = [
        common::TestStack::new(STACK_SIZE),
        common::TestStack::new(STACK_SIZE),
    ];
    let mut scene = Scene::default();
    let scene_ptr = &raw mut scene;

    // SAFETY: each stack is owned by its context and outlives it; the Scene outlives both.
    unsafe {
        (*scene_ptr).first_sp = init_stack(
            stacks[0].lo(),
            stacks[0].hi(),
            first_context,
            scene_ptr as usize,
        );
        switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).first_sp, 0);
    }
    // Main keeps the defaults although the first context changed its own state.
    assert_eq!(
        control_bits(Some(Seen::now())),
        Some(expected(FpControl::DEFAULT))
    );

    // Main now runs with a third state, which a new context must not inherit.
    // SAFETY: the state keeps exceptions masked; RestoreDefaults undoes it.
    unsafe { FpControl::ROUND_DOWN.install() };
    // SAFETY: as above. The second context resumes the first, which returns to main.
    unsafe {
        (*scene_ptr).second_sp = init_stack(
            stacks[1].lo(),
            stacks[1].hi(),
            second_context,
            scene_ptr as usize,
        );
        switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).second_sp, 0);
    }
    assert_eq!(
        FpControl::read().control_bits(),
        FpControl::ROUND_DOWN.control_bits()
    );
    // SAFETY: back to the defaults before comparing with Rust arithmetic.
    unsafe { FpControl::DEFAULT.install() };

    // SAFETY: both contexts are suspended for good.
    let scene = unsafe { &*scene_ptr };
    assert_eq!(
        control_bits(scene.first_at_entry),
        Some(expected(FpControl::DEFAULT)),
        "the first context did not start with the defaults"
    );
    assert_eq!(
        control_bits(scene.second_at_entry),
        Some(expected(FpControl::DEFAULT)),
        "the second context did not start with the defaults"
    );
    assert_eq!(
        control_bits(scene.first_after_resume),
        Some(expected(FpControl::ROUND_TO_ZERO_FLUSH)),
        "the first context lost its own FP control state"
    );
}

/// Records the raw FP control state at entry and switches back for good.
unsafe extern "C" fn report_entry_state(_arg: usize, data: usize) -> ! {
    let slots = data as *mut (usize, usize, Option<FpControl>);
    // SAFETY: `data` points to the slots, which outlive the context.
    unsafe {
        (*slots).2 = Some(FpControl::read());
        loop {
            switch(&raw mut (*slots).1, (*slots).0, 0);
        }
    }
}

#[test]
fn fresh_context_gets_exact_defaults() {
    let _restore = RestoreDefaults;
    let stack = common::TestStack::new(STACK_SIZE);
    // Main's state differs from the defaults in every field the switch saves.
    // SAFETY: the state keeps exceptions masked; RestoreDefaults undoes it.
    unsafe { FpControl::ROUND_TO_ZERO_FLUSH.install() };
    let mut slots: (usize, usize, Option<FpControl>) = (0, 0, None);
    let slots_ptr = &raw mut slots;
    // SAFETY: the stack is owned by the context and outlives it.
    unsafe {
        (*slots_ptr).1 = init_stack(
            stack.lo(),
            stack.hi(),
            report_entry_state,
            slots_ptr as usize,
        );
        switch(&raw mut (*slots_ptr).0, (*slots_ptr).1, 0);
    }
    // SAFETY: the context is suspended for good.
    let at_entry = unsafe { (*slots_ptr).2 };
    // Nothing ran in the context before it read the state, so even the status flags are
    // those of the fresh frame.
    assert_eq!(at_entry, Some(FpControl::DEFAULT));
}

/// Saved stack pointers of a g0 and two goroutine contexts, and what the goroutines observed.
#[derive(Default)]
struct G0Scene {
    g0_sp: usize,
    g_sps: [usize; 2],
    at_entry: [Option<FpControl>; 2],
    after_resume: Option<FpControl>,
}

/// Data of a goroutine context in a `G0Scene`.
struct GData {
    scene: *mut G0Scene,
    index: usize,
}

/// Records the state at entry, installs round-toward-zero with flush-to-zero, and switches
/// to g0 with `switch_to_g0`. Goroutine 0 then records the state after its resume.
unsafe extern "C" fn g_context(_arg: usize, data: usize) -> ! {
    // SAFETY: `data` is a GData that outlives the context.
    let data = unsafe { &*(data as *const GData) };
    let scene = data.scene;
    let index = data.index;
    // SAFETY: the scene outlives the contexts, and only the running side touches it. g0 is
    // suspended in switch_from_g0 each time this context switches to it.
    unsafe {
        (*scene).at_entry[index] = Some(FpControl::read().control_bits());
        FpControl::ROUND_TO_ZERO_FLUSH.install();
        switch_to_g0(&raw mut (*scene).g_sps[index], (*scene).g0_sp, 0);
        (*scene).after_resume = Some(FpControl::read().control_bits());
        FpControl::ROUND_DOWN.install();
        loop {
            switch_to_g0(&raw mut (*scene).g_sps[index], (*scene).g0_sp, 0);
        }
    }
}

#[test]
fn g0_pair_keeps_g_state_and_g0_defaults() {
    let _restore = RestoreDefaults;
    let stacks = [
        common::TestStack::new(STACK_SIZE),
        common::TestStack::new(STACK_SIZE),
    ];
    let mut scene = G0Scene::default();
    let scene_ptr = &raw mut scene;
    let datas = [0, 1].map(|index| GData {
        scene: scene_ptr,
        index,
    });
    for (index, stack) in stacks.iter().enumerate() {
        // SAFETY: each stack is owned by its context and outlives it; the data outlive both.
        unsafe {
            (*scene_ptr).g_sps[index] = init_stack(
                stack.lo(),
                stack.hi(),
                g_context,
                &raw const datas[index] as usize,
            );
        }
    }

    // This thread plays g0: it runs with the defaults, as switch_from_g0 requires.
    // SAFETY: goroutine 0 is fresh and its stack is alive.
    unsafe { switch_from_g0(&raw mut (*scene_ptr).g0_sp, (*scene_ptr).g_sps[0], 0) };
    assert_eq!(
        FpControl::read().control_bits(),
        FpControl::DEFAULT,
        "g0 after goroutine 0 installed another state"
    );
    // SAFETY: goroutine 1 is fresh and its stack is alive.
    unsafe { switch_from_g0(&raw mut (*scene_ptr).g0_sp, (*scene_ptr).g_sps[1], 0) };
    assert_eq!(
        FpControl::read().control_bits(),
        FpControl::DEFAULT,
        "g0 after goroutine 1 installed another state"
    );
    // SAFETY: goroutine 0 is suspended in switch_to_g0.
    unsafe { switch_from_g0(&raw mut (*scene_ptr).g0_sp, (*scene_ptr).g_sps[0], 0) };
    assert_eq!(
        FpControl::read().control_bits(),
        FpControl::DEFAULT,
        "g0 after goroutine 0 ran again"
    );

    // SAFETY: both contexts are suspended for good.
    let scene = unsafe { &*scene_ptr };
    assert_eq!(
        scene.at_entry[0],
        Some(FpControl::DEFAULT),
        "goroutine 0 at entry"
    );
    assert_eq!(
        scene.at_entry[1],
        Some(FpControl::DEFAULT),
        "goroutine 1 at entry, after goroutine 0 changed its state"
    );
    assert_eq!(
        scene.after_resume,
        Some(FpControl::ROUND_TO_ZERO_FLUSH.control_bits()),
        "goroutine 0 lost its state while it was suspended"
    );
}

#[test]
fn coroutine_without_fp_switch_starts_with_defaults() {
    let _restore = RestoreDefaults;
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine, and the closure leaves the FP control state
    // alone. The first resume runs with another state, which the contract rules out for the
    // later ones, to show that the first resume installs the defaults all the same.
    let mut coroutine = unsafe {
        Coroutine::new_without_fp_switch(stack.lo(), stack.hi(), |yielder, mut rounds: u32| {
            while rounds > 0 {
                rounds = yielder.suspend(FpControl::read().control_bits());
            }
            FpControl::read().control_bits()
        })
    };
    // SAFETY: the state keeps exceptions masked; RestoreDefaults undoes it.
    unsafe { FpControl::ROUND_DOWN.install() };
    assert_eq!(
        coroutine.resume(2).unwrap(),
        CoroutineResult::Yield(FpControl::DEFAULT),
        "the first resume did not install the defaults"
    );
    // SAFETY: from here on both sides run with the defaults, as the contract requires.
    unsafe { FpControl::DEFAULT.install() };
    assert_eq!(
        coroutine.resume(1).unwrap(),
        CoroutineResult::Yield(FpControl::DEFAULT)
    );
    assert_eq!(
        coroutine.resume(0).unwrap(),
        CoroutineResult::Return(FpControl::DEFAULT)
    );
    assert_eq!(FpControl::read().control_bits(), FpControl::DEFAULT);
}

/// MXCSR status flags are part of each x86_64 context, as documented in src/arch/x86_64.rs.
#[cfg(target_arch = "x86_64")]
mod mxcsr_flags {
    use super::*;

    const INVALID: u32 = 0x01;
    const DIVIDE_BY_ZERO: u32 = 0x04;
    const INEXACT: u32 = 0x20;

    fn set_flags(flags: u32) {
        // SAFETY: only status flags change.
        unsafe {
            FpControl {
                mxcsr: FpControl::DEFAULT.mxcsr | flags,
                ..FpControl::DEFAULT
            }
            .install()
        };
    }

    fn flags() -> u32 {
        FpControl::read().mxcsr & !FpControl::MXCSR_CONTROL_BITS
    }

    unsafe extern "C" fn raise_inexact(_arg: usize, data: usize) -> ! {
        let slots = data as *mut (usize, usize, u32);
        // SAFETY: `data` points to the slots, which outlive the context.
        unsafe {
            set_flags(INEXACT);
            switch(&raw mut (*slots).1, (*slots).0, 0);
            (*slots).2 = flags();
            loop {
                switch(&raw mut (*slots).1, (*slots).0, 0);
            }
        }
    }

    #[test]
    fn status_flags_belong_to_each_context() {
        let _restore = RestoreDefaults;
        let stack = common::TestStack::new(STACK_SIZE);
        set_flags(DIVIDE_BY_ZERO);
        let mut slots: (usize, usize, u32) = (0, 0, 0);
        let slots_ptr = &raw mut slots;
        // SAFETY: the stack is owned by the context and outlives it.
        unsafe {
            (*slots_ptr).1 = init_stack(stack.lo(), stack.hi(), raise_inexact, slots_ptr as usize);
            switch(&raw mut (*slots_ptr).0, (*slots_ptr).1, 0);
        }
        assert_eq!(
            flags(),
            DIVIDE_BY_ZERO,
            "main's flags after the context ran"
        );
        set_flags(INVALID);
        // SAFETY: the context is suspended in its first switch.
        unsafe { switch(&raw mut (*slots_ptr).0, (*slots_ptr).1, 0) };
        // SAFETY: the context is suspended for good.
        let context_flags = unsafe { (*slots_ptr).2 };
        assert_eq!(context_flags, INEXACT, "the context's flags after main ran");
        assert_eq!(flags(), INVALID, "main's flags after the second switch");
    }
}

/// States that differ from the defaults in one part only, through every x86_64 switch form:
/// a form that skips its FP loads must compare every part of the state.
#[cfg(target_arch = "x86_64")]
mod one_part_differs {
    use super::*;

    type RawSwitch = unsafe extern "C" fn(*mut usize, usize, usize) -> usize;

    /// Round toward zero in the x87 control word only.
    const X87_ONLY: FpControl = FpControl {
        mxcsr: 0x1F80,
        x87_control_word: 0x037F | 0x0C00,
    };
    /// Round toward zero in MXCSR only.
    const MXCSR_ONLY: FpControl = FpControl {
        mxcsr: 0x1F80 | 0x6000,
        x87_control_word: 0x037F,
    };
    /// The MXCSR inexact flag only.
    const FLAG_ONLY: FpControl = FpControl {
        mxcsr: 0x1F80 | 0x20,
        x87_control_word: 0x037F,
    };

    const STATES: [(&str, FpControl); 4] = [
        ("x87 control word only", X87_ONLY),
        ("MXCSR control bits only", MXCSR_ONLY),
        ("MXCSR flag only", FLAG_ONLY),
        ("nothing", FpControl::DEFAULT),
    ];

    /// The forms a main thread with the defaults may suspend itself with.
    const MAIN_SWITCHES: [(&str, RawSwitch); 4] = [
        ("switch", goro_context::raw::switch),
        (
            "switch_always_load_fp",
            goro_context::raw::switch_always_load_fp,
        ),
        ("switch_compare_fp", goro_context::raw::switch_compare_fp),
        ("switch_load_fp", goro_context::raw::switch_load_fp),
    ];

    /// The forms a context with any state may suspend itself with.
    const CONTEXT_SWITCHES: [(&str, RawSwitch); 3] = [
        ("switch", goro_context::raw::switch),
        (
            "switch_always_load_fp",
            goro_context::raw::switch_always_load_fp,
        ),
        ("switch_compare_fp", goro_context::raw::switch_compare_fp),
    ];

    struct Scene {
        main_sp: usize,
        context_sp: usize,
        state: FpControl,
        context_switch: RawSwitch,
        seen_after_resume: Option<FpControl>,
    }

    /// Installs the scene's state, switches to main, and records the state after its resume.
    unsafe extern "C" fn install_then_switch(_arg: usize, data: usize) -> ! {
        let scene = data as *mut Scene;
        // SAFETY: the Scene outlives the context, and only the running side touches it.
        unsafe {
            (*scene).state.install();
            ((*scene).context_switch)(&raw mut (*scene).context_sp, (*scene).main_sp, 0);
            (*scene).seen_after_resume = Some(FpControl::read());
            FpControl::DEFAULT.install();
            loop {
                ((*scene).context_switch)(&raw mut (*scene).context_sp, (*scene).main_sp, 0);
            }
        }
    }

    #[test]
    fn every_part_of_the_state_switches() {
        let _restore = RestoreDefaults;
        for (state_name, state) in STATES {
            for (main_name, main_switch) in MAIN_SWITCHES {
                for (context_name, context_switch) in CONTEXT_SWITCHES {
                    let case = format!(
                        "a context that differs in {state_name}, suspending with \
                         {context_name}, resumed by main with {main_name}"
                    );
                    let stack = common::TestStack::new(STACK_SIZE);
                    let mut scene = Scene {
                        main_sp: 0,
                        context_sp: 0,
                        state,
                        context_switch,
                        seen_after_resume: None,
                    };
                    let scene_ptr = &raw mut scene;
                    // SAFETY: installing the defaults is what switch_load_fp requires of main,
                    // and the stack and the Scene outlive the context, which is suspended for
                    // good after the second switch.
                    unsafe {
                        FpControl::DEFAULT.install();
                        (*scene_ptr).context_sp = init_stack(
                            stack.lo(),
                            stack.hi(),
                            install_then_switch,
                            scene_ptr as usize,
                        );
                        main_switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
                        assert_eq!(FpControl::read(), FpControl::DEFAULT, "main, after {case}");
                        main_switch(&raw mut (*scene_ptr).main_sp, (*scene_ptr).context_sp, 0);
                    }
                    assert_eq!(scene.seen_after_resume, Some(state), "{case}");
                }
            }
        }
    }
}

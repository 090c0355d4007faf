//! Long switch loops keep both stack pointers steady, and values pass with every switch.

mod common;

use common::caller_sp;
use goro_context::{init_stack, switch};

const STACK_SIZE: usize = 64 * 1024;
const ROUND_TRIPS: usize = 1_000_000;

/// Saved stack pointers of main and one context, and what the context observed.
#[derive(Default)]
struct Pair {
    main_sp: usize,
    context_sp: usize,
    /// The context's `caller_sp()` after its first resume.
    context_reference_sp: usize,
    /// Resumes after which the context's `caller_sp()` differed from the reference.
    context_sp_changes: usize,
    /// Values that the context received but did not expect.
    context_bad_values: usize,
    context_resumes: usize,
}

/// Computes the value that main sends in round `round`, which the context checks.
fn main_value(round: usize) -> usize {
    usize::MAX - round.wrapping_mul(0x9E37_79B9)
}

/// Computes the context's reply to `value`.
fn reply(value: usize) -> usize {
    value.rotate_left(17) ^ 0x5A5A_5A5A_5A5A_5A5A
}

unsafe extern "C" fn steady_context(first: usize, data: usize) -> ! {
    let pair = data as *mut Pair;
    let mut round = 0;
    let mut received = first;
    loop {
        // SAFETY: the Pair outlives the context, and only the running side touches it.
        unsafe {
            if received != main_value(round) {
                (*pair).context_bad_values += 1;
            }
            received = switch(
                &raw mut (*pair).context_sp,
                (*pair).main_sp,
                reply(received),
            );
            let sp = caller_sp();
            if (*pair).context_resumes == 0 {
                (*pair).context_reference_sp = sp;
            } else if sp != (*pair).context_reference_sp {
                (*pair).context_sp_changes += 1;
            }
            (*pair).context_resumes += 1;
        }
        round += 1;
    }
}

#[test]
fn million_round_trips_keep_stack_pointers() {
    let stack = common::TestStack::new(STACK_SIZE);
    let mut pair = Pair::default();
    let pair_ptr = &raw mut pair;
    // SAFETY: the stack is owned by the context and outlives it.
    unsafe {
        (*pair_ptr).context_sp =
            init_stack(stack.lo(), stack.hi(), steady_context, pair_ptr as usize)
    };

    let reference_sp = caller_sp();
    let mut main_sp_changes = 0;
    let mut main_bad_values = 0;
    for round in 0..ROUND_TRIPS {
        let sent = main_value(round);
        // SAFETY: the context is fresh or suspended in its own switch; its stack is alive.
        let received =
            unsafe { switch(&raw mut (*pair_ptr).main_sp, (*pair_ptr).context_sp, sent) };
        if received != reply(sent) {
            main_bad_values += 1;
        }
        if caller_sp() != reference_sp {
            main_sp_changes += 1;
        }
    }

    // SAFETY: the context is suspended.
    let pair = unsafe { &*pair_ptr };
    assert_eq!(main_sp_changes, 0, "main's stack pointer changed");
    assert_eq!(main_bad_values, 0, "main received wrong values");
    assert_eq!(
        pair.context_sp_changes, 0,
        "the context's stack pointer changed"
    );
    assert_eq!(
        pair.context_bad_values, 0,
        "the context received wrong values"
    );
    assert_eq!(pair.context_resumes, ROUND_TRIPS - 1);
    assert!(
        pair.context_reference_sp > stack.lo() && pair.context_reference_sp < stack.hi(),
        "the context's stack pointer {:#x} is outside its stack",
        pair.context_reference_sp
    );
}

/// A ring of contexts that hand a token straight to each other, without going through main.
struct Ring {
    main_sp: usize,
    sps: [usize; 3],
    /// Tokens as each member saw them, in order.
    seen: [Vec<usize>; 3],
}

#[derive(Clone, Copy)]
struct Member {
    ring: *mut Ring,
    index: usize,
}

const LAPS: usize = 100;

unsafe extern "C" fn ring_member(mut token: usize, data: usize) -> ! {
    // SAFETY: `data` is a Member that outlives the ring's contexts.
    let Member { ring, index } = unsafe { *(data as *const Member) };
    loop {
        // SAFETY: the Ring outlives its contexts, and only the running side touches it. The
        // last member ends a lap by resuming main.
        unsafe {
            (*ring).seen[index].push(token);
            let next_sp = match (*ring).sps.get(index + 1) {
                Some(sp) => *sp,
                None => (*ring).main_sp,
            };
            token = switch(&raw mut (*ring).sps[index], next_sp, token * 2 + index);
        }
    }
}

#[test]
fn contexts_switch_directly_to_each_other() {
    let stacks = [(); 3].map(|()| common::TestStack::new(STACK_SIZE));
    let mut ring = Ring {
        main_sp: 0,
        sps: [0; 3],
        seen: Default::default(),
    };
    let ring_ptr = &raw mut ring;
    let members = [0, 1, 2].map(|index| Member {
        ring: ring_ptr,
        index,
    });
    for index in 0..3 {
        // SAFETY: each stack is owned by its context and outlives it.
        unsafe {
            (*ring_ptr).sps[index] = init_stack(
                stacks[index].lo(),
                stacks[index].hi(),
                ring_member,
                &raw const members[index] as usize,
            )
        };
    }

    for lap in 0..LAPS {
        // SAFETY: member 0 is suspended; the ring and its stacks are alive.
        let token = unsafe { switch(&raw mut (*ring_ptr).main_sp, (*ring_ptr).sps[0], lap) };
        // Member i sends token * 2 + i, so after three members:
        let expected = ((lap * 2) * 2 + 1) * 2 + 2;
        assert_eq!(token, expected, "token after lap {lap}");
    }

    // SAFETY: every member is suspended.
    let ring = unsafe { &*ring_ptr };
    let laps: Vec<usize> = (0..LAPS).collect();
    assert_eq!(ring.seen[0], laps);
    assert_eq!(
        ring.seen[1],
        laps.iter().map(|lap| lap * 2).collect::<Vec<_>>()
    );
    assert_eq!(
        ring.seen[2],
        laps.iter().map(|lap| lap * 4 + 1).collect::<Vec<_>>()
    );
}

//! Dropping a runtime unwinds the goroutines that wait on sync primitives; the primitives must
//! stay consistent for the threads that use them afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro::sync::{Mutex, RwLock, Select, TryRecvError, TrySendError, WaitGroup, channel};

/// Goroutines of each kind that wait when the runtime is dropped.
const EACH: usize = 8;

#[test]
fn primitives_survive_a_dropped_runtime() {
    watchdog(LIMIT, || {
        let mutex = Arc::new(Mutex::new(0u32));
        let rwlock = Arc::new(RwLock::new(0u32));
        let group = Arc::new(WaitGroup::new());
        let (tx, rx) = channel::<u32>(0);
        let (select_tx, select_rx) = channel::<u32>(0);

        // This thread holds everything, so every goroutine below has to wait.
        let mutex_guard = mutex.lock();
        let write_guard = rwlock.write();
        group.add(1);

        let rt = Runtime::builder()
            .procs(2)
            .deadlock_detection(false)
            .build()
            .expect("runtime builds");
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..EACH {
            let (mutex, rwlock, group) = (mutex.clone(), rwlock.clone(), group.clone());
            let (rx, select_tx, started) = (rx.clone(), select_tx.clone(), started.clone());
            let (read_lock, write_lock) = (rwlock.clone(), rwlock);
            let select_rx = rx.clone();
            let body: Vec<Box<dyn FnOnce() + Send>> = vec![
                Box::new(move || drop(mutex.lock())),
                Box::new(move || drop(read_lock.read())),
                Box::new(move || drop(write_lock.write())),
                Box::new(move || group.wait()),
                Box::new(move || {
                    let _ = rx.recv();
                }),
                Box::new(move || {
                    Select::new()
                        .recv(&select_rx, |_| ())
                        .send(&select_tx, 1, |_| ())
                        .wait()
                }),
            ];
            for wait in body {
                let started = started.clone();
                handles.push(
                    rt.spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        wait();
                    })
                    .unwrap(),
                );
            }
        }
        // A writer that waits for this thread's read guard, and readers behind the writer.
        let pending = Arc::new(RwLock::new(0u32));
        let read_guard = pending.read();
        let writer = {
            let (pending, started) = (pending.clone(), started.clone());
            rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                *pending.write() += 1;
            })
            .unwrap()
        };
        while pending.try_read().is_some() {
            std::thread::yield_now();
        }
        handles.push(writer);
        for _ in 0..EACH {
            let (pending, started) = (pending.clone(), started.clone());
            let reader = rt
                .spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    drop(pending.read());
                })
                .unwrap();
            handles.push(reader);
        }

        let goroutines = handles.len();
        while started.load(Ordering::SeqCst) < goroutines {
            std::thread::yield_now();
        }
        // Dropping the runtime unwinds every goroutine out of its wait.
        drop(rt);
        for handle in handles {
            assert!(
                handle.join().is_err(),
                "a waiting goroutine finished normally"
            );
        }

        // Every primitive works for this thread, with no trace of the goroutines.
        drop(mutex_guard);
        *mutex.lock() += 1;
        assert!(mutex.try_lock().is_some(), "the mutex stayed locked");

        drop(write_guard);
        assert_eq!(*rwlock.read(), 0);
        *rwlock.write() += 1;
        assert!(
            rwlock.try_write().is_some(),
            "the rwlock kept a reader or writer"
        );

        // Threads that wait for the locks are still woken by unlocks. The sleep only makes
        // it likely that they wait; nothing depends on how long it is.
        for _ in 0..3 {
            let mutex_guard = mutex.lock();
            let write_guard = rwlock.write();
            let contenders = [
                {
                    let mutex = mutex.clone();
                    std::thread::spawn(move || *mutex.lock() += 1)
                },
                {
                    let rwlock = rwlock.clone();
                    std::thread::spawn(move || *rwlock.write() += 1)
                },
                {
                    let rwlock = rwlock.clone();
                    std::thread::spawn(move || drop(rwlock.read()))
                },
            ];
            std::thread::sleep(Duration::from_millis(10));
            drop(mutex_guard);
            drop(write_guard);
            contenders.into_iter().for_each(|t| t.join().unwrap());
        }
        assert_eq!(*mutex.lock(), 4);
        assert_eq!(*rwlock.read(), 4);

        // The abandoned writer gets the lock when the read guard goes, and gives it back.
        drop(read_guard);
        assert_eq!(*pending.read(), 0);
        assert!(
            pending.try_write().is_some(),
            "the abandoned writer or readers kept the rwlock"
        );

        group.done();
        group.wait();
        assert_eq!(group.count(), 0);
        group.add(1);
        group.done();
        group.wait();

        assert_eq!(
            tx.try_send(5),
            Err(TrySendError::Full(5)),
            "a receiver was left"
        );
        assert_eq!(
            select_rx.try_recv(),
            Err(TryRecvError::Empty),
            "a sender was left"
        );
    });
}

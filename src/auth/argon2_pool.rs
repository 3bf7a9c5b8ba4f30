//! The argon2 computations in flight: at most `cap` at any instant, each with its own working
//! memory, behind a bounded queue.
//!
//! - A verification first takes a [`Slot`] (a permit of the slot semaphore), waiting in a queue of
//!   at most `queue_max` attempts; past that it is refused at once ([`Busy`]), and the caller
//!   answers with the temporary reply.
//! - [`Slot::run`] moves the permit *into* the blocking task together with the working memory:
//!   both are released when the computation ends, not when the login that asked for it gives
//!   up. A login whose deadline passes drops only its wait for the result. So the number of
//!   computations and their memory are bounded by `cap` at every instant, whatever the
//!   deadlines do (issue 21: the permit used to be dropped with the timed-out login while its
//!   hash ran on with a fresh buffer, and a storm of wrong passwords ran thousands at once).
//! - Memory: one buffer per computation. A finished computation hands its buffer to the next in
//!   line and frees it when nobody waits, so the process returns to its baseline after a storm.
//!   Buffers are allocated with a capacity above glibc's largest mmap threshold (32 MiB on 64-bit,
//!   `mallopt(3)` `M_MMAP_THRESHOLD`): malloc maps them with mmap and unmaps them when freed.
//!   A smaller block would be carved from an arena and kept by the allocator after it is freed
//!   (tests/hostile.rs saw ~19 MiB more resident per failed login). Only the `m` KiB the hash
//!   needs are touched, so only they are resident.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::secret::SecretBytes;

/// The most computations the pool ever runs at once, whatever the machine.
const CAP_MAX: usize = 4;
/// Queued attempts per slot: at ~20–50 ms a verification, a full queue drains in about a second,
/// well inside a login's budget.
const QUEUE_PER_SLOT: usize = 16;
/// Smallest buffer capacity, in 1 KiB blocks: just above 32 MiB, so that glibc always serves it
/// with mmap and gives it back to the system when it is freed (see the module doc).
const MMAP_MIN_BLOCKS: usize = 32 * 1024 + 1;

/// The queue is full: answer with the temporary reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// What the pool is doing, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Stats {
    /// Computations allowed at once.
    pub cap: usize,
    /// Attempts allowed to wait for a slot.
    pub queue_max: usize,
    /// Computations running now.
    pub running: usize,
    /// The most computations ever seen running at once.
    pub peak: usize,
    /// Computations started since the pool was made.
    pub started: u64,
    /// Attempts waiting for a slot now.
    pub queued: usize,
    /// Working-memory buffers alive now (running computations and spares).
    pub buffers: usize,
}

/// State the blocking tasks share with the pool.
#[derive(Default)]
struct Shared {
    /// Buffers of finished computations, kept only while attempts wait for a slot.
    spare: Mutex<Vec<Vec<Block>>>,
    queued: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
    buffers: AtomicUsize,
}

/// At most `cap` argon2 computations at once, with at most `queue_max` attempts waiting.
pub struct Argon2Pool {
    slots: Arc<Semaphore>,
    cap: usize,
    queue_max: usize,
    shared: Arc<Shared>,
}

/// A permit to run one computation. Dropped unused, it frees the slot.
pub struct Slot {
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

/// Counts an attempt in the queue while it waits for a slot. The last attempt to leave the
/// queue without a slot (its login gave up) frees the spare buffers kept for it.
struct InQueue<'a> {
    shared: &'a Shared,
    served: bool,
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        let left = self.shared.queued.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && !self.served {
            self.shared.trim();
        }
    }
}

impl Argon2Pool {
    /// One slot per core, at most [`CAP_MAX`]: argon2 is CPU-bound, so more slots than cores
    /// only add memory and make every other task wait longer for a core.
    pub fn new() -> Argon2Pool {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Argon2Pool::with_cap(cores.clamp(1, CAP_MAX))
    }

    pub fn with_cap(cap: usize) -> Argon2Pool {
        let cap = cap.max(1);
        Argon2Pool {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            queue_max: cap * QUEUE_PER_SLOT,
            shared: Arc::new(Shared::default()),
        }
    }

    /// Take a slot, waiting in the queue if all are in use; [`Busy`] at once if the queue is
    /// full. Cancel-safe: a caller that stops waiting leaves the queue.
    pub async fn slot(&self) -> Result<Slot, Busy> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Busy),
            Err(TryAcquireError::NoPermits) => {
                let queued = &self.shared.queued;
                let admitted = queued
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.queue_max).then_some(n + 1)
                    })
                    .is_ok();
                if !admitted {
                    return Err(Busy);
                }
                let mut in_queue = InQueue {
                    shared: &self.shared,
                    served: false,
                };
                let permit = Arc::clone(&self.slots)
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?;
                in_queue.served = true;
                permit
            }
        };
        Ok(Slot {
            permit,
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn stats(&self) -> Argon2Stats {
        let s = &self.shared;
        Argon2Stats {
            cap: self.cap,
            queue_max: self.queue_max,
            running: s.running.load(Ordering::Acquire),
            peak: s.peak.load(Ordering::Acquire),
            started: s.started.load(Ordering::Acquire),
            queued: s.queued.load(Ordering::Acquire),
            buffers: s.buffers.load(Ordering::Acquire),
        }
    }
}

impl Slot {
    /// Check `password` against the PHC string `hash` on the blocking pool. The slot and the
    /// working memory go with the computation and are released when it ends, even if the
    /// caller has stopped waiting for the result by then.
    pub async fn run(self, hash: String, password: SecretBytes) -> bool {
        let Slot { permit, shared } = self;
        let task = tokio::task::spawn_blocking(move || {
            // Declared first, dropped last: the slot is free only once the buffer is back.
            let _permit = permit;
            let mut memory = shared.take_buffer();
            let running = shared.running.fetch_add(1, Ordering::AcqRel) + 1;
            shared.peak.fetch_max(running, Ordering::AcqRel);
            shared.started.fetch_add(1, Ordering::AcqRel);
            let ok = verify_with_memory(&hash, password.expose(), &mut memory);
            shared.running.fetch_sub(1, Ordering::AcqRel);
            shared.give_back(memory);
            ok
        });
        task.await.unwrap_or(false)
    }
}

impl Shared {
    fn take_buffer(&self) -> Vec<Block> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| {
            self.buffers.fetch_add(1, Ordering::AcqRel);
            Vec::new()
        })
    }

    /// Keep the (wiped) buffer for an attempt that waits; with none waiting, free it and any
    /// spares.
    fn give_back(&self, memory: Vec<Block>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if self.queued.load(Ordering::Acquire) > 0 {
            spare.push(memory);
            return;
        }
        drop(memory);
        self.buffers.fetch_sub(1, Ordering::AcqRel);
        self.free_spares(&mut spare);
    }

    /// Free the spare buffers if no attempt waits for one.
    fn trim(&self) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if self.queued.load(Ordering::Acquire) == 0 {
            self.free_spares(&mut spare);
        }
    }

    fn free_spares(&self, spare: &mut Vec<Vec<Block>>) {
        self.buffers.fetch_sub(spare.len(), Ordering::AcqRel);
        // Drops every buffer and the list's own allocation.
        *spare = Vec::new();
    }
}

/// `PasswordVerifier::verify_password` (password-hash crate), with the caller's working memory:
/// recompute the hash with the PHC string's algorithm, version, parameters and salt, compare in
/// constant time. The memory is wiped afterwards.
fn verify_with_memory(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        if memory.capacity() < blocks {
            // Exact, not amortised: the capacity decides how malloc serves the block.
            memory.reserve_exact(blocks.max(MMAP_MIN_BLOCKS) - memory.len());
        }
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok();
    memory[..blocks].fill(Block::default());
    let ok = computed && bool::from(out.as_slice().ct_eq(expected.as_bytes()));
    zeroize::Zeroize::zeroize(&mut out);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// argon2id of "pw" with the default parameters.
    fn hash() -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string()
    }

    /// Slots taken and then abandoned (the login's deadline passed) stay taken until their
    /// computation ends: the running count never passes the cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_computations_keep_their_slot() {
        let pool = Arc::new(Argon2Pool::with_cap(2));
        let h = hash();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (pool, h) = (Arc::clone(&pool), h.clone());
            tasks.push(tokio::spawn(async move {
                // Every login gives up almost at once, most while their hash runs.
                let _ = tokio::time::timeout(Duration::from_millis(1 + i % 3), async {
                    let slot = pool.slot().await?;
                    Ok::<_, Busy>(slot.run(h, SecretBytes::new(b"wrong".to_vec())).await)
                })
                .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Wait for the computations still running to end: each frees its slot last.
        for _ in 0..1000 {
            if pool.slots.available_permits() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = pool.stats();
        assert!(s.started >= 2, "{s:?}");
        assert!(s.peak <= 2, "{s:?}");
        assert_eq!((s.running, s.buffers), (0, 0), "{s:?}");
    }

    /// Past `queue_max` waiting attempts, the next is refused at once.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = Argon2Pool::with_cap(1);
        let held = pool.slot().await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..pool.stats().queue_max {
            let mut fut = Box::pin(pool.slot());
            assert!(futures_poll_pending(&mut fut).await);
            waiting.push(fut);
        }
        assert_eq!(pool.stats().queued, pool.stats().queue_max);
        assert_eq!(pool.slot().await.err(), Some(Busy));
        // Leaving the queue frees a place in it.
        waiting.pop();
        assert_eq!(pool.stats().queued, pool.stats().queue_max - 1);
        drop(held);
        let next = waiting.remove(0).await.unwrap();
        assert!(next.run(hash(), SecretBytes::new(b"pw".to_vec())).await);
    }

    /// Poll once; true if the future is still pending.
    async fn futures_poll_pending<F: std::future::Future + Unpin>(f: &mut F) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .is_err()
    }
}

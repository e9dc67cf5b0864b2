//! Password hashing (argon2id, m = 19 MiB, t = 2, p = 1, the OWASP baseline) in bounded
//! memory and a bounded queue.
//!
//! A fixed set of threads (`PASSWORD_HASH_THREADS`) does every hash and check. Each thread
//! takes its argon2 memory once, on its first job, and reuses it for every later one, so the
//! service holds `threads × 19 MiB` however many people sign in. (A fresh 19 MiB per hash,
//! as `Argon2::hash_password` allocates, made glibc's malloc raise its mmap threshold after
//! the first free and keep the freed blocks in per-thread arenas: over 1 GB after 600
//! sign-ins, never returned.) Jobs wait in a queue of `PASSWORD_HASH_QUEUE`; when it is full
//! the request is refused at once with 503 and `Retry-After` instead of waiting behind
//! everyone else.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use prometheus::IntCounter;

use crate::error::ApiError;

/// The parameters of every new hash.
const PARAMS: Params = Params::DEFAULT;

/// The most memory a stored hash may make a check use (64 MiB); stored hashes are ours, this
/// only keeps a tampered row from taking more.
const MAX_BLOCKS: usize = 64 * 1024;

/// A thread's argon2 memory, grown to the largest hash it has done and then kept.
#[derive(Default)]
struct Memory {
    blocks: Vec<Block>,
}

impl Memory {
    fn blocks(&mut self, count: usize) -> Result<&mut [Block], argon2::Error> {
        if count > MAX_BLOCKS {
            return Err(argon2::Error::MemoryTooMuch);
        }
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
        }
        Ok(&mut self.blocks[..count])
    }
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// The hashing threads and their queue. Dropping it lets the threads end.
pub struct HashPool {
    jobs: SyncSender<Job>,
    /// Counts requests refused because the queue was full.
    shed: IntCounter,
}

impl HashPool {
    pub fn new(threads: usize, queue: usize, shed: IntCounter) -> Self {
        let (jobs, waiting) = sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..threads.max(1) {
            let waiting = waiting.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || work(&waiting));
            if let Err(e) = spawned {
                log::error!("cannot start a password hashing thread: {e}");
            }
        }
        HashPool { jobs, shed }
    }

    /// Runs `job` on a hashing thread, or refuses at once when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The caller may have gone; the work is done either way.
            let _ = done.send(job(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shed.inc();
                return Err(ApiError::Busy("password hashing"));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Internal("no password hashing thread runs".into()))
            }
        }
        result
            .await
            .map_err(|_| ApiError::Internal("a password hashing job failed".into()))
    }

    /// A new argon2id hash of `password`, in the PHC string format.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| hash_with(memory, password.as_bytes()))
            .await?
            .map_err(|e| ApiError::Internal(format!("password hashing: {e}")))
    }

    /// Checks a password against a stored hash, or against a decoy when `hash` is `None`, so
    /// that an unknown user and a wrong password cost the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        self.run(move |memory| match hash {
            Some(hash) => verify_with(memory, password.as_bytes(), &hash),
            None => {
                let decoy = decoy(memory);
                verify_with(memory, password.as_bytes(), decoy);
                false
            }
        })
        .await
    }
}

/// A hashing thread: takes jobs until the pool is dropped.
fn work(waiting: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        // The lock is held only while waiting for the next job, not while hashing.
        let job = match waiting.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A job that panics fails its request; the thread and its memory carry on.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            log::error!("a password hashing job panicked");
        }
    }
}

fn hash_with(memory: &mut Memory, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS).hash_password_into_with_memory(
        password,
        salt_bytes,
        &mut out,
        memory.blocks(PARAMS.block_count())?,
    )?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&PARAMS)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    }
    .to_string())
}

/// Whether `password` matches `stored` (a PHC string with its own parameters); `false` for a
/// hash that cannot be read.
fn verify_with(memory: &mut Memory, password: &[u8], stored: &str) -> bool {
    let mut check = || -> Result<bool, argon2::password_hash::Error> {
        let hash = PasswordHash::new(stored)?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(hash.algorithm)?;
        let version = match hash.version {
            Some(v) => Version::try_from(v)?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash)?;
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let mut out = vec![0u8; expected.len()];
        let blocks = memory.blocks(params.block_count())?;
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks)?;
        // `Output`'s comparison takes the same time wherever the first difference is.
        Ok(Output::new(&out)? == expected)
    };
    check().unwrap_or(false)
}

/// A hash of a random password, made once.
fn decoy(memory: &mut Memory) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let password: [u8; 16] = rand::random();
        hash_with(memory, &password).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn pool(threads: usize, queue: usize) -> HashPool {
        HashPool::new(threads, queue, IntCounter::new("shed", "shed").unwrap())
    }

    #[tokio::test]
    async fn hashes_check_and_match_the_argon2_crate() {
        let pool = pool(1, 4);
        let hash = pool.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(pool
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!pool
            .verify("wrong horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!pool.verify("correct horse".into(), None).await.unwrap());
        assert!(!pool
            .verify("x".into(), Some("not a hash".into()))
            .await
            .unwrap());

        // Hashes stored before (made by the crate's own allocating path) still check, and
        // ours check with the crate's verifier.
        let stock = Argon2::default()
            .hash_password(b"old password", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(pool
            .verify("old password".into(), Some(stock))
            .await
            .unwrap());
        Argon2::default()
            .verify_password(b"correct horse", &PasswordHash::new(&hash).unwrap())
            .expect("the crate accepts our hash");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = pool(1, 1);
        // Hold the one thread, then fill the one queue slot.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let hold: Job = Box::new(move |_| {
            let _ = started.send(());
            let _ = held.recv();
        });
        assert!(pool.jobs.try_send(hold).is_ok());
        running.recv().unwrap();
        let (done, queued) = tokio::sync::oneshot::channel();
        let wait: Job = Box::new(move |_| {
            let _ = done.send(7);
        });
        assert!(pool.jobs.try_send(wait).is_ok());
        match pool.run(|_| 0).await {
            Err(ApiError::Busy(_)) => {}
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert_eq!(pool.shed.get(), 1);
        release.send(()).unwrap();
        assert_eq!(queued.await.unwrap(), 7, "the queued job still runs");
        assert_eq!(pool.run(|_| 1).await.unwrap(), 1, "and there is room again");
    }

    #[test]
    fn memory_is_reused_and_bounded() {
        let mut memory = Memory::default();
        let first = memory.blocks(100).unwrap().as_ptr();
        assert_eq!(memory.blocks(50).unwrap().as_ptr(), first);
        assert_eq!(memory.blocks.len(), 100);
        assert!(memory.blocks(MAX_BLOCKS + 1).is_err());
    }
}

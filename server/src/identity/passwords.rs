//! Password rules and password hashing (OWASP Password Storage, ASVS 2.x).
//!
//! The rules are NIST's (SP 800-63B), not composition rules: 8 to 128
//! characters counted as Unicode scalar values, nothing truncated, not one
//! of the 10,000 most common passwords (`data/common-passwords.txt`), and
//! none of the context-specific values an attacker tries first: nothing
//! but whitespace, one character repeated, the account's own email address
//! or its local part.
//!
//! Hashes are argon2id PHC strings with OWASP's first parameter set, so the
//! parameters travel with each hash: raising ours later makes
//! [`PasswordHasher::verify`] report `needs_rehash` for old hashes, and the
//! caller upgrades them at the next login.
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on a pool of
//! its own: `concurrency` OS threads (`argon2-0`, `argon2-1`, …), fed
//! through a queue. A burst of logins queues instead of starving the
//! runtime or exhausting memory, and a job whose caller has gone away by
//! the time a thread takes it is dropped, not computed.
//!
//! Each thread owns one argon2 memory buffer of [`M_COST`] KiB, allocated
//! at its first job and reused for every hash and verification after (a
//! stored hash with a larger memory cost gets a temporary buffer for that
//! one call). So hashing holds at most `concurrency` × 19 MiB, only once
//! logins needed that many threads, and that does not grow: a fresh 19 MiB buffer per login, as
//! before, was kept by glibc's per-thread arenas, and the server grew to
//! ~660 MB after a few bursts (BENCHMARKS.md).
//!
//! On Linux the hashing threads run [`HASHING_NICE`] nice levels below the
//! rest of the server, capped at 19, so at the lowest priority unless the
//! server itself runs at a negative nice (`setpriority` on each thread's
//! id). Whenever the runtime's threads and a hash both want a core, the
//! runtime wins, and a burst of logins no longer multiplies the latency of
//! every other request. The trade-off: when the CPU is saturated, logins
//! are what slows down — they get the CPU the requests leave them — rather
//! than every request. Nice 10 protected requests less under contention
//! and logins hardly finished sooner (BENCHMARKS.md).
//! Elsewhere the threads keep the process's priority.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, LazyLock, Mutex, PoisonError, mpsc},
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{
        self,
        phc::{Output, ParamsString, Salt},
    },
};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OnceCell, oneshot};

use crate::infra::observe;

/// The shortest password we accept, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password we accept, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// argon2id memory cost in KiB (OWASP: m=19456 KiB, t=2, p=1).
pub const M_COST: u32 = 19_456;
/// argon2id iterations.
pub const T_COST: u32 = 2;
/// argon2id lanes.
pub const P_COST: u32 = 1;
/// Hash output length in bytes.
const OUTPUT_LEN: usize = 32;

/// Ceilings on the parameters of a stored hash we are asked to verify: a
/// corrupt or planted row must not make a login allocate gigabytes or spin
/// for minutes. Far above any OWASP set (the strongest uses 46 MiB).
const MAX_STORED_M_COST: u32 = 256 * 1024;
const MAX_STORED_T_COST: u32 = 16;
const MAX_STORED_P_COST: u32 = 8;

/// The common passwords, each with its rank (0: the most common).
static COMMON_PASSWORDS: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .enumerate()
        .map(|(rank, password)| (password, rank))
        .collect()
});

/// Where a lower-case `candidate` ranks among the common passwords (0: the
/// most common), if it is one; secret strength estimates use it too.
pub(crate) fn common_password_rank(candidate: &str) -> Option<usize> {
    COMMON_PASSWORDS.get(candidate).copied()
}

/// Why a new password is refused; the message completes "The password …".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordRejection {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("must be at least 8 characters")]
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("must be at most 128 characters")]
    TooLong,
    /// In the common-password list, ignoring case.
    #[error("is one of the most common passwords")]
    Common,
    /// Nothing but whitespace.
    #[error("must not be only whitespace")]
    Blank,
    /// One character, repeated.
    #[error("must not be one character repeated")]
    Repeated,
    /// The account's email address, or its local part, in any case.
    #[error("must not be or contain the account's email address or the part before its @")]
    ContainsEmail,
}

/// The shortest local part (before the `@`) that a password may not
/// contain: shorter ones (`jo@…`) are refused only as the whole password,
/// or every password with those letters in it would be.
const MIN_LOCAL_PART_CHARS: usize = 3;

/// Checks a new password for the account `email` (normalized): its length
/// in Unicode scalar values (chars), no composition rules, no truncation;
/// refused when it is only whitespace, one character repeated, in the
/// shipped common-password list (lower-cased), or is or contains the email
/// address or its local part (ignoring case).
pub fn check_password(password: &str, email: &str) -> Result<(), PasswordRejection> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordRejection::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRejection::TooLong);
    }
    if password.chars().all(char::is_whitespace) {
        return Err(PasswordRejection::Blank);
    }
    let mut rest = password.chars();
    if let Some(first) = rest.next()
        && rest.all(|c| c == first)
    {
        return Err(PasswordRejection::Repeated);
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS.contains_key(lowered.as_str()) {
        return Err(PasswordRejection::Common);
    }
    let email = email.trim().to_lowercase();
    let local = email
        .split_once('@')
        .map_or(email.as_str(), |(local, _)| local);
    let contains_local = local.chars().count() >= MIN_LOCAL_PART_CHARS && lowered.contains(local);
    let is_local = !local.is_empty() && lowered.trim() == local;
    if (!email.is_empty() && lowered.contains(&email)) || contains_local || is_local {
        return Err(PasswordRejection::ContainsEmail);
    }
    Ok(())
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Not the password.
    Mismatch,
    /// The password; `needs_rehash` when the stored hash is weaker than what
    /// we make now, so the caller should store [`PasswordHasher::hash`] of it.
    Verified {
        /// The stored hash's algorithm or parameters are below ours.
        needs_rehash: bool,
    },
}

/// Why hashing or verifying could not be done (as opposed to a mismatch).
#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    /// The stored hash is not an argon2 PHC string with salt and output.
    #[error("stored password hash is malformed")]
    Malformed,
    /// The stored hash asks for more memory or time than we will spend.
    #[error("stored password hash parameters are beyond our limits")]
    TooCostly,
    /// argon2 itself failed (for example, the OS random generator).
    #[error("password hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
    /// The hashing thread panicked, or no hashing thread is running.
    #[error("password hashing worker panicked or was cancelled")]
    Worker,
}

/// How many nice levels the hashing threads run below the thread that
/// starts them (capped at 19, the lowest priority): out of the runtime's
/// way whenever both want a core. See the module docs and BENCHMARKS.md for
/// why this value rather than 10.
pub const HASHING_NICE: i32 = 19;

/// Work for a hashing thread, given that thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

/// Hashes and verifies passwords with argon2id, at most `concurrency` at
/// once, on threads of its own. Clones share the threads, which end when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, made with our parameters on first use.
    dummy: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    /// argon2id m=19456 KiB, t=2, p=1 (OWASP), at most `concurrency` (at
    /// least 1) hashes at once: starts that many hashing threads, each with
    /// its own 19 MiB of argon2 memory.
    pub fn new(concurrency: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..concurrency.max(1) {
            let queue = Arc::clone(&queue);
            let started = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&queue));
            if let Err(error) = started {
                // With no thread at all, the queue's receiver is dropped
                // and every call fails with `Worker` instead of waiting.
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self {
            jobs,
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordHashError> {
        let password = password.to_owned();
        self.run(move |memory| hash_into(memory, password.as_bytes()))
            .await?
    }

    /// Checks `password` against the stored PHC string `phc` (the output is
    /// compared in constant time). `needs_rehash` says the stored hash's
    /// algorithm or parameters are below ours.
    pub async fn verify(
        &self,
        password: &str,
        phc: &str,
    ) -> Result<Verification, PasswordHashError> {
        let stored = PasswordHash::new(phc).map_err(|_| PasswordHashError::Malformed)?;
        let algorithm =
            Algorithm::new(stored.algorithm.as_str()).map_err(|_| PasswordHashError::Malformed)?;
        let params = Params::try_from(&stored).map_err(|_| PasswordHashError::Malformed)?;
        let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
            return Err(PasswordHashError::Malformed);
        };
        let version = match stored.version {
            None => Version::V0x10,
            Some(version) => {
                Version::try_from(version).map_err(|_| PasswordHashError::Malformed)?
            }
        };
        if params.m_cost() > MAX_STORED_M_COST
            || params.t_cost() > MAX_STORED_T_COST
            || params.p_cost() > MAX_STORED_P_COST
        {
            return Err(PasswordHashError::TooCostly);
        }
        let needs_rehash = algorithm != Algorithm::Argon2id
            || version != Version::V0x13
            || params.m_cost() < M_COST
            || params.t_cost() < T_COST
            || params.output_len().is_some_and(|len| len < OUTPUT_LEN);

        let password = password.to_owned();
        let argon2 = Argon2::new(algorithm, version, params);
        self.run(move |memory| {
            let mut computed = [0u8; Output::MAX_LENGTH];
            let computed = computed
                .get_mut(..expected.len())
                .ok_or(PasswordHashError::Malformed)?;
            compute(&argon2, memory, password.as_bytes(), &salt, computed)?;
            Ok(if bool::from(computed.ct_eq(expected.as_bytes())) {
                Verification::Verified { needs_rehash }
            } else {
                Verification::Mismatch
            })
        })
        .await?
    }

    /// Verifies `password` against a fixed dummy hash (made once, lazily,
    /// with our parameters) and returns false: a login for an unknown email
    /// costs the same argon2 work as one for a real account.
    pub async fn verify_dummy(&self, password: &str) -> bool {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let unguessable = crate::identity::secrets::random_token(32);
                self.hash(&unguessable).await
            })
            .await;
        match dummy {
            Ok(dummy) => {
                let _ = self.verify(password, dummy).await;
            }
            Err(error) => tracing::error!(%error, "cannot make the dummy password hash"),
        }
        false
    }

    /// Queues `job` for the next free hashing thread and waits for its
    /// result. If this future is dropped before a thread takes the job, the
    /// job is skipped; once taken, it runs to the end (argon2 cannot be
    /// interrupted), and the thread is busy until then.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, PasswordHashError> {
        let (reply, result) = oneshot::channel();
        // Counted as waiting until a thread takes it, then timed.
        let queued = observe::HashQueue::join();
        self.jobs
            .send(Box::new(move |memory| {
                if reply.is_closed() {
                    return;
                }
                let _timer = queued.started();
                let _ = reply.send(job(memory));
            }))
            .map_err(|_| PasswordHashError::Worker)?;
        observe::password_hash(result)
            .await
            .map_err(|_| PasswordHashError::Worker)
    }
}

/// A hashing thread: lowers its priority, then runs jobs from `queue`, all
/// in one argon2 buffer allocated at the first, until every
/// [`PasswordHasher`] clone is gone.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    // Allocated at the first job, so a big host's many idle hashing threads
    // hold nothing until logins need them.
    let mut memory = Vec::new();
    loop {
        // The lock is held only while waiting: one idle thread waits for
        // the next job, the others for the lock.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        // A panicking job drops its reply (the caller gets `Worker`), and
        // the thread lives on for the next one.
        if memory.is_empty() {
            memory = vec![Block::default(); M_COST as usize];
        }
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
    }
}

/// Puts the calling thread [`HASHING_NICE`] nice levels below where it is
/// (at most 19). A failure is logged once and otherwise ignored: hashing at
/// normal priority still works.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use rustix::{process, thread};
    static WARNED: std::sync::Once = std::sync::Once::new();
    let tid = thread::gettid();
    let lowered = process::getpriority_process(Some(tid)).and_then(|nice| {
        process::setpriority_process(Some(tid), nice.saturating_add(HASHING_NICE).min(19))
    });
    if let Err(error) = lowered {
        WARNED.call_once(|| {
            tracing::warn!(
                %error,
                "cannot lower the priority of the password hashing threads; \
                 logins may slow down other requests"
            );
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Hashes `password` with our parameters and a fresh 16-byte salt in
/// `memory`; returns the PHC string.
fn hash_into(memory: &mut [Block], password: &[u8]) -> Result<String, PasswordHashError> {
    let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|_| PasswordHashError::Hashing(password_hash::Error::RngFailure))?;
    let argon2 = argon2id();
    let mut output = [0u8; OUTPUT_LEN];
    compute(&argon2, memory, password, &salt, &mut output)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(hashing)?,
        salt: Some(Salt::new(&salt).map_err(hashing)?),
        hash: Some(Output::new(&output).map_err(hashing)?),
    };
    Ok(phc.to_string())
}

/// argon2 of `password` and `salt` into `output`, in `memory` when the
/// parameters fit in it, else in a buffer allocated for this call.
fn compute(
    argon2: &Argon2<'_>,
    memory: &mut [Block],
    password: &[u8],
    salt: &[u8],
    output: &mut [u8],
) -> Result<(), PasswordHashError> {
    let blocks = argon2.params().block_count();
    let result = match memory.get_mut(..blocks) {
        Some(memory) => argon2.hash_password_into_with_memory(password, salt, output, memory),
        None => argon2.hash_password_into_with_memory(
            password,
            salt,
            output,
            vec![Block::default(); blocks],
        ),
    };
    result.map_err(|error| PasswordHashError::Hashing(error.into()))
}

fn hashing(error: impl Into<password_hash::Error>) -> PasswordHashError {
    PasswordHashError::Hashing(error.into())
}

/// The hasher for new hashes: argon2id v0x13 with our parameters.
fn argon2id() -> Argon2<'static> {
    let params =
        Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests;

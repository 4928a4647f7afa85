//! Password rules and password hashing (OWASP Password Storage, ASVS 2.x).
//!
//! The rules are NIST's, not composition rules: 8 to 128 characters counted
//! as Unicode scalar values, nothing truncated, and not one of the 10,000
//! most common passwords (`data/common-passwords.txt`).
//!
//! Hashes are argon2id PHC strings with OWASP's first parameter set, so the
//! parameters travel with each hash: raising ours later makes
//! [`PasswordHasher::verify`] report `needs_rehash` for old hashes, and the
//! caller upgrades them at the next login. Hashing is deliberately slow and
//! memory-hungry, so it runs on tokio's blocking pool, at most `concurrency`
//! at once — a burst of logins queues instead of starving the runtime or
//! exhausting memory.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
use tokio::sync::{OnceCell, Semaphore};

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

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

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
}

/// Checks a new password: its length in Unicode scalar values (chars), no
/// composition rules, no truncation; refused when its lower-cased form is in
/// the shipped common-password list.
pub fn check_password(password: &str) -> Result<(), PasswordRejection> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordRejection::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRejection::TooLong);
    }
    if COMMON_PASSWORDS.contains(password.to_lowercase().as_str()) {
        return Err(PasswordRejection::Common);
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
    /// The blocking worker panicked or was cancelled.
    #[error("password hashing worker panicked or was cancelled")]
    Worker,
}

/// Hashes and verifies passwords with argon2id, at most `concurrency` at once.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password, made with our parameters on first use.
    dummy: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    /// argon2id m=19456 KiB, t=2, p=1 (OWASP), at most `concurrency` (at
    /// least 1) hashes at once, each on tokio's blocking pool.
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordHashError> {
        let password = password.to_owned();
        self.run(move || {
            argon2id()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(PasswordHashError::Hashing)
        })
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
        if stored.salt.is_none() || stored.hash.is_none() {
            return Err(PasswordHashError::Malformed);
        }
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
        self.run(
            move || match Argon2::default().verify_password(password.as_bytes(), &stored) {
                Ok(()) => Ok(Verification::Verified { needs_rehash }),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(Verification::Mismatch),
                Err(error) => Err(PasswordHashError::Hashing(error)),
            },
        )
        .await?
    }

    /// Verifies `password` against a fixed dummy hash (made once, lazily,
    /// with our parameters) and returns false: a login for an unknown email
    /// costs the same argon2 work as one for a real account.
    pub async fn verify_dummy(&self, password: &str) -> bool {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let unguessable = crate::tokens::random_token(32);
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

    /// Runs `job` on the blocking pool once a permit is free. The permit
    /// moves into the job, so even when the caller gives up waiting, the cap
    /// holds until the work really ends.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordHashError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordHashError::Worker)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|_| PasswordHashError::Worker)
    }
}

/// The hasher for new hashes: argon2id v0x13 with our parameters.
fn argon2id() -> Argon2<'static> {
    let params =
        Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHasher as _, PasswordVerifier as _, Version,
};

use super::*;

const OURS: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

/// The account the rules are checked for.
const EMAIL: &str = "grace.hopper@example.com";

/// A PHC string made with `params` and `algorithm`, cheaply.
fn hash_with(password: &str, algorithm: Algorithm, params: Params) -> String {
    Argon2::new(algorithm, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

// Rules.

#[test]
fn fewer_than_eight_characters_is_too_short() {
    for password in [
        "",
        "a",
        "1234567",
        "kq7#vLp",
        "ééééééé",
        "日本語パスワー",
        "🔒🔒🔒🔒🔒🔒🔒",
    ] {
        assert_eq!(
            check_password(password, EMAIL),
            Err(PasswordRejection::TooShort),
            "{password}"
        );
    }
    // Counted in characters, not bytes: 7 characters are 28 bytes here.
    assert!("🔒🔒🔒🔒🔒🔒🔒".len() >= 8);
}

#[test]
fn eight_to_128_characters_are_accepted() {
    for password in [
        "kq7#vLp2".to_owned(),
        "ééééééé€".to_owned(),
        "日本語のパスワード".to_owned(),
        "correct horse battery staple".to_owned(),
        "xy".repeat(64),
        "éa".repeat(64),
        "🔒🔑".repeat(64),
    ] {
        assert_eq!(check_password(&password, EMAIL), Ok(()), "{password}");
    }
}

#[test]
fn more_than_128_characters_is_too_long() {
    for password in [
        "x".repeat(129),
        "é".repeat(129),
        "🔒".repeat(129),
        "x".repeat(10_000),
    ] {
        assert_eq!(
            check_password(&password, EMAIL),
            Err(PasswordRejection::TooLong)
        );
    }
}

#[test]
fn common_passwords_are_refused_whatever_their_case() {
    for password in [
        "password1",
        "12345678",
        "iloveyou",
        "trustno1",
        "sunshine",
        "princess",
        "qwertyuiop",
        "football",
        "PASSWORD1",
        "ILoveYou",
        "TrustNo1",
        "QwertyUIOP",
    ] {
        assert_eq!(
            check_password(password, EMAIL),
            Err(PasswordRejection::Common),
            "{password}"
        );
    }
    // Too short is said first: that is what the user must fix.
    assert_eq!(
        check_password("123456", EMAIL),
        Err(PasswordRejection::TooShort)
    );
}

#[test]
fn blank_and_one_repeated_character_are_refused() {
    for password in [
        "        ",
        "\t\t\t\t\t\t\t\t",
        " \u{3000} \u{a0}    ",
        "\n \n \n \n ",
    ] {
        assert_eq!(
            check_password(password, EMAIL),
            Err(PasswordRejection::Blank),
            "{password:?}"
        );
    }
    for password in [
        "zzzzzzzz".to_owned(),
        "7".repeat(40),
        "é".repeat(128),
        "🔒".repeat(9),
    ] {
        assert_eq!(
            check_password(&password, EMAIL),
            Err(PasswordRejection::Repeated),
            "{password}"
        );
    }
    // Two characters are a (weak) choice, not a single key held down.
    assert_eq!(check_password("zzzzzzzy", EMAIL), Ok(()));
}

#[test]
fn the_accounts_email_and_its_local_part_are_refused_in_any_case() {
    for password in [
        "grace.hopper@example.com",
        "GRACE.HOPPER@EXAMPLE.COM",
        "my grace.hopper@example.com!",
        "grace.hopper",
        "Grace.Hopper1906",
        "  grace.hopper  ",
        "admiral GRACE.HOPPER",
    ] {
        assert_eq!(
            check_password(password, EMAIL),
            Err(PasswordRejection::ContainsEmail),
            "{password}"
        );
    }
    // Other people's addresses, and parts of the name, are the user's call.
    assert_eq!(check_password("grace and hopper", EMAIL), Ok(()));
    assert_eq!(check_password("ada.lovelace@example.com", EMAIL), Ok(()));
    // A short local part is refused as the password, not inside one.
    assert_eq!(
        check_password("jojojojo", "jojojojo@example.com"),
        Err(PasswordRejection::ContainsEmail)
    );
    assert_eq!(
        check_password("enjoy the jolly jog", "jo@example.com"),
        Ok(())
    );
    assert_eq!(
        check_password("jo@example.com", "jo@example.com"),
        Err(PasswordRejection::ContainsEmail)
    );
    // Messages complete "The password …", naming no value.
    assert_eq!(
        PasswordRejection::ContainsEmail.to_string(),
        "must not be or contain the account's email address or the part before its @"
    );
}

#[test]
fn the_common_list_is_loaded_whole() {
    let list = &*COMMON_PASSWORDS;
    assert_eq!(list.len(), 10_000);
    let usable = list
        .keys()
        .filter(|p| (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&p.chars().count()))
        .count();
    assert!(
        usable >= 1_000,
        "only {usable} entries of 8 to 128 characters"
    );
    for password in list.keys() {
        assert_eq!(*password, password.to_lowercase(), "not lower-case");
        assert_eq!(*password, password.trim(), "surrounding whitespace");
        assert!(!password.is_empty() && !password.starts_with('#'));
    }
    // The header is comments, not passwords.
    assert!(!list.keys().any(|p| p.contains("license")));
    assert_eq!(common_password_rank("123456"), Some(0), "most common first");
    assert!(common_password_rank("password").is_some_and(|rank| rank < 10));
}

// Hashing.

#[tokio::test]
async fn hashes_are_argon2id_phc_strings_with_our_parameters() {
    let hasher = PasswordHasher::new(2);
    let first = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    let second = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    assert!(first.starts_with(OURS), "{first}");
    assert_ne!(first, second, "each hash has its own salt");
    // 16-byte salt, 32-byte output.
    let parsed = PasswordHash::new(&first).unwrap();
    assert_eq!(parsed.salt.unwrap().len(), 16);
    assert_eq!(parsed.hash.unwrap().len(), 32);
}

#[tokio::test]
async fn the_right_password_verifies_and_others_do_not() {
    let hasher = PasswordHasher::new(2);
    let phc = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    assert_eq!(
        hasher.verify("kq7#vLp2-long-enough", &phc).await.unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
    for wrong in [
        "kq7#vLp2-long-enougH",
        "kq7#vLp2-long-enough ",
        "",
        "kq7#vLp2",
    ] {
        assert_eq!(
            hasher.verify(wrong, &phc).await.unwrap(),
            Verification::Mismatch,
            "{wrong}"
        );
    }
}

#[tokio::test]
async fn nothing_is_truncated() {
    // bcrypt reads 72 bytes; whatever replaces argon2 must not.
    let hasher = PasswordHasher::new(2);
    let common: String = "y".repeat(100);
    let a = format!("{common}-a");
    let b = format!("{common}-b");
    assert_eq!(
        (check_password(&a, EMAIL), check_password(&b, EMAIL)),
        (Ok(()), Ok(()))
    );
    let (hash_a, hash_b) = (
        hasher.hash(&a).await.unwrap(),
        hasher.hash(&b).await.unwrap(),
    );
    assert_eq!(
        hasher.verify(&a, &hash_a).await.unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
    assert_eq!(
        hasher.verify(&b, &hash_b).await.unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
    assert_eq!(
        hasher.verify(&a, &hash_b).await.unwrap(),
        Verification::Mismatch
    );
    assert_eq!(
        hasher.verify(&b, &hash_a).await.unwrap(),
        Verification::Mismatch
    );
    let multibyte = "é".repeat(127);
    let hash = hasher.hash(&format!("{multibyte}a")).await.unwrap();
    assert_eq!(
        hasher
            .verify(&format!("{multibyte}b"), &hash)
            .await
            .unwrap(),
        Verification::Mismatch
    );
}

#[tokio::test]
async fn weaker_hashes_verify_and_ask_to_be_rehashed() {
    let hasher = PasswordHasher::new(2);
    let weak = hash_with(
        "kq7#vLp2-old",
        Algorithm::Argon2id,
        Params::new(8192, 1, 1, None).unwrap(),
    );
    assert!(weak.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{weak}");
    assert_eq!(
        hasher.verify("kq7#vLp2-old", &weak).await.unwrap(),
        Verification::Verified { needs_rehash: true }
    );
    assert_eq!(
        hasher.verify("kq7#vLp2-new", &weak).await.unwrap(),
        Verification::Mismatch
    );

    for (algorithm, params) in [
        (
            Algorithm::Argon2id,
            Params::new(M_COST, 1, 1, None).unwrap(),
        ),
        (
            Algorithm::Argon2id,
            Params::new(M_COST / 2, T_COST, 1, None).unwrap(),
        ),
        (
            Algorithm::Argon2id,
            Params::new(M_COST, T_COST, 1, Some(16)).unwrap(),
        ),
        (
            Algorithm::Argon2i,
            Params::new(M_COST, T_COST, 1, None).unwrap(),
        ),
    ] {
        let phc = hash_with("kq7#vLp2-old", algorithm, params);
        assert_eq!(
            hasher.verify("kq7#vLp2-old", &phc).await.unwrap(),
            Verification::Verified { needs_rehash: true },
            "{phc}"
        );
    }
    // Stronger on every axis: kept.
    let stronger = hash_with(
        "kq7#vLp2-old",
        Algorithm::Argon2id,
        Params::new(M_COST + 1024, T_COST + 1, 1, None).unwrap(),
    );
    assert_eq!(
        hasher.verify("kq7#vLp2-old", &stronger).await.unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn malformed_stored_hashes_are_errors_not_panics() {
    let hasher = PasswordHasher::new(1);
    let good = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    let truncated = &good[..good.len() - 10];
    let without_output = good.rsplit_once('$').unwrap().0.to_owned();
    for phc in [
        "",
        "kq7#vLp2-long-enough",
        "$",
        "$$$$",
        "$argon2id",
        "$argon2id$v=19$m=19456,t=2,p=1",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
        "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=42$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$pbkdf2-sha256$29000$c2FsdA$aGFzaA",
        truncated,
        &without_output,
        &format!("{good}$extra"),
        &good.replace("$argon2id$", "$argon2x$"),
    ] {
        let result = hasher.verify("kq7#vLp2-long-enough", phc).await;
        assert!(
            matches!(
                result,
                Err(PasswordHashError::Malformed | PasswordHashError::Hashing(_))
            ),
            "{phc}: {result:?}"
        );
    }
}

#[tokio::test]
async fn stored_hashes_beyond_our_limits_are_not_computed() {
    let hasher = PasswordHasher::new(1);
    let good = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    for params in [
        "m=4194304,t=2,p=1",
        "m=19456,t=1000000,p=1",
        "m=19456,t=2,p=64",
    ] {
        let costly = good.replace("m=19456,t=2,p=1", params);
        let result = hasher.verify("kq7#vLp2-long-enough", &costly).await;
        assert!(
            matches!(result, Err(PasswordHashError::TooCostly)),
            "{params}: {result:?}"
        );
    }
}

#[tokio::test]
async fn the_dummy_verification_is_real_work_and_always_false() {
    let hasher = PasswordHasher::new(1);
    assert!(!hasher.verify_dummy("kq7#vLp2-long-enough").await);
    let dummy = hasher.dummy.get().expect("made on first use").clone();
    assert!(dummy.starts_with(OURS), "{dummy}");
    assert!(!hasher.verify_dummy("").await);
    assert_eq!(hasher.dummy.get(), Some(&dummy), "made once");
    // Clones share it.
    assert_eq!(hasher.clone().dummy.get(), Some(&dummy));
}

// The concurrency cap.

/// Two jobs submitted at once. Each records its start, waits until the
/// other has started too (or `patience` runs out), and records its end.
async fn overlap(hasher: &PasswordHasher, patience: Duration) -> Vec<&'static str> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let job = |events: Arc<Mutex<Vec<&'static str>>>| {
        move |_: &mut [Block]| {
            events.lock().unwrap().push("start");
            let deadline = std::time::Instant::now() + patience;
            while events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| **e == "start")
                .count()
                < 2
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            events.lock().unwrap().push("end");
        }
    };
    let (a, b) = tokio::join!(
        hasher.run(job(events.clone())),
        hasher.run(job(events.clone()))
    );
    a.unwrap();
    b.unwrap();
    events.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_concurrency_one_hashes_run_one_after_the_other() {
    // Uncapped, the second job would start while the first waits for it.
    let events = overlap(&PasswordHasher::new(1), Duration::from_millis(300)).await;
    assert_eq!(events, ["start", "end", "start", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_concurrency_two_they_run_together() {
    // The control for the test above: the same jobs do overlap when allowed
    // (the patience only bounds how long a broken cap takes to show).
    let events = overlap(&PasswordHasher::new(2), Duration::from_secs(10)).await;
    assert_eq!(events, ["start", "start", "end", "end"]);
}

#[tokio::test]
async fn concurrency_zero_still_hashes() {
    let hasher = PasswordHasher::new(0);
    assert!(
        hasher
            .hash("kq7#vLp2-long-enough")
            .await
            .unwrap()
            .starts_with(OURS)
    );
}

/// Occupies one hashing thread until the returned sender is dropped or
/// sent to; returns once the thread has taken the job.
async fn occupy(
    hasher: &PasswordHasher,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken_tx, taken) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let hasher = hasher.clone();
        async move {
            hasher
                .run(move |_| {
                    let _ = taken_tx.send(());
                    let _ = held.recv();
                })
                .await
                .unwrap();
        }
    });
    taken.await.unwrap();
    (release, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_and_verifying_go_through_the_cap() {
    let hasher = PasswordHasher::new(1);
    let started = std::time::Instant::now();
    let phc = hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    let one_hash = started.elapsed();
    // With the only thread taken, neither can run: after three times what
    // a hash takes, both still wait.
    let (release, holder) = occupy(&hasher).await;
    let hash = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash("kq7#vLp2-long-enough").await }
    });
    let verify = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.verify("kq7#vLp2-long-enough", &phc).await }
    });
    tokio::time::sleep(one_hash * 3).await;
    assert!(!hash.is_finished(), "hash ran without a free thread");
    assert!(!verify.is_finished(), "verify ran without a free thread");
    drop(release);
    holder.await.unwrap();
    assert!(hash.await.unwrap().unwrap().starts_with(OURS));
    assert_eq!(
        verify.await.unwrap().unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
}

// The pool.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_gave_up_is_skipped() {
    let hasher = PasswordHasher::new(1);
    let (release, holder) = occupy(&hasher).await;
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Queued behind the held thread, then given up on.
    let abandoned = hasher.run({
        let ran = ran.clone();
        move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(50), abandoned)
            .await
            .is_err()
    );
    drop(release);
    holder.await.unwrap();
    // Jobs run in order: once a later one has run, the abandoned one was
    // taken and skipped.
    hasher.run(|_| ()).await.unwrap();
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "computed anyway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_hash_does_not_leave_the_pool_stuck() {
    let hasher = PasswordHasher::new(1);
    // Given up on mid-way: the thread has taken it and is hashing.
    for patience in [Duration::from_millis(1), Duration::from_millis(10)] {
        let cancelled = hasher.hash("kq7#vLp2-long-enough");
        assert!(tokio::time::timeout(patience, cancelled).await.is_err());
    }
    let phc = tokio::time::timeout(Duration::from_secs(30), hasher.hash("kq7#vLp2-long-enough"))
        .await
        .expect("the pool is stuck")
        .unwrap();
    assert!(phc.starts_with(OURS), "{phc}");
}

#[tokio::test]
async fn a_panicking_job_fails_its_caller_and_not_the_thread() {
    let hasher = PasswordHasher::new(1);
    let result = hasher.run(|_| panic!("on purpose")).await;
    assert!(
        matches!(result, Err(PasswordHashError::Worker)),
        "{result:?}"
    );
    assert!(
        hasher
            .hash("kq7#vLp2-long-enough")
            .await
            .unwrap()
            .starts_with(OURS)
    );
}

#[tokio::test]
async fn each_thread_hashes_in_one_buffer_of_our_memory_cost() {
    let hasher = PasswordHasher::new(1);
    let buffer = |memory: &mut [Block]| (memory.as_ptr() as usize, memory.len());
    let first = hasher.run(buffer).await.unwrap();
    hasher.hash("kq7#vLp2-long-enough").await.unwrap();
    let second = hasher.run(buffer).await.unwrap();
    assert_eq!(first.1, M_COST as usize);
    assert_eq!(first, second, "the same buffer, not a new one");
}

#[tokio::test]
async fn a_stored_hash_costlier_than_our_buffer_still_verifies() {
    let hasher = PasswordHasher::new(1);
    for params in [
        Params::new(2 * M_COST, T_COST, 1, None).unwrap(),
        Params::new(M_COST + 8, T_COST, 2, Some(64)).unwrap(),
    ] {
        let phc = hash_with("kq7#vLp2-old", Algorithm::Argon2id, params);
        assert_eq!(
            hasher.verify("kq7#vLp2-old", &phc).await.unwrap(),
            Verification::Verified {
                needs_rehash: false
            },
            "{phc}"
        );
        assert_eq!(
            hasher.verify("kq7#vLp2-olD", &phc).await.unwrap(),
            Verification::Mismatch,
            "{phc}"
        );
    }
}

// Interoperability with the argon2 crate's own PHC code, both ways.

#[tokio::test]
async fn our_hashes_verify_with_the_argon2_crate() {
    let hasher = PasswordHasher::new(1);
    for password in ["kq7#vLp2-long-enough", &"é".repeat(128)] {
        let phc = hasher.hash(password).await.unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert_eq!(parsed.to_string(), phc, "canonical PHC string");
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .unwrap();
        assert_eq!(
            Argon2::default().verify_password(b"kq7#vLp2-wrong", &parsed),
            Err(argon2::password_hash::Error::PasswordInvalid)
        );
    }
}

#[tokio::test]
async fn the_argon2_crates_hashes_verify_with_ours() {
    let hasher = PasswordHasher::new(1);
    let theirs = argon2id()
        .hash_password(b"kq7#vLp2-long-enough")
        .unwrap()
        .to_string();
    assert!(theirs.starts_with(OURS), "{theirs}");
    assert_eq!(
        hasher
            .verify("kq7#vLp2-long-enough", &theirs)
            .await
            .unwrap(),
        Verification::Verified {
            needs_rehash: false
        }
    );
    assert_eq!(
        hasher
            .verify("kq7#vLp2-long-enougH", &theirs)
            .await
            .unwrap(),
        Verification::Mismatch
    );
    // Argon2i and v0x10 hashes, with the argon2 crate's defaults otherwise.
    for (algorithm, version) in [
        (Algorithm::Argon2i, Version::V0x13),
        (Algorithm::Argon2d, Version::V0x13),
        (Algorithm::Argon2id, Version::V0x10),
    ] {
        let phc = Argon2::new(
            algorithm,
            version,
            Params::new(M_COST, T_COST, 1, None).unwrap(),
        )
        .hash_password(b"kq7#vLp2-old")
        .unwrap()
        .to_string();
        assert_eq!(
            hasher.verify("kq7#vLp2-old", &phc).await.unwrap(),
            Verification::Verified { needs_rehash: true },
            "{phc}"
        );
        assert_eq!(
            hasher.verify("kq7#vLp2-new", &phc).await.unwrap(),
            Verification::Mismatch,
            "{phc}"
        );
    }
}

// Threads and their priority (Linux: read back from /proc).

/// Field `index` (1-based, as in proc(5)) of `/proc/self/task/<tid>/stat`.
#[cfg(target_os = "linux")]
fn task_stat_field(tid: i32, index: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // After "pid (comm)", which may hold spaces, field 3 comes first.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(index - 3)?.parse().ok()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn hashing_threads_are_named_and_run_below_the_process_priority() {
    let here = rustix::thread::gettid().as_raw_pid();
    // Threads inherit the nice value of the thread that starts them.
    let base = task_stat_field(here, 19).expect("our own nice value");
    let hasher = PasswordHasher::new(2);
    let (release, holder) = occupy(&hasher).await;
    // Two jobs at once: one thread is held, so this runs on the other.
    let other = hasher
        .run(|_| rustix::thread::gettid().as_raw_pid())
        .await
        .unwrap();
    drop(release);
    holder.await.unwrap();
    let mut tids = vec![other];
    for _ in 0..2 {
        tids.push(
            hasher
                .run(|_| rustix::thread::gettid().as_raw_pid())
                .await
                .unwrap(),
        );
    }
    tids.sort_unstable();
    tids.dedup();
    assert!(tids.len() <= 2 && !tids.contains(&here), "{tids:?}");
    let expected = (base + i64::from(HASHING_NICE)).min(19);
    assert!(expected > base || base == 19, "nice {base} cannot go lower");
    for tid in tids {
        let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert!(name.starts_with("argon2-"), "thread {tid} is {name:?}");
        assert_eq!(task_stat_field(tid, 19), Some(expected), "nice of {name:?}");
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_threads_end_with_the_last_hasher_clone() {
    let hasher = PasswordHasher::new(1);
    let tid = hasher
        .run(|_| rustix::thread::gettid().as_raw_pid())
        .await
        .unwrap();
    let alive = || std::path::Path::new(&format!("/proc/self/task/{tid}")).exists();
    let clone = hasher.clone();
    drop(hasher);
    assert!(clone.hash("kq7#vLp2-long-enough").await.is_ok());
    assert!(alive(), "ended while a clone remained");
    drop(clone);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(), "thread {tid} still runs");
}

//! How strong a configured secret is, for the production checks of
//! JWT_SECRET, APP_SECRET and SERVICE_KEYS: is it a known placeholder, and
//! how much of it is random?
//!
//! The estimate follows zxcvbn's idea, conservatively and in miniature: a
//! secret is cut into the cheapest sequence of pieces an attacker would
//! try, and the bits of the pieces add up. A piece is one of
//! - a character guessed blind: log2 of the alphabet the secret draws from
//!   (lower case 26, upper case 26, digits 10, ASCII symbols 33, anything
//!   else 100), so 32 random base64 characters are worth about 190 bits and
//!   32 hex digits about 165;
//! - one character repeated (`aaaa`), a run up or down the alphabet or the
//!   digits (`0123456789abcdef`, `zyx`), or a run along a keyboard row
//!   (`qwertyuiop`, `!@#$%`): a start and a length, a dozen bits;
//! - a stretch that already appeared earlier in the secret
//!   (`changemechangeme`): where and how long;
//! - a word of `data/common-words.txt` (the words of placeholders and
//!   phrases: `this`, `my`, `super`, `secret`, `key`, …) or of the 10,000
//!   common passwords, in any case and with the usual digit-for-letter
//!   swaps (`s3cr3t`): a few bits for the word, by its rank.
//!
//! Production wants at least [`MIN_SECRET_BITS`]. Random base64 of the
//! shortest length accepted (32 characters, `openssl rand -base64 24`)
//! clears it with 25 bits or more to spare (the least in 20,000 draws: 154
//! bits); 32 hex digits, only 128 random bits to start with, are refused
//! about once in 10,000 draws, when chance puts patterns in them.
//! `thisismysupersecretkey…` does not come close (57 bits). Phrases of
//! uncommon words can still pass: the estimate knows a few hundred words
//! and the common passwords, not a language.

use std::{collections::HashMap, sync::LazyLock};

/// The fewest estimated bits a production secret may carry.
pub const MIN_SECRET_BITS: f64 = 128.0;

/// Only the first this many characters are analysed: a longer secret is
/// judged by its start, which can only estimate it lower.
const MAX_ANALYSED_CHARS: usize = 256;

/// The longest word looked up.
const MAX_WORD_CHARS: usize = 24;

/// Marks of placeholder values, looked for in the secret lower-cased with
/// everything but letters and digits removed (`CHANGE_ME`, `change-me`):
/// the `.env.example` and README examples, and what tutorials print.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "changethis",
    "replaceme",
    "replacethis",
    "placeholder",
    "yoursecret",
    "yourkey",
    "secrethere",
    "keyhere",
    "insertsecret",
    "insecure",
    "notsecure",
    "donotuse",
    "dontuse",
    "notasecret",
    "example",
];

/// The commonest words of placeholders and phrases, by rank.
static WORDS: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    include_str!("../../../data/common-words.txt")
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .enumerate()
        .map(|(rank, word)| (word, rank))
        .collect()
});

/// Keyboard rows (US layout), unshifted and shifted.
const KEYBOARD_ROWS: &[&str] = &[
    "`1234567890-=",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "~!@#$%^&*()_+",
    "qwertyuiop{}|",
    "asdfghjkl:\"",
    "zxcvbnm<>?",
];

/// What is wrong with a secret for production, completing "JWT_SECRET …";
/// `None` when nothing is. Never quotes the secret.
pub fn weakness(secret: &str) -> Option<&'static str> {
    if is_placeholder(secret) {
        return Some("is a placeholder value");
    }
    if estimated_bits(secret) < MIN_SECRET_BITS {
        return Some(
            "is not random enough: sequences, keyboard runs, repeats and words make up most of it (under 128 bits by our estimate)",
        );
    }
    None
}

/// Whether the secret contains a mark of a placeholder value.
pub fn is_placeholder(secret: &str) -> bool {
    let squeezed: String = secret
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    PLACEHOLDERS.iter().any(|mark| squeezed.contains(mark))
}

/// A conservative estimate of the secret's entropy in bits (see the
/// module docs).
pub fn estimated_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().take(MAX_ANALYSED_CHARS).collect();
    let lower: Vec<char> = chars.iter().map(|c| lower(*c)).collect();
    let unleet: Vec<char> = lower.iter().map(|c| unleet(*c)).collect();
    let blind = alphabet_bits(&chars);
    let n = chars.len();
    // cheapest[i]: the fewest bits that make up the first i characters.
    let mut cheapest = vec![f64::INFINITY; n + 1];
    cheapest[0] = 0.0;
    for start in 0..n {
        let here = cheapest[start];
        let mut offer = |len: usize, bits: f64| {
            let end = start + len;
            if here + bits < cheapest[end] {
                cheapest[end] = here + bits;
            }
        };
        offer(1, blind);
        let rest = n - start;
        let repeated = run_length(&lower[start..], |a, b| a == b);
        // From three on: a double letter is too common in random data to
        // count as a pattern.
        for len in 3..=repeated {
            offer(len, blind + log2(len));
        }
        for step in [1, -1] {
            let run = run_length(&lower[start..], |a, b| {
                (b as i64) - (a as i64) == step && a.is_ascii_alphanumeric()
            });
            for len in 3..=run {
                offer(len, blind + log2(len) + 1.0);
            }
        }
        for len in 3..=keyboard_run(&lower[start..]) {
            // Which key of a row, which way, how long.
            offer(len, log2(47) + 1.0 + log2(len));
        }
        for len in 3..=earlier_copy(&lower, start) {
            offer(len, log2(start) + log2(len));
        }
        for len in 3..=rest.min(MAX_WORD_CHARS) {
            if let Some(bits) = word_bits(&chars[start..start + len], &lower, &unleet, start) {
                offer(len, bits);
            }
        }
    }
    cheapest[n]
}

/// log2 of the alphabet the secret's characters come from.
fn alphabet_bits(chars: &[char]) -> f64 {
    let has = |test: fn(&char) -> bool| chars.iter().any(test);
    let mut size = 0;
    if has(char::is_ascii_lowercase) {
        size += 26;
    }
    if has(char::is_ascii_uppercase) {
        size += 26;
    }
    if has(char::is_ascii_digit) {
        size += 10;
    }
    if has(|c| c.is_ascii_punctuation() || *c == ' ') {
        size += 33;
    }
    if has(|c| !c.is_ascii()) {
        size += 100;
    }
    log2(size.max(2))
}

/// How many characters from the first on each follow the one before
/// as `follows` says (at least 1 when not empty).
fn run_length(chars: &[char], follows: impl Fn(char, char) -> bool) -> usize {
    if chars.is_empty() {
        return 0;
    }
    1 + chars
        .windows(2)
        .take_while(|pair| follows(pair[0], pair[1]))
        .count()
}

/// The longest run from the first character along a keyboard row, either
/// way.
fn keyboard_run(chars: &[char]) -> usize {
    let mut longest = 0;
    for row in KEYBOARD_ROWS {
        let row: Vec<char> = row.chars().collect();
        for step in [1_isize, -1] {
            for (at, key) in row.iter().enumerate() {
                if *key != chars[0] {
                    continue;
                }
                let mut len = 1;
                let mut position = at as isize;
                while len < chars.len() {
                    position += step;
                    match usize::try_from(position).ok().and_then(|p| row.get(p)) {
                        Some(next) if *next == chars[len] => len += 1,
                        _ => break,
                    }
                }
                longest = longest.max(len);
            }
        }
    }
    longest
}

/// The longest stretch from `start` that repeats one starting earlier (it
/// may overlap its model, like LZ77: `abababab` is `ab` and a copy).
fn earlier_copy(chars: &[char], start: usize) -> usize {
    let mut longest = 0;
    for earlier in 0..start {
        let len = chars[start..]
            .iter()
            .zip(&chars[earlier..])
            .take_while(|(a, b)| a == b)
            .count();
        longest = longest.max(len);
    }
    longest
}

/// The bits of `original` (the secret's characters from `start`) as a
/// known word: its rank, a bit if it has capitals, a bit if it swaps digits
/// for letters. `None` when it is no word we know.
fn word_bits(original: &[char], lower: &[char], unleet: &[char], start: usize) -> Option<f64> {
    let len = original.len();
    // Words are made of letters: digit and symbol runs (dates, PINs) are
    // left to the runs above, or random data would keep finding "words"
    // in its digits. Swaps count only where letters outnumber them.
    let letters = original.iter().filter(|c| c.is_alphabetic()).count();
    if letters == 0 {
        return None;
    }
    let plain: String = lower[start..start + len].iter().collect();
    let swapped: String = unleet[start..start + len].iter().collect();
    let rank = |word: &str| {
        let common = WORDS.get(word).copied();
        // Short common passwords ("love", "1234") are in the word list or
        // are runs already; four characters and up are worth a look.
        let password = (word.chars().count() >= 4)
            .then(|| crate::identity::passwords::common_password_rank(word))
            .flatten();
        match (common, password) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let swaps = len - letters;
    let (rank, leet) = match rank(&plain) {
        Some(rank) => (rank, false),
        None if swapped != plain && letters >= swaps => (rank(&swapped)?, true),
        None => return None,
    };
    let capitals = original.iter().any(|c| c.is_uppercase());
    // At least 2 bits: even the commonest word is a choice among a few.
    Some(log2(rank + 1).max(2.0) + f64::from(u8::from(capitals)) + f64::from(u8::from(leet)))
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// The letter a digit or symbol stands in for (`s3cr3t`).
fn unleet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        '9' => 'g',
        other => other,
    }
}

fn log2(n: usize) -> f64 {
    (n.max(1) as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_characters_are_worth_their_alphabet() {
        let hex = "4a68814fc804a3cba8811a2023503868";
        let bits = estimated_bits(hex);
        assert!((140.0..=166.0).contains(&bits), "{bits}");
        let base64 = "YzwnDDVyRCzxzN+bdXTwV9X8qP6soRWb";
        let bits = estimated_bits(base64);
        assert!((180.0..=211.0).contains(&bits), "{bits}");
    }

    #[test]
    fn patterns_are_worth_little() {
        for (secret, most) in [
            ("0123456789abcdef0123456789abcdef", 40.0),
            ("abcdefghijklmnopqrstuvwxyz", 20.0),
            ("zyxwvutsrqponmlkjihgfedcba9876543210", 40.0),
            ("qwertyuiopasdfghjklzxcvbnm", 40.0),
            ("!@#$%^&*()", 20.0),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 20.0),
            ("thisismysupersecretkey", 60.0),
            ("ThisIsMySuperSecretKey", 70.0),
            ("th1s1smys3cr3tk3y", 70.0),
            ("passwordpasswordpasswordpassword", 30.0),
        ] {
            let bits = estimated_bits(secret);
            assert!(
                bits <= most,
                "{secret}: {bits} bits, expected at most {most}"
            );
        }
    }

    #[test]
    fn placeholders_are_seen_through_their_punctuation() {
        for secret in [
            "change-me-to-32-random-characters-or-more",
            "CHANGE_ME_PLEASE_0123456789",
            "your-secret-goes-here",
            "an.example.value",
        ] {
            assert!(is_placeholder(secret), "{secret}");
            assert_eq!(weakness(secret), Some("is a placeholder value"));
        }
        assert!(!is_placeholder(
            "rbnJ//z/YXw6VFvWEp4oCC0xPX1dFFyu1jYnacwxRIiw"
        ));
    }

    #[test]
    fn long_secrets_are_judged_by_their_start() {
        let long = "ab".repeat(10_000);
        assert!(estimated_bits(&long) < 20.0);
    }
}

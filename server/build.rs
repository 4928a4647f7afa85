//! `sqlx::migrate!` embeds the files of `migrations/` at compile time, but
//! stable Rust cannot tell Cargo to watch a directory from a macro: without
//! this, a newly added migration would not be embedded until something else
//! changed in the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!` embeds the
//! `migrations/` directory at compile time, and Cargo does not otherwise know it reads it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds the files of
//! `migrations/` at build time, and Cargo does not otherwise notice a new file there (sqlx's
//! documented build script, `sqlx migrate build-script`).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

//! Host build of the kernel module's pure balloon logic: the very files the module compiles
//! (`rust/balloon/`), included by path, so `cargo test` exercises the driver's own arithmetic.

#[path = "../../rust/balloon/mod.rs"]
#[allow(dead_code)]
mod balloon;

#[cfg(test)]
mod tests;

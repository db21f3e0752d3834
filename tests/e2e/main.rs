//! End-to-end tests: they run the real `plinth` binary, as a user would.

#[path = "../support/mod.rs"]
mod support;

mod score;

//! `plinth prepare`: compiles the scientific Python runtime into this machine's cache now (once per
//! machine), so that no first deploy of a scientific score.py, and no `plinth score`, waits for it.

use std::time::Instant;

use anyhow::Context;
use plinth_runtime::wasm::{ScienceRuntime, machine_cache_dir};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<()> {
    let dir = machine_cache_dir().context("no machine-wide cache folder: set PLINTH_MACHINE_CACHE (or HOME)")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let runtime = ScienceRuntime::get_announcing(Some(&dir), &|| {
        eprintln!(
            "compiling the scientific Python runtime (once per machine, about {} s on 2 cores)",
            plinth_runtime::wasm::COMPILE_SECS
        );
    })?;
    let how = match runtime.from_cache() {
        true => "already compiled".to_string(),
        false => format!("compiled in {:.0} s", started.elapsed().as_secs_f64()),
    };
    println!(
        "scientific Python runtime ready in {} ({how})",
        dir.join("science").display()
    );
    Ok(())
}

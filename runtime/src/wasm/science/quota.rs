//! A cap on what one interpreter may write into its private folder (its `/` and `/tmp`): the limits'
//! `tmp_bytes` (`scriptTmpMb`). A write that would pass it fails inside the script with ENOSPC, as a full
//! disk would, and the host's disk is left alone.
//!
//! The calls that make a folder grow (`fd_write`, `fd_pwrite`, `fd_allocate`, `path_open` creating,
//! `path_create_directory`, `path_symlink`, `path_link`) are linked in place of WASI's own: each asks
//! [`DiskQuota::admit`], then runs WASI's own function as WASI's linking would. The quota counts what it
//! admitted since it last measured the folder, so a write costs one addition; only when the sum would
//! pass the cap is the folder measured again (what truly lies on disk, every entry at least one block),
//! and the write refused if it still does not fit.

use std::path::{Path, PathBuf};

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1 as _};
use wasmtime_wasi::runtime::in_tokio;
use wiggle::GuestMemory;

use super::runtime::State;

const WASI: &str = "wasi_snapshot_preview1";
/// WASI's `errno::nospc`.
const NOSPC: i32 = 51;
/// What one new file, folder or link costs at least.
const ENTRY: u64 = 4096;
/// `oflags::creat`.
const O_CREAT: i32 = 1;

/// One interpreter's writes into its private folder.
pub(super) struct DiskQuota {
    root: PathBuf,
    cap: u64,
    /// The folder's size when last measured.
    measured: u64,
    /// What was admitted since.
    admitted: u64,
    /// Whether a write was refused since [`take_refused`](Self::take_refused) last asked.
    refused: bool,
}

impl DiskQuota {
    pub(super) fn new(root: &Path, cap: u64) -> DiskQuota {
        DiskQuota {
            root: root.to_path_buf(),
            cap,
            measured: 0,
            admitted: 0,
            refused: false,
        }
    }

    /// Whether `bytes` more may be written; if so, they are counted.
    fn admit(&mut self, bytes: u64) -> bool {
        if self.measured + self.admitted + bytes <= self.cap {
            self.admitted += bytes;
            return true;
        }
        self.measured = disk_usage(&self.root);
        self.admitted = 0;
        if self.measured + bytes <= self.cap {
            self.admitted = bytes;
            return true;
        }
        false
    }

    /// The cap in MiB if a write was refused since the last time this was asked.
    pub(super) fn take_refused(&mut self) -> Option<u64> {
        std::mem::take(&mut self.refused).then_some(self.cap >> 20)
    }
}

/// What `root` holds on disk: the blocks of every entry beneath it, each at least [`ENTRY`].
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += (meta.blocks() * 512).max(ENTRY);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Links the wrappers in place of WASI's own functions for the calls that make a folder grow.
pub(super) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, State>, fd: i32, iovs: i32, n: i32, out: i32| -> wasmtime::Result<i32> {
            if fd > 2 && !admit_iovecs(&mut c, iovs, n) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| in_tokio(p1::fd_write(cx, mem, fd, iovs, n, out)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |mut c: Caller<'_, State>, fd: i32, iovs: i32, n: i32, at: i64, out: i32| -> wasmtime::Result<i32> {
            if !admit_iovecs(&mut c, iovs, n) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| in_tokio(p1::fd_pwrite(cx, mem, fd, iovs, n, at, out)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_allocate",
        |mut c: Caller<'_, State>, fd: i32, at: i64, len: i64| -> wasmtime::Result<i32> {
            if !admit(&mut c, len.max(0) as u64) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| p1::fd_allocate(cx, mem, fd, at, len))
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_open",
        |mut c: Caller<'_, State>,
         dir: i32,
         dirflags: i32,
         path: i32,
         len: i32,
         oflags: i32,
         base: i64,
         inheriting: i64,
         fdflags: i32,
         out: i32|
         -> wasmtime::Result<i32> {
            if oflags & O_CREAT != 0 && !admit(&mut c, ENTRY) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| {
                in_tokio(p1::path_open(
                    cx, mem, dir, dirflags, path, len, oflags, base, inheriting, fdflags, out,
                ))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |mut c: Caller<'_, State>, dir: i32, path: i32, len: i32| -> wasmtime::Result<i32> {
            if !admit(&mut c, ENTRY) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| {
                in_tokio(p1::path_create_directory(cx, mem, dir, path, len))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |mut c: Caller<'_, State>, old: i32, old_len: i32, dir: i32, new: i32, new_len: i32| -> wasmtime::Result<i32> {
            if !admit(&mut c, ENTRY) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| {
                in_tokio(p1::path_symlink(cx, mem, old, old_len, dir, new, new_len))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_link",
        |mut c: Caller<'_, State>, a: i32, b: i32, d: i32, e: i32, f: i32, g: i32, h: i32| -> wasmtime::Result<i32> {
            if !admit(&mut c, ENTRY) {
                return Ok(NOSPC);
            }
            through(&mut c, |cx, mem| in_tokio(p1::path_link(cx, mem, a, b, d, e, f, g, h)))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs one of WASI's own functions on the calling instance's memory and the store's WASI context, as
/// WASI's own linking does.
fn through(
    c: &mut Caller<'_, State>,
    call: impl FnOnce(&mut WasiP1Ctx, &mut GuestMemory<'_>) -> wiggle::error::Result<i32>,
) -> wasmtime::Result<i32> {
    let fuel = c.as_context_mut().hostcall_fuel();
    let Some(Extern::Memory(memory)) = c.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let (data, state) = memory.data_and_store_mut(&mut *c);
    state.wasi.set_hostcall_fuel(fuel);
    call(&mut state.wasi, &mut GuestMemory::Unshared(data))
}

fn admit(c: &mut Caller<'_, State>, bytes: u64) -> bool {
    let disk = &mut c.data_mut().disk;
    let ok = disk.admit(bytes);
    if !ok {
        disk.refused = true;
    }
    ok
}

fn admit_iovecs(c: &mut Caller<'_, State>, iovs: i32, n: i32) -> bool {
    let bytes = iovec_bytes(c, iovs, n);
    admit(c, bytes)
}

/// The bytes a WASI `ciovec` array of `n` entries at `iovs` describes (0 when it cannot be read: the
/// WASI call itself then reports the fault).
fn iovec_bytes(c: &mut Caller<'_, State>, iovs: i32, n: i32) -> u64 {
    let Some(Extern::Memory(memory)) = c.get_export("memory") else {
        return 0;
    };
    let data = memory.data(&*c);
    let start = iovs as u32 as usize;
    let end = start
        .saturating_add((n as u32 as usize).saturating_mul(8))
        .min(data.len());
    data.get(start..end)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|iov| u64::from(u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_measures_again_before_refusing() {
        let dir = std::env::temp_dir().join(format!("plinth-quota-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut q = DiskQuota::new(&dir, 64 << 10);
        assert!(q.admit(32 << 10));
        assert!(q.admit(32 << 10));
        // Nothing was written: measuring again finds room.
        assert!(q.admit(60 << 10));
        std::fs::write(dir.join("f"), vec![1u8; 64 << 10]).unwrap();
        assert!(!q.admit(8 << 10), "the folder is full");
        std::fs::remove_file(dir.join("f")).unwrap();
        assert!(q.admit(8 << 10), "a removed file gives its room back");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

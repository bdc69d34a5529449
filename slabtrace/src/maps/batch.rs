//! Reading a per-CPU hash map many entries per system call (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6
//! and later), instead of two calls per entry (next key, then lookup) as aya's iterator does.
//! At 200,000 counter keys the per-entry reads were most of the daemon's CPU (`cargo xtask
//! bench --scale`).
//!
//! Like the per-entry walk, a batch read is not atomic: entries added or deleted meanwhile may
//! be missed or seen; the counters only grow, so the next read picks up what this one missed.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call; doubled when one hash bucket holds more (`ENOSPC`).
const FIRST_BATCH: u32 = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The kernel has no batch reads for this map (before 5.6, or another map type): read it
    /// entry by entry instead.
    #[error("batch lookups unsupported: {0}")]
    Unsupported(io::Error),
    /// The read failed.
    #[error("batch lookup failed: {0}")]
    Failed(io::Error),
}

/// Reads every entry of the per-CPU hash map `fd` with `K` keys and `V` values, `cpus` copies
/// of each value, calling `each` with the key and its per-CPU copies.
pub fn per_cpu_hash<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    cpus: usize,
    mut each: impl FnMut(K, &[V]),
) -> Result<(), BatchError> {
    // The kernel copies each CPU's value 8-byte aligned: other sizes are left to the
    // entry-by-entry read.
    if !size_of::<V>().is_multiple_of(8) || align_of::<V>() > 8 {
        return Err(BatchError::Unsupported(io::Error::other(
            "per-CPU values that are not a multiple of 8 bytes",
        )));
    }
    let mut count = FIRST_BATCH;
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<V> = Vec::new();
    let mut token = 0u32;
    let mut first = true;
    loop {
        let n = count as usize;
        // SAFETY: Pod types are plain data: all zeroes is a valid value.
        keys.resize_with(n, || unsafe { std::mem::zeroed() });
        // SAFETY: as above.
        values.resize_with(n * cpus, || unsafe { std::mem::zeroed() });
        let mut next = 0u32;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count,
            #[expect(clippy::cast_sign_loss, reason = "a valid descriptor is not negative")]
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and `count * cpus` values of
        // the map's sizes, and at two u32 batch tokens, all alive across the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(io::Error::last_os_error);
        let done = match error {
            None => false,
            // The last batch: what it holds is valid.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // One bucket holds more entries than asked for: ask for more.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && count < 1 << 20 => {
                count *= 2;
                continue;
            }
            // 524: ENOTSUPP, the kernel's own "not supported".
            Some(e)
                if first
                    && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) =>
            {
                return Err(BatchError::Unsupported(e));
            }
            Some(e) => return Err(BatchError::Failed(e)),
        };
        let filled = (attr.count as usize).min(n);
        for (i, key) in keys.iter().take(filled).enumerate() {
            each(*key, &values[i * cpus..(i + 1) * cpus]);
        }
        if done {
            return Ok(());
        }
        token = next;
        first = false;
    }
}

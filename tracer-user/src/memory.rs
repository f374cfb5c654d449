//! Reads the target's memory without stopping it or writing to it: single reads with pread on
//! /proc/PID/mem, and many small ranges at once with process_vm_readv (one system call for up to
//! 1024 ranges, which is what makes a snapshot of 100k goroutines affordable), falling back to
//! pread range by range when process_vm_readv is not allowed.
use std::fs::File;
use std::os::unix::fs::FileExt as _;

use anyhow::{Context as _, Result};

/// At most this many ranges per process_vm_readv call (the kernel's UIO_MAXIOV).
const MAX_IOV: usize = 1024;

pub(crate) struct Memory {
    pid: libc::pid_t,
    mem: File,
}

impl Memory {
    pub(crate) fn open(pid: u32) -> Result<Memory> {
        let path = format!("/proc/{pid}/mem");
        let mem = File::open(&path).with_context(|| {
            format!("cannot read {path} (run as root, or as the target's user with ptrace allowed)")
        })?;
        Ok(Memory {
            pid: pid as libc::pid_t,
            mem,
        })
    }

    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.mem.read_exact_at(buf, addr)
    }

    pub(crate) fn read_vec(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    pub(crate) fn read_u64(&self, addr: u64) -> std::io::Result<u64> {
        let mut buf = [0u8; 8];
        self.read(addr, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads many ranges into one buffer, each at the returned offset, or None where that range
    /// could not be read (unmapped, or the process is gone).
    pub(crate) fn read_ranges(&self, ranges: &[(u64, usize)]) -> (Vec<u8>, Vec<Option<usize>>) {
        let mut buf = Vec::new();
        let offsets = self.read_ranges_into(ranges, &mut buf);
        (buf, offsets)
    }

    /// [`Memory::read_ranges`] into `buf`, a buffer kept by the caller from one batch to the
    /// next: it only grows, and what the last batch left in it is overwritten, not zeroed
    /// again. Fresh buffers cost a 100k-goroutine read more than the copies themselves (page
    /// faults and zeroing: `perf`, issue 9). Offsets are into `buf`; bytes outside the ranges
    /// returned as read are stale.
    pub(crate) fn read_ranges_into(
        &self,
        ranges: &[(u64, usize)],
        buf: &mut Vec<u8>,
    ) -> Vec<Option<usize>> {
        let total: usize = ranges.iter().map(|r| r.1).sum();
        if buf.len() < total {
            buf.resize(total, 0);
        }
        let mut offsets = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for &(_, len) in ranges {
            offsets.push(at);
            at += len;
        }
        let mut ok = vec![false; ranges.len()];
        let mut next = 0;
        while next < ranges.len() {
            let end = (next + MAX_IOV).min(ranges.len());
            let done = self.vm_readv(&ranges[next..end], &offsets[next..end], buf);
            let Some(done) = done else {
                // process_vm_readv refused (seccomp, old kernel): plain preads from here on.
                for i in next..ranges.len() {
                    let (addr, len) = ranges[i];
                    ok[i] = self
                        .read(addr, &mut buf[offsets[i]..offsets[i] + len])
                        .is_ok();
                }
                break;
            };
            for flag in &mut ok[next..next + done] {
                *flag = true;
            }
            next += done;
            if next < end {
                // ranges[next] failed: try it alone, then go on after it.
                let (addr, len) = ranges[next];
                ok[next] = self
                    .read(addr, &mut buf[offsets[next]..offsets[next] + len])
                    .is_ok();
                next += 1;
            }
        }
        offsets
            .into_iter()
            .zip(ok)
            .map(|(offset, ok)| ok.then_some(offset))
            .collect()
    }

    /// Like [`Memory::read_ranges`], but ranges closer than `max_gap` bytes to each other are
    /// read as one (fewer, larger copies: gs sit side by side in their heap spans). A range
    /// whose merged block cannot be read is retried alone.
    pub(crate) fn read_coalesced(
        &self,
        ranges: &[(u64, usize)],
        max_gap: u64,
    ) -> (Vec<u8>, Vec<Option<usize>>) {
        let mut buf = Vec::new();
        let offsets = self.read_coalesced_into(ranges, max_gap, &mut buf);
        (buf, offsets)
    }

    /// [`Memory::read_coalesced`] into a buffer the caller keeps ([`Memory::read_ranges_into`]).
    pub(crate) fn read_coalesced_into(
        &self,
        ranges: &[(u64, usize)],
        max_gap: u64,
        buf: &mut Vec<u8>,
    ) -> Vec<Option<usize>> {
        const MAX_BLOCK: u64 = 1 << 20;
        let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].1 > 0).collect();
        order.sort_unstable_by_key(|&i| ranges[i].0);
        // Blocks of (start, end) and, per range, (block, offset in block).
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let mut place = vec![None; ranges.len()];
        for &i in &order {
            let (addr, len) = ranges[i];
            let end = addr.saturating_add(len as u64);
            match blocks.last_mut() {
                Some(block)
                    if addr <= block.1.saturating_add(max_gap)
                        && end.max(block.1) - block.0 <= MAX_BLOCK =>
                {
                    block.1 = block.1.max(end);
                }
                _ => blocks.push((addr, end)),
            }
            let block = blocks.len() - 1;
            place[i] = Some((block, addr - blocks[block].0));
        }
        let block_ranges: Vec<(u64, usize)> =
            blocks.iter().map(|&(s, e)| (s, (e - s) as usize)).collect();
        let block_at = self.read_ranges_into(&block_ranges, buf);
        let blocks_len: usize = block_ranges.iter().map(|r| r.1).sum();
        let mut offsets = vec![None; ranges.len()];
        let mut retry = Vec::new();
        for (i, place) in place.iter().enumerate() {
            match place {
                Some((block, offset)) => match block_at[*block] {
                    Some(at) => offsets[i] = Some(at + *offset as usize),
                    None => retry.push(i),
                },
                None if ranges[i].1 == 0 => offsets[i] = Some(0),
                None => {}
            }
        }
        if !retry.is_empty() {
            let alone: Vec<(u64, usize)> = retry.iter().map(|&i| ranges[i]).collect();
            let (more, more_at) = self.read_ranges(&alone);
            // After the blocks (the buffer may be longer than this batch's blocks: stale).
            let base = blocks_len;
            buf.truncate(base);
            buf.extend_from_slice(&more);
            for (&i, at) in retry.iter().zip(more_at) {
                offsets[i] = at.map(|at| base + at);
            }
        }
        offsets
    }

    /// How many of `ranges` (from the first) were read completely; None when the call is not
    /// available at all.
    fn vm_readv(
        &self,
        ranges: &[(u64, usize)],
        offsets: &[usize],
        buf: &mut [u8],
    ) -> Option<usize> {
        let local: Vec<libc::iovec> = ranges
            .iter()
            .zip(offsets)
            .map(|(&(_, len), &offset)| libc::iovec {
                iov_base: buf[offset..].as_mut_ptr().cast(),
                iov_len: len,
            })
            .collect();
        let remote: Vec<libc::iovec> = ranges
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: every local iovec points into `buf` at a distinct offset with its length in
        // bounds (offsets are the running sums of the lengths); remote addresses are only read
        // by the kernel in the target process.
        let read = unsafe {
            libc::process_vm_readv(
                self.pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if read < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                // The first range is unreadable: zero complete.
                Some(libc::EFAULT) => Some(0),
                _ => None,
            };
        }
        // Transfers are partial only at range boundaries.
        let mut left = read as usize;
        let mut done = 0;
        for &(_, len) in ranges {
            if left < len {
                break;
            }
            left -= len;
            done += 1;
        }
        Some(done)
    }
}

pub(crate) fn u64_at(buf: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        buf.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

pub(crate) fn u32_at(buf: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        buf.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_of_our_own_memory_and_flags_the_unreadable_ones() {
        let a = [1u8, 2, 3, 4];
        let b = 0x1122_3344_5566_7788u64.to_le_bytes();
        let memory = Memory::open(std::process::id()).unwrap();
        let ranges = [
            (a.as_ptr() as u64, 4),
            (8, 16), // the zero page is never mapped
            (b.as_ptr() as u64, 8),
        ];
        let (buf, offsets) = memory.read_ranges(&ranges);
        assert_eq!(offsets, vec![Some(0), None, Some(20)]);
        assert_eq!(&buf[0..4], &a);
        assert_eq!(u64_at(&buf, 20), Some(0x1122_3344_5566_7788));
        assert_eq!(
            memory.read_u64(b.as_ptr() as u64).unwrap(),
            0x1122_3344_5566_7788
        );
    }

    #[test]
    fn a_kept_buffer_is_reused_and_only_what_was_read_is_handed_on() {
        let a: Vec<u8> = (0..64).collect();
        let b: Vec<u8> = (100..164).collect();
        let memory = Memory::open(std::process::id()).unwrap();
        // Left long and full of stale bytes by an earlier batch.
        let mut buf = vec![0xee; 4096];
        let ranges = [
            (a.as_ptr() as u64 + 8, 16),
            (8, 16), // unmapped: retried alone, and flagged
            (b.as_ptr() as u64, 32),
            (a.as_ptr() as u64 + 40, 8), // merged with the first range's block
        ];
        let offsets = memory.read_coalesced_into(&ranges, 64, &mut buf);
        let got = |i: usize| offsets[i].map(|at| buf[at..at + ranges[i].1].to_vec());
        assert_eq!(got(0), Some(a[8..24].to_vec()));
        assert_eq!(got(1), None);
        assert_eq!(got(2), Some(b[..32].to_vec()));
        assert_eq!(got(3), Some(a[40..48].to_vec()));
        // The next batch, shorter, in the same buffer: its own bytes, not the last batch's.
        let offsets = memory.read_ranges_into(&[(b.as_ptr() as u64 + 32, 4)], &mut buf);
        let at = offsets[0].expect("readable");
        assert_eq!(&buf[at..at + 4], &b[32..36]);
    }
}

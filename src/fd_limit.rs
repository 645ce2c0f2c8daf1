//! The open-file limit (RLIMIT_NOFILE). Every running run holds a descriptor for its event socket, and
//! briefly more (an HTTP connection of the shared pool, a file the disk writer has open): 10,000 runs at
//! once need well beyond the usual soft limit of 1,024. The soft limit is raised to the hard one at start,
//! as servers do; when even the hard limit is too low for the batch, ohrun says so before it provisions
//! anything rather than failing runs one by one on EMFILE halfway through.

/// Descriptors the process holds whatever the batch (standard streams, the runtime's epoll and its
/// wakers, the batch's lock, rollups being written, a local agent-server's pipes), with room to spare.
const BASE: u64 = 64;

/// Raises the soft limit to the hard one; returns the limit now in force (`None` if it cannot be read).
pub fn raise() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
        Some(limit.rlim_cur)
    }
}

/// What `runs` at once need at least: one descriptor each for the whole run (its event socket) and a
/// quarter more for what runs hold for a moment (measured: under 1.1 per run at 10,000, BENCHMARKS.md).
pub fn needed(runs: usize) -> u64 {
    BASE + runs as u64 + (runs as u64).div_ceil(4)
}

/// Why `runs` at once cannot run under `limit`, if they cannot.
pub fn shortfall(runs: usize, limit: u64) -> Option<String> {
    let need = needed(runs);
    (need > limit).then(|| {
        format!(
            "{runs} runs at once need about {need} open files, and this process may open at most {limit} \
             (the hard limit of RLIMIT_NOFILE, `ulimit -Hn`)"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_limit_below_the_need_is_named_with_both() {
        assert!(super::shortfall(100, 1024).is_none());
        let why = super::shortfall(10_000, 1024).unwrap();
        assert!(why.contains("10000 runs") && why.contains("12564") && why.contains("1024"), "{why}");
    }
}

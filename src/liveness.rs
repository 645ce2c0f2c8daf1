//! Whether a process recorded earlier — a ledger's owner, a local agent-server — is still that very
//! process. A pid alone says little (pids are reused), so a [`Process`] is its pid, its start time and
//! the boot it ran in, read from procfs. Where procfs cannot be read (not mounted, masked, another OS)
//! only one answer is certain — no process has that pid at all — and everything else is
//! [`Liveness::Unknown`]: `gc` then treats the owner as alive, because removing the sandboxes of a
//! running ohrun is worse than leaving a dead one's for `--force-dead`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A process, told apart from a later one with the same pid by its start time (clock ticks after boot)
/// and the boot it ran in (start times begin again at every boot).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// 0: not known (procfs could not be read when it was recorded).
    pub start: u64,
    /// `sys/kernel/random/boot_id`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot: String,
}

/// What can be said about a recorded [`Process`] now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Its pid exists but whether it is the recorded process cannot be told; why.
    Unknown(String),
}

/// Where procfs is read: `/proc`, or the directory `OHRUN_PROCFS` names (a test hook). Only a real procfs
/// is read — anything else counts as no procfs at all —, so the hook can make `gc` more careful, never
/// less.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
    /// Why it cannot be read, if it cannot.
    unusable: Option<String>,
}

impl Procfs {
    pub fn system() -> Procfs {
        Procfs::at(std::env::var_os("OHRUN_PROCFS").map_or_else(|| PathBuf::from("/proc"), PathBuf::from))
    }

    pub fn at(root: PathBuf) -> Procfs {
        let unusable = not_procfs(&root);
        Procfs { root, unusable }
    }

    fn read(&self, path: &str) -> Result<String, String> {
        if let Some(why) = &self.unusable {
            return Err(why.clone());
        }
        let path = self.root.join(path);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    pub fn boot_id(&self) -> Option<String> {
        self.read("sys/kernel/random/boot_id").ok().map(|b| b.trim().to_string())
    }

    /// This process, as a ledger records its owner.
    pub fn me(&self) -> Process {
        let pid = std::process::id();
        Process {
            pid,
            start: self.start_time(pid).ok().flatten().unwrap_or(0),
            boot: self.boot_id().unwrap_or_default(),
        }
    }

    /// `pid` as it is now, if it runs and procfs can say when it started.
    pub fn process(&self, pid: u32) -> Option<Process> {
        Some(Process { pid, start: self.start_time(pid).ok()??, boot: self.boot_id().unwrap_or_default() })
    }

    /// Field 22 of `PID/stat`; Ok(None) when no such process runs (a zombie has exited: it only waits to be
    /// reaped). The command name (field 2) may hold spaces and parentheses, so fields are counted after
    /// its closing parenthesis.
    fn start_time(&self, pid: u32) -> Result<Option<u64>, String> {
        if exists(pid) != Some(true) {
            return Ok(None);
        }
        let stat = match self.read(&format!("{pid}/stat")) {
            Ok(stat) => stat,
            // It exited between the two looks.
            Err(_) if self.unusable.is_none() && exists(pid) == Some(false) => return Ok(None),
            Err(e) => return Err(e),
        };
        let rest = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
        let mut fields = rest.split_whitespace();
        let zombie = fields.next() == Some("Z");
        // After ")": state is field 3, so start time (22) is the 20th.
        let start = fields.nth(18).and_then(|s| s.parse().ok()).ok_or(format!("{pid}/stat is not as expected"))?;
        Ok((!zombie).then_some(start))
    }

    pub fn liveness(&self, p: &Process) -> Liveness {
        let start = match self.start_time(p.pid) {
            Ok(None) => return Liveness::Dead,
            Ok(Some(start)) => start,
            Err(why) => return Liveness::Unknown(format!("pid {} runs, but {why}", p.pid)),
        };
        let boot = self.boot_id().unwrap_or_default();
        if !p.boot.is_empty() && !boot.is_empty() && p.boot != boot {
            return Liveness::Dead; // recorded in an earlier boot: that process is gone with it
        }
        if p.start == 0 {
            return Liveness::Unknown(format!("the start time of pid {} was never recorded", p.pid));
        }
        if !p.boot.is_empty() && boot.is_empty() {
            return Liveness::Unknown(format!("the boot id cannot be read to check pid {}", p.pid));
        }
        if start == p.start { Liveness::Alive } else { Liveness::Dead }
    }

    /// The pids whose environment (as they were started) holds `entry` (`NAME=value`). Err when procfs
    /// cannot be read. Only the user's own processes are readable, which is all this is for.
    pub fn with_env(&self, entry: &[u8]) -> Result<Vec<u32>, String> {
        if let Some(why) = &self.unusable {
            return Err(why.clone());
        }
        let listing = std::fs::read_dir(&self.root).map_err(|e| format!("cannot list {}: {e}", self.root.display()))?;
        let pids = listing.flatten().filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok());
        Ok(pids
            .filter(|pid| {
                std::fs::read(self.root.join(format!("{pid}/environ")))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry))
            })
            .collect())
    }
}

/// Whether any process has this pid: Some(false) only when the kernel says there is none (ESRCH), which
/// needs no procfs. None for a pid no process can have (0, or beyond `pid_t`).
fn exists(pid: u32) -> Option<bool> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
    // SAFETY: signal 0 sends nothing; it only checks that the pid exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    Some(found || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

/// Why `root` is not a procfs to read, if it is not.
#[cfg(target_os = "linux")]
fn not_procfs(root: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
    let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return Some(format!("{} is not a procfs", root.display()));
    };
    // SAFETY: statfs writes into the zeroed struct it is given; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above: a valid out-pointer and a NUL-terminated path.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Some(format!("no procfs at {}: {}", root.display(), std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    let magic = stat.f_type as libc::c_long;
    (magic != PROC_SUPER_MAGIC).then(|| format!("{} is not a procfs", root.display()))
}

#[cfg(not(target_os = "linux"))]
fn not_procfs(_root: &Path) -> Option<String> {
    Some("this system has no procfs".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_or_boot_is_not() {
        let procfs = Procfs::system();
        let me = procfs.me();
        assert!(me.start > 0);
        assert_eq!(procfs.liveness(&me), Liveness::Alive);
        assert_eq!(procfs.liveness(&Process { start: me.start + 1, ..me.clone() }), Liveness::Dead);
        assert_eq!(procfs.liveness(&Process { boot: "another-boot".into(), ..me.clone() }), Liveness::Dead);
        assert!(procfs.process(u32::MAX).is_none());
        assert!(matches!(procfs.liveness(&Process { start: 0, ..me }), Liveness::Unknown(_)));
    }

    #[test]
    fn without_procfs_a_running_pid_is_unknown_and_a_missing_one_dead() {
        // A directory laid out like procfs, claiming this process started at a time it did not: it is no
        // procfs, so it is not read at all.
        let fake = tempfile::tempdir().unwrap();
        let me = Procfs::system().me();
        std::fs::create_dir(fake.path().join(me.pid.to_string())).unwrap();
        let stat = format!("{} (ohrun) S{}", me.pid, " 1".repeat(30));
        std::fs::write(fake.path().join(format!("{}/stat", me.pid)), stat).unwrap();
        for procfs in [Procfs::at(fake.path().into()), Procfs::at(fake.path().join("missing"))] {
            let Liveness::Unknown(why) = procfs.liveness(&Process { start: 1, ..me.clone() }) else {
                panic!("a running pid is not known to be dead without procfs")
            };
            assert!(why.contains(&format!("pid {} runs", me.pid)), "{why}");
            assert_eq!(
                procfs.liveness(&Process { pid: i32::MAX as u32, start: 1, boot: String::new() }),
                Liveness::Dead
            );
            assert!(procfs.with_env(b"A=b").is_err());
        }
    }
}

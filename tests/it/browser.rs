//! Headless Chromium for the report.html tests when none is on PATH: fetched privately, once per
//! machine, into the cargo target directory. Nothing is installed and nothing outside the target
//! directory changes: apt runs with a private configuration (its own package lists, download cache,
//! state and log directories; no locks; none of the system's update or dpkg hooks) and reads the system's
//! dpkg status only to leave out what is installed already. `apt-get install --download-only` resolves
//! Debian's `chromium` with its dependencies (no recommends), `dpkg-deb -x` unpacks the packages into
//! `private-chromium/root`, and the script `private-chromium/chromium` runs the browser with the unpacked
//! libraries on `LD_LIBRARY_PATH`.
//!
//! The fetch is file-locked (parallel test processes fetch once), built under a temporary name and
//! renamed only when complete and checked, and bounded by a timeout; a cached copy is checked again
//! (`chromium --version`) by every test process before it is used, and fetched anew if it no longer runs.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole fetch (waiting for another process's included): apt update, download, unpacking.
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
/// One `chromium --version`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium fetched privately into the target dir (fetched now if it is not there yet or no longer
/// runs): the path of a script that runs it. The error says what failed.
pub fn private_chromium() -> Result<PathBuf, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).map_err(|e| format!("creating {}: {e}", base.display()))?;
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let _lock = lock(&base.join("private-chromium.lock"), deadline)?;
    let done = base.join("private-chromium");
    let browser = done.join("chromium");
    if done.exists() {
        match check(&browser) {
            Ok(_) => return Ok(browser),
            Err(e) => {
                eprintln!("the private Chromium in {} no longer runs ({e}); fetching it again", done.display());
                std::fs::remove_dir_all(&done).map_err(|e| format!("removing {}: {e}", done.display()))?;
            }
        }
    }
    for tool in ["apt-get", "dpkg-deb"] {
        if !on_path(tool) {
            return Err(format!("no Chromium on PATH, and no {tool} to fetch Debian's privately"));
        }
    }
    // A fetch that died half-way (killed, timed out) left this behind; it is never used.
    let partial = base.join("private-chromium.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| format!("removing {}: {e}", partial.display()))?;
    }
    eprintln!("no Chromium on PATH: fetching Debian's privately into {} (once; nothing is installed)", done.display());
    let started = Instant::now();
    let version = fetch(&partial, deadline).and_then(|()| check(&partial.join("chromium"))).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&partial);
    })?;
    std::fs::rename(&partial, &done)
        .map_err(|e| format!("renaming {} to {}: {e}", partial.display(), done.display()))?;
    eprintln!("fetched {} in {:.0?}", version.trim(), started.elapsed());
    Ok(browser)
}

/// Downloads chromium and the dependencies the system lacks into `dir/apt`, unpacks them into `dir/root`
/// and writes the `dir/chromium` script; the downloads are deleted afterwards.
fn fetch(dir: &Path, deadline: Instant) -> Result<(), String> {
    let apt = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "state", "log", "tmp"] {
        std::fs::create_dir_all(apt.join(sub)).map_err(|e| format!("creating {}: {e}", apt.join(sub).display()))?;
    }
    // Read after /etc/apt/apt.conf.d, so it overrides it: every directory apt writes is ours, no locks
    // are taken (the system's dpkg status is only read), and hooks that would act on the system (e.g.
    // appstream's cache refresh after an update) are cleared.
    let a = apt.display();
    let conf = format!(
        "#clear APT::Update::Pre-Invoke;\n#clear APT::Update::Post-Invoke;\n#clear APT::Update::Post-Invoke-Success;\n\
         #clear DPkg::Pre-Invoke;\n#clear DPkg::Post-Invoke;\n#clear DPkg::Pre-Install-Pkgs;\n\
         Dir::State \"{a}/state\";\nDir::State::Lists \"{a}/lists\";\nDir::State::status \"/var/lib/dpkg/status\";\n\
         Dir::Cache \"{a}/cache\";\nDir::Cache::archives \"{a}/cache/archives\";\nDir::Log \"{a}/log\";\n\
         Debug::NoLocking \"true\";\nAcquire::Languages \"none\";\n\
         Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n"
    );
    let conf_file = apt.join("apt.conf");
    std::fs::write(&conf_file, conf).map_err(|e| format!("writing {}: {e}", conf_file.display()))?;
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-c").arg(&conf_file).arg("-q").args(args).env("TMPDIR", apt.join("tmp"));
        cmd
    };
    // An unreachable source is only a warning to `apt-get update`; it explains a failed download.
    let (_, update_warnings) = run(&mut apt_get(&["update"]), deadline)?;
    run(&mut apt_get(&["-y", "--no-install-recommends", "install", "--download-only", "chromium"]), deadline)
        .map_err(|e| format!("{e}\n(`apt-get update` said:\n{})", update_warnings.trim()))?;

    let mut debs: Vec<PathBuf> = std::fs::read_dir(apt.join("cache/archives"))
        .map_err(|e| format!("listing the downloads: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    if !debs.iter().any(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("chromium_"))) {
        return Err(format!("apt-get downloaded no chromium package (it downloaded {debs:?})"));
    }
    let root = dir.join("root");
    for deb in &debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root), deadline)?;
    }
    let names: Vec<String> = debs.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
    std::fs::write(dir.join("packages.txt"), names.join("\n") + "\n")
        .map_err(|e| format!("writing packages.txt: {e}"))?;
    std::fs::remove_dir_all(&apt).map_err(|e| format!("removing {}: {e}", apt.display()))?;

    // Every unpacked directory of shared libraries: usr/lib/x86_64-linux-gnu, its pulseaudio/ (where
    // libpulse's RUNPATH looks, in /usr) and a GTK plugin directory (unused, harmless); not Chromium's own,
    // which it finds by itself.
    let mut lib_dirs = Vec::new();
    for top in ["usr/lib", "lib"] {
        library_dirs(&root.join(top), &root.join("usr/lib/chromium"), &mut lib_dirs);
    }
    let lib_path: Vec<String> =
        lib_dirs.iter().map(|d| format!("$here/{}", d.strip_prefix(dir).unwrap().display())).collect();
    let binary = root.join("usr/lib/chromium/chromium");
    if !binary.is_file() {
        return Err(format!("the chromium package has no {}", binary.display()));
    }
    // Debian's /usr/bin/chromium passes --disable-dev-shm-usage when /dev/shm is small (containers); always
    // passing it is harmless. The tests add --no-sandbox themselves.
    let script = format!(
        "#!/bin/sh\n# Debian's Chromium, unpacked privately by ohrun's tests (tests/it/browser.rs); nothing is installed.\n\
         here=$(cd \"$(dirname \"$0\")\" && pwd)\n\
         LD_LIBRARY_PATH=\"{}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\nexport LD_LIBRARY_PATH\n\
         exec \"$here/root/usr/lib/chromium/chromium\" --disable-dev-shm-usage \"$@\"\n",
        lib_path.join(":")
    );
    let wrapper = dir.join("chromium");
    std::fs::write(&wrapper, script).map_err(|e| format!("writing {}: {e}", wrapper.display()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Directories under `dir` (but not `skip`) that hold shared libraries (`lib*.so*`).
fn library_dirs(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    if dir == skip {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut has_libs = false;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match entry.file_type() {
            Ok(t) if t.is_dir() => subdirs.push(entry.path()),
            Ok(_) if name.starts_with("lib") && name.contains(".so") => has_libs = true,
            _ => {}
        }
    }
    if has_libs {
        out.push(dir.to_path_buf());
    }
    subdirs.sort();
    for sub in subdirs {
        library_dirs(&sub, skip, out);
    }
}

/// `browser --version`: its output, or why it does not run.
fn check(browser: &Path) -> Result<String, String> {
    let (out, _) = run(Command::new(browser).arg("--version"), Instant::now() + CHECK_TIMEOUT)?;
    if out.contains("Chromium") { Ok(out) } else { Err(format!("`{} --version` printed {out:?}", browser.display())) }
}

/// Takes an exclusive lock on `file` (released when the file is closed, also when the process dies),
/// waiting at most until `deadline` for another test process's fetch.
fn lock(file: &Path, deadline: Instant) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if Instant::now() > deadline {
            return Err(format!("another test process held {} beyond {FETCH_TIMEOUT:?}", file.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(f)
}

fn on_path(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(name).is_file())
}

/// Runs `cmd` to the end, killing its process group at `deadline`: its stdout and stderr, or an error
/// with the command and the end of its output.
fn run(cmd: &mut Command, deadline: Instant) -> Result<(String, String), String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                // SAFETY: a signal to the process group of our own child.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    // The last lines of its output, where apt and the browser say what went wrong.
    let said = {
        let lines: Vec<&str> = out.lines().chain(err.lines()).filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(20)..].iter().map(|l| format!("\n{l}")).collect::<String>()
    };
    match status {
        Some(s) if s.success() => Ok((out, err)),
        Some(s) => Err(format!("{shown} failed ({s}){said}")),
        None => Err(format!("{shown} was killed: it did not finish in time{said}")),
    }
}

//! Where ohrun keeps things on the user's machine, read from the environment in one place: its cache
//! (the agent-server venv, image builds) and its state (the sandbox ledger).

use std::path::PathBuf;

/// ohrun's cache: `$OHRUN_HOME`, else the user cache dir (`~/.cache/ohrun`).
pub fn home() -> PathBuf {
    std::env::var_os("OHRUN_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("ohrun")))
        .unwrap_or_else(|| PathBuf::from(".ohrun"))
}

/// `$OHRUN_STATE_DIR`, else the user's state directory (`~/.local/state/ohrun`), else `state/` in ohrun's
/// cache; absolute, because container labels name ledger files by path.
pub fn state_dir() -> PathBuf {
    let dir = std::env::var_os("OHRUN_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::state_dir().map(|d| d.join("ohrun")))
        .unwrap_or_else(|| home().join("state"));
    std::path::absolute(&dir).unwrap_or(dir)
}

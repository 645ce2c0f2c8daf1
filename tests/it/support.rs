//! A small builder around the real `ohrun` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Ohrun {
    cmd: Command,
}

impl Ohrun {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ohrun"));
        cmd.current_dir(repo_root()).env("NO_COLOR", "1").env_remove("RUST_LOG");
        Ohrun { cmd }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn output(mut self) -> Result {
        let out: Output = self.cmd.output().expect("ohrun runs");
        Result {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Result {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Result {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

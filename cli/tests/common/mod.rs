//! What the CLI tests share: running the real binary, and reading what a
//! running host prints.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};

use crossbeam_channel::Receiver;

pub mod componentize;
pub mod lattice;

/// The `liveswap` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_liveswap");

/// How a run of the binary ended.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A process stopped with the test, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on the loopback interface now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run `liveswap ARGS` (in `cwd`, if given) to its end.
pub fn liveswap_in(cwd: Option<&Path>, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let o = cmd.args(args).output().expect("liveswap runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `liveswap ctl --connect SOCK ARGS` (in `cwd`, if given).
pub fn ctl_in(cwd: Option<&Path>, sock: &Path, args: &[&str]) -> Out {
    let sock = sock.to_str().expect("a UTF-8 socket path");
    let mut all = vec!["ctl", "--connect", sock];
    all.extend_from_slice(args);
    liveswap_in(cwd, &all)
}

/// The lines `child` prints on its stdout (piped), as they come.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

//! The CLI and the shell as an operator meets them: the real binary, a
//! real host on a Unix socket, the shell in a real terminal (tmux; Debian:
//! `apt-get install tmux`, which `.ci/run` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Out, lines_of};

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("liveswap-op-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn liveswap_in(cwd: &Path, args: &[&str]) -> Out {
    common::liveswap_in(Some(cwd), args)
}

fn ctl_in(cwd: &Path, sock: &Path, args: &[&str]) -> Out {
    common::ctl_in(Some(cwd), sock, args)
}

/// `liveswap run SCRIPT --admin SOCK`, from `cwd`, serving after its script.
struct Host(Child);

impl Host {
    fn start(cwd: &Path, script: &Path, sock: &Path) -> Host {
        let mut child = Command::new(BIN)
            .current_dir(cwd)
            .arg("run")
            .arg(script)
            .arg("--admin")
            .arg(sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("liveswap runs");
        let rx = lines_of(&mut child);
        let until = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match rx.recv_deadline(until) {
                Ok(l) if l.starts_with("-- script done") => break,
                Ok(l) => seen.push(l),
                Err(_) => panic!("the host did not finish its script: {seen:?}"),
            }
        }
        std::thread::spawn(move || for _ in rx {});
        Host(child)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pair_script(dir: &Path, sink: &str, tick_ms: u32) -> PathBuf {
    let p = dir.join("pair.ls");
    std::fs::write(
        &p,
        format!(
            "Load SINK {sink}\nLoad T {} config \"timer t {tick_ms}; tick-send SINK\"\n",
            liveswap_guests::PROBE_V1
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_closed_pipe_ends_ctl_quietly_and_history_has_readable_times() {
    let dir = temp_dir("pipe");
    let sock = dir.join("admin.sock");
    let _host = Host::start(
        &dir,
        &pair_script(&dir, liveswap_guests::PROBE_V1, 2),
        &sock,
    );
    // More History than a pipe holds, so that `head` closes it mid-way.
    let many = dir.join("many.ls");
    std::fs::write(&many, "SetTimer 10s\n".repeat(3000)).unwrap();
    let o = ctl_in(&dir, &sock, &["-f", many.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);

    let sh = |cmd: &str| {
        let o = Command::new("timeout")
            .args(["60", "bash", "-c", &format!("set -o pipefail; {cmd}")])
            .env("SOCK", &sock)
            .env("BIN", BIN)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = sh(r#""$BIN" ctl --connect "$SOCK" History | head -1"#);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // `[2026-12-02T20:15:03.123Z] <origin> ...`
    let line = out.lines().next().unwrap_or("");
    let stamp = line.get(1..25).unwrap_or("");
    assert!(
        line.starts_with('[')
            && stamp.len() == 24
            && stamp.as_bytes()[4] == b'-'
            && stamp.contains('T')
            && stamp.ends_with('Z'),
        "{line}"
    );
    let (code, out, err) = sh(r#""$BIN" ctl --connect "$SOCK" Watch | head -3"#);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    // The host serves on.
    let o = ctl_in(&dir, &sock, &["Status"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("SINK"), "{}", o.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn paths_are_relative_to_the_script_or_to_the_client() {
    let dir = temp_dir("paths");
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(liveswap_guests::PROBE_V1, scripts.join("probe_v1.wasm")).unwrap();
    std::fs::copy(liveswap_guests::PROBE_V2, scripts.join("probe_v2.wasm")).unwrap();
    let sock = dir.join("admin.sock");
    // The script names its module relative to itself; the host runs in
    // another folder.
    let script = pair_script(&scripts, "probe_v1.wasm", 5);
    let elsewhere = temp_dir("paths-cwd");
    let _host = Host::start(&elsewhere, &script, &sock);

    // ctl, from the scripts folder: relative to where it runs.
    let o = ctl_in(&scripts, &sock, &["Replace", "SINK", "probe_v2.wasm"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains(&format!("{}", scripts.join("probe_v2.wasm").display())),
        "{}",
        o.stdout
    );
    // A file that is not there is named as the host looked for it.
    let o = ctl_in(&dir, &sock, &["Load", "X", "nope.wasm"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains(&format!("{}", dir.join("nope.wasm").display())),
        "{}",
        o.stderr
    );
    // $GUESTS, as in scripts.
    let o = ctl_in(&dir, &sock, &["Load", "B", "$GUESTS/probe_v1.wasm"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // ctl -f: relative to the script.
    let steps = scripts.join("steps.ls");
    std::fs::write(&steps, "Unload B\nLoad C probe_v1.wasm\n").unwrap();
    let o = ctl_in(&elsewhere, &sock, &["-f", steps.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = ctl_in(&dir, &sock, &["Status"]);
    assert!(
        o.stdout.lines().any(|l| l.starts_with("C ")),
        "{}",
        o.stdout
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn a_second_host_is_told_what_to_do_and_a_missing_script_is_heard_of_first() {
    let dir = temp_dir("second");
    let sock = dir.join("admin.sock");
    let script = pair_script(&dir, liveswap_guests::PROBE_V1, 50);
    let _host = Host::start(&dir, &script, &sock);
    let o = liveswap_in(
        &dir,
        &[
            "run",
            script.to_str().unwrap(),
            "--once",
            "--admin",
            sock.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("another liveswap host")
            && o.stderr.contains("--admin")
            && o.stderr.contains("--no-admin"),
        "{}",
        o.stderr
    );
    let o = liveswap_in(
        &dir,
        &["run", "missing.ls", "--admin", sock.to_str().unwrap()],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("missing.ls: cannot read script")
            && !o.stderr.contains("another liveswap host"),
        "{}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_codes_flags_and_generated_docs() {
    let dir = temp_dir("codes");
    let gone = dir.join("nobody.sock");
    let gone = gone.to_str().unwrap();
    let o = liveswap_in(&dir, &["shell", "--connect", gone]);
    assert_eq!(
        o.code, 4,
        "the shell, like ctl, says unreachable: {}",
        o.stderr
    );
    assert!(o.stderr.contains("cannot reach a host"), "{}", o.stderr);
    assert_eq!(
        liveswap_in(&dir, &["ctl", "--connect", gone, "Status"]).code,
        4
    );

    let o = liveswap_in(&dir, &["run", "x.ls", "--memory-limit", "64"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("did you mean 64MiB?"), "{}", o.stderr);
    let o = liveswap_in(&dir, &["shel"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("similar subcommand") && o.stderr.contains("'shell'"),
        "{}",
        o.stderr
    );

    let o = liveswap_in(&dir, &["completions", "bash"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("_liveswap()"),
        "{}",
        &o.stdout[..200.min(o.stdout.len())]
    );
    let o = liveswap_in(&dir, &["man"]);
    assert!(
        o.stdout.starts_with(".ie") || o.stdout.contains(".TH liveswap"),
        "{}",
        &o.stdout[..200.min(o.stdout.len())]
    );
    let o = liveswap_in(&dir, &["man", "--out", dir.join("man").to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(dir.join("man/liveswap-run.1").exists());

    // Logs into a file carry no colour codes; a 1GB size is a size.
    let script = dir.join("one.ls");
    std::fs::write(&script, format!("Load A {}\n", liveswap_guests::PROBE_V1)).unwrap();
    let o = Command::new(BIN)
        .current_dir(&dir)
        .env("LIVESWAP_LOG", "info")
        .args(["run", script.to_str().unwrap(), "--once", "--no-admin"])
        .args(["--http", "127.0.0.1:0", "--queued-bytes", "1GB"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("dashboard on http://"), "{err}");
    assert!(
        !err.contains('\u{1b}') && !o.stdout.contains(&0x1b),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shell in a real terminal.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(cwd: &Path, home: &Path, cmd: &str) -> Tmux {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is missing: apt-get install tmux"
        );
        let name = format!("liveswap-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "160",
                "-y",
                "50",
                "-c",
            ])
            .arg(cwd)
            .arg(format!("env HOME={} {cmd}", home.display()))
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux did not start");
        Tmux { name }
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-J", "-S", "-500", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Wait until the screen satisfies `f`.
    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < until, "never saw {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the last line is an empty prompt.
    fn prompt(&self) -> String {
        self.wait("a prompt", |s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim_end)
                == Some("liveswap>")
        })
    }

    /// Send `keys` that end a command line and wait for the next prompt:
    /// one more prompt line than before, so a screen captured before the
    /// keys arrived is never taken for the answer.
    fn run(&self, keys: &[&str]) -> String {
        let prompts = |s: &str| s.lines().filter(|l| l.starts_with("liveswap>")).count();
        let before = prompts(&self.screen());
        self.keys(keys);
        self.wait("the next prompt", |s| {
            prompts(s) > before
                && s.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::trim_end)
                    == Some("liveswap>")
        })
    }

    fn clear(&self) {
        let _ = Command::new("tmux")
            .args(["clear-history", "-t", &self.name])
            .status();
        self.keys(&["C-l"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_shell_completes_by_position_stops_watch_and_keeps_history_as_it_goes() {
    let dir = temp_dir("shell");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(liveswap_guests::PROBE_V2, dir.join("probe_v2.wasm")).unwrap();
    std::fs::write(dir.join("probe_v2.d"), "a build's dependency file").unwrap();
    let sock = dir.join("admin.sock");
    let host = Host::start(
        &dir,
        &pair_script(&dir, liveswap_guests::PROBE_V1, 100),
        &sock,
    );
    // The shell's exit status is shown on the screen when it ends (the
    // wrapper lives through Ctrl-C: the shell is the one it is meant for).
    let t = Tmux::start(
        &dir,
        &home,
        &format!(
            "sh -c 'trap true INT; {BIN} shell --connect {}; echo EXIT=$?; sleep 60'",
            sock.display()
        ),
    );
    t.prompt();

    let s = t.run(&["Help Replace", "Enter"]);
    assert!(
        s.contains("Replace <name> <file.wasm>") && !s.contains("Load <name>"),
        "{s}"
    );
    let s = t.run(&["Replce SINK x.wasm", "Enter"]);
    assert!(s.contains("did you mean `Replace`?"), "{s}");
    // In the history file already, while the shell runs.
    let history = std::fs::read_to_string(home.join(".liveswap_history")).unwrap_or_default();
    assert!(history.contains("Replce SINK x.wasm"), "{history}");

    // Tab by position: a module name, then a .wasm file (probe_v2.d is
    // not offered, or Tab would stop at `probe_v2.`).
    t.clear();
    t.keys(&["Replace S", "Tab"]);
    t.wait("the name completed", |s| {
        s.contains("liveswap> Replace SINK")
    });
    t.keys(&["pro", "Tab"]);
    t.wait("the file completed", |s| {
        s.contains("liveswap> Replace SINK probe_v2.wasm")
    });
    let s = t.run(&["Enter"]);
    assert!(s.contains("COMMITTED: Replace SINK"), "{s}");

    // Watch stops on Enter, on Ctrl-D and on Ctrl-C; the shell lives on.
    for stop in ["Enter", "C-d", "C-c"] {
        t.clear();
        t.keys(&["Watch", "Enter"]);
        t.wait("events", |s| s.contains("got ") && s.contains("from T"));
        t.run(&[stop]);
    }
    let s = t.run(&["Status", "Enter"]);
    assert!(s.contains("SINK") && s.contains("v2.0"), "{s}");
    // The host goes away: the shell says so and ends with 4, as ctl would.
    drop(host);
    t.keys(&["Status", "Enter"]);
    let s = t.wait("the shell's end", |s| s.contains("EXIT="));
    assert!(
        s.contains("the host went away") && s.contains("EXIT=4"),
        "{s}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

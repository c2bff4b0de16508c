//! Batch files: the command language read from a file, one command a
//! line, run in order. An error names the file, the line and the command.
//!
//! Scripts may use variables: `$NAME` or `${NAME}`, and `${NAME:-default}`
//! for one with a default. The CLI sets `GUESTS` (the folder of the built
//! guest modules) and any `--var NAME=VALUE`.

use std::collections::BTreeMap;
use std::path::Path;

/// Script variables.
#[derive(Clone, Debug, Default)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    /// Set a variable.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.to_string(), value.into());
        self
    }

    /// Replace every variable in `line`; an unset one without a default is
    /// an error.
    pub fn expand(&self, line: &str) -> Result<String, String> {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, default, used) = if let Some(body) = rest.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| "unterminated `${` in the line".to_string())?;
                let inner = &body[..end];
                match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d), end + 2),
                    None => (inner, None, end + 2),
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], None, end)
            };
            if name.is_empty() {
                out.push('$');
                continue;
            }
            match (self.0.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("variable `{name}` is not set")),
            }
            rest = &rest[used..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

use liveswap::{CommandError, Runtime};

use crate::{Reply, execute_line};

/// A script line that failed.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: `{command}`: {source}")]
pub struct ScriptError {
    /// The script.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The line as written.
    pub command: String,
    /// What went wrong.
    pub source: Box<CommandError>,
}

/// How a script ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScriptEnd {
    /// Every line ran.
    Finished,
    /// A `Quit` line was reached.
    Quit,
}

/// Run `text` (read from `file`, for messages) line by line, variables
/// expanded from `vars` first and relative paths made absolute against
/// `base` (the script's folder; none: left to the host's working
/// directory); `on_reply` sees every
/// command's reply. Upgrade outcomes (committed, aborted, refused) are
/// replies, not errors: a script goes on after an aborted transaction.
pub fn run(
    rt: &Runtime,
    file: &str,
    text: &str,
    (vars, base): (&Vars, Option<&Path>),
    mut on_reply: impl FnMut(usize, &str, &Reply),
) -> Result<ScriptEnd, ScriptError> {
    for (i, raw) in text.lines().enumerate() {
        let line = vars.expand(raw).map_err(|e| ScriptError {
            file: file.to_string(),
            line: i + 1,
            command: raw.trim().to_string(),
            source: Box::new(CommandError::Parse(e)),
        })?;
        let line = match base {
            Some(b) => crate::command::resolve_paths(&line, b),
            None => line,
        };
        let origin = format!("{file}:{}", i + 1);
        match execute_line(rt, &line, &origin) {
            Ok(None) => {}
            Ok(Some(reply)) => {
                on_reply(i + 1, line.trim(), &reply);
                if matches!(reply, Reply::Quit) {
                    return Ok(ScriptEnd::Quit);
                }
            }
            Err(source) => {
                return Err(ScriptError {
                    file: file.to_string(),
                    line: i + 1,
                    command: line.trim().to_string(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(ScriptEnd::Finished)
}

/// Read and run a script file; relative paths in it are relative to its
/// folder.
pub fn run_file(
    rt: &Runtime,
    path: &Path,
    vars: &Vars,
    on_reply: impl FnMut(usize, &str, &Reply),
) -> anyhow::Result<ScriptEnd> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read script: {e}", path.display()))?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let shown = path.display().to_string();
    Ok(run(rt, &shown, &text, (vars, base.as_deref()), on_reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_with_defaults() {
        let mut v = Vars::default();
        v.set("GUESTS", "/g");
        assert_eq!(
            v.expand("Load A $GUESTS/a.wasm").unwrap(),
            "Load A /g/a.wasm"
        );
        assert_eq!(v.expand("Wait ${SETTLE:-3s} x").unwrap(), "Wait 3s x");
        assert_eq!(v.expand("Load A ${GUESTS}/b").unwrap(), "Load A /g/b");
        assert!(
            v.expand("Load $NOPE")
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert_eq!(v.expand("cost $ 5").unwrap(), "cost $ 5");
    }
}

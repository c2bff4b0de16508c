//! Batch files: the command language read from a file, one command a
//! line, run in order. An error names the file, the line and the command.

use std::path::Path;

use crate::error::CommandError;
use crate::runtime::{Reply, Runtime};

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

/// Run `text` (read from `file`, for messages) line by line. `expand` is
/// applied to each line first (e.g. `$GUESTS`); `on_reply` sees every
/// command's reply. Upgrade outcomes (committed, aborted, refused) are
/// replies, not errors: a script goes on after an aborted transaction.
pub fn run(
    rt: &Runtime,
    file: &str,
    text: &str,
    expand: impl Fn(&str) -> String,
    mut on_reply: impl FnMut(usize, &str, &Reply),
) -> Result<ScriptEnd, ScriptError> {
    for (i, raw) in text.lines().enumerate() {
        let line = expand(raw);
        let origin = format!("{file}:{}", i + 1);
        match rt.execute_line(&line, &origin) {
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

/// Read and run a script file.
pub fn run_file(
    rt: &Runtime,
    path: &Path,
    expand: impl Fn(&str) -> String,
    on_reply: impl FnMut(usize, &str, &Reply),
) -> anyhow::Result<ScriptEnd> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read script: {e}", path.display()))?;
    Ok(run(
        rt,
        &path.display().to_string(),
        &text,
        expand,
        on_reply,
    )?)
}

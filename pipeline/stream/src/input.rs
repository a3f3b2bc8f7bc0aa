//! Reading a JSONL file line by line with a progress bar.
//!
//! One reusable buffer, so memory follows the longest line, not the file.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// A JSONL file being read.
#[derive(Debug)]
pub struct JsonlReader {
    reader: BufReader<File>,
    line: Vec<u8>,
    line_no: u64,
    bar: ProgressBar,
}

/// A progress bar on stderr when it is a terminal and `enabled`; hidden otherwise.
pub fn progress_bar(total_bytes: u64, enabled: bool, what: &str) -> ProgressBar {
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{elapsed_precise}}] {{wide_bar}} {{bytes}}/{{total_bytes}} ({{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

impl JsonlReader {
    pub fn open(path: &Path, progress: bool, what: &str) -> std::io::Result<JsonlReader> {
        let file = File::open(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JsonlReader {
            reader: BufReader::with_capacity(1 << 20, file),
            line: Vec::with_capacity(4096),
            line_no: 0,
            bar: progress_bar(size, progress, what),
        })
    }

    /// The next line (1-based number, bytes without the newline), or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            self.bar.finish_and_clear();
            return Ok(None);
        }
        self.line_no += 1;
        self.bar.inc(n as u64);
        if self.line_no % 8192 == 0 {
            self.bar.set_message(format!("{} lines", self.line_no));
        }
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.line_no, line)))
    }
}

//! Offline replay: a JSONL file of events through the whole pipeline.
//!
//! The file is streamed line by line (memory does not grow with its size);
//! each valid event gets exactly one verdict line in `--out`, in input order;
//! each invalid line goes to the dead-letter file with its line number, its
//! raw bytes and the reason, and the replay goes on.

use crate::input::JsonlReader;
use crate::process::Processor;
use haechi_engine::eval::{ActionCounts, EvalReport, Evaluation};
use haechi_engine::{decode_listing, DeadLetter, Limits, SourcePos};
use haechi_store::StoreError;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a replay stopped. Bad events never stop it: only I/O and the store can.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to replay and where the results go.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub input: PathBuf,
    pub out: PathBuf,
    pub dead_letter: PathBuf,
    pub limits: Limits,
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Threads: 1 runs everything in order on one; with more, decoding and
    /// analysis (pure) run ahead on `workers - 1` threads while this one
    /// applies history and writes verdicts in input order. The verdicts are
    /// the same byte for byte.
    pub workers: usize,
}

/// Lines per unit of work handed from the analysis threads to the writer.
/// With [`CHUNKS_AHEAD`], bounds the analyses in memory (~2 KB each): 4 ×
/// 1,024 held 10–25 MB more peak RSS on the 400k day set at the same speed.
const CHUNK: usize = 256;
/// Chunks analyzed ahead of the writer, at most (plus one being filled).
const CHUNKS_AHEAD: usize = 2;

/// A line after decoding and analysis.
enum Item {
    /// Line number, the event and its analysis, and how long analysis took.
    Valid(
        u64,
        Box<(haechi_engine::Listing, haechi_engine::Analysis)>,
        Duration,
    ),
    Invalid(u64, Vec<u8>, haechi_engine::InvalidEvent),
}

impl ReplayConfig {
    /// The dead-letter file used when none is given: next to the verdicts.
    pub fn default_dead_letter(out: &Path) -> PathBuf {
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "verdicts".into());
        out.with_file_name(format!("{stem}.dead-letters.jsonl"))
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub input: PathBuf,
    pub out: PathBuf,
    pub dead_letter: PathBuf,
    /// Lines read.
    pub lines: u64,
    /// Verdicts written (= valid events).
    pub verdicts: u64,
    pub dead_letters: u64,
    /// Events the store had already processed (their original verdict was
    /// written again, nothing was counted twice).
    pub already_processed: u64,
    pub actions: ActionCounts,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Work per valid event (analysis + history + decision + recording),
    /// microseconds; queueing between threads not included.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub rules_version: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvalReport>,
}

/// Replays a file. See the module documentation.
pub fn replay(proc: &Processor, cfg: &ReplayConfig) -> Result<ReplaySummary, ReplayError> {
    let input_err = |source| ReplayError::Input {
        path: cfg.input.clone(),
        source,
    };
    let mut input = JsonlReader::open(&cfg.input, cfg.progress, "replay").map_err(input_err)?;
    let create = |path: &Path| {
        File::create(path)
            .map(|f| BufWriter::with_capacity(1 << 20, f))
            .map_err(|source| ReplayError::Output {
                path: path.to_owned(),
                source,
            })
    };
    let mut out = create(&cfg.out)?;
    let mut dlq = create(&cfg.dead_letter)?;
    let out_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ReplayError::Output { path, source }
    };

    let file_name = cfg.input.display().to_string();
    let start = Instant::now();
    let mut eval = Evaluation::default();
    let mut s = ReplaySummary {
        input: cfg.input.clone(),
        out: cfg.out.clone(),
        dead_letter: cfg.dead_letter.clone(),
        lines: 0,
        verdicts: 0,
        dead_letters: 0,
        already_processed: 0,
        actions: ActionCounts::default(),
        seconds: 0.0,
        events_per_second: 0.0,
        latency_p50_us: 0,
        latency_p99_us: 0,
        rules_version: proc.engine.versions().rules.clone(),
        model_version: proc.engine.versions().model.clone(),
        evaluation: None,
    };
    let mut latency = LatencyHistogram::default();
    let mut sink = |item: Item, s: &mut ReplaySummary| -> Result<(), ReplayError> {
        match item {
            Item::Valid(_, b, analyzed_in) => {
                let (listing, analysis) = *b;
                let t = Instant::now();
                let p = proc.process_analyzed(&listing, analysis)?;
                latency.add(analyzed_in + t.elapsed());
                out.write_all(p.json.as_bytes())
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(out_err(&cfg.out))?;
                s.verdicts += 1;
                s.already_processed += u64::from(p.duplicate);
                s.actions.add(p.verdict.action);
                if let Some(label) = &listing.label {
                    eval.add(label, p.verdict.action);
                }
            }
            Item::Invalid(line_no, raw, e) => {
                let dl = DeadLetter::new(
                    SourcePos::File {
                        file: file_name.clone(),
                        line: line_no,
                    },
                    &e,
                    &raw,
                );
                write_line(&mut dlq, &dl).map_err(out_err(&cfg.dead_letter))?;
                s.dead_letters += 1;
            }
        }
        Ok(())
    };
    let analyze = |line_no: u64, raw: &[u8]| match decode_listing(raw, &cfg.limits) {
        Ok(listing) => {
            let t = Instant::now();
            let analysis = proc.engine.analyze(&listing);
            Item::Valid(line_no, Box::new((listing, analysis)), t.elapsed())
        }
        Err(e) => Item::Invalid(line_no, raw.to_vec(), e),
    };
    if cfg.workers <= 1 {
        while let Some((line_no, raw)) = input.next_line().map_err(input_err)? {
            s.lines = line_no;
            sink(analyze(line_no, raw), &mut s)?;
        }
    } else {
        let analyzers = cfg.workers - 1;
        std::thread::scope(|scope| -> Result<(), ReplayError> {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<std::io::Result<Vec<Item>>>(CHUNKS_AHEAD);
            let analyze = &analyze;
            scope.spawn(move || loop {
                let mut lines: Vec<(u64, Vec<u8>)> = Vec::with_capacity(CHUNK);
                let end = loop {
                    match input.next_line() {
                        Ok(Some((n, raw))) => {
                            lines.push((n, raw.to_vec()));
                            if lines.len() == CHUNK {
                                break Ok(false);
                            }
                        }
                        Ok(None) => break Ok(true),
                        Err(e) => break Err(e),
                    }
                };
                let items =
                    crate::process::parallel_map(&lines, analyzers, &|(n, raw)| analyze(*n, raw));
                let last = match end {
                    Ok(last) => last,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                if tx.send(Ok(items)).is_err() || last {
                    return;
                }
            });
            for chunk in rx {
                for item in chunk.map_err(input_err)? {
                    s.lines = match &item {
                        Item::Valid(n, _, _) | Item::Invalid(n, _, _) => *n,
                    };
                    sink(item, &mut s)?;
                }
            }
            Ok(())
        })?;
    }
    out.flush().map_err(out_err(&cfg.out))?;
    dlq.flush().map_err(out_err(&cfg.dead_letter))?;
    proc.store.finish_compaction()?;
    let elapsed = start.elapsed().max(Duration::from_micros(1));
    s.seconds = elapsed.as_secs_f64();
    s.events_per_second = s.lines as f64 / s.seconds;
    if eval.labeled() > 0 {
        s.evaluation = Some(eval.report());
    }
    s.latency_p50_us = latency.quantile(0.50);
    s.latency_p99_us = latency.quantile(0.99);
    Ok(s)
}

/// Per-event work times in 1 µs buckets up to 50 ms (fixed memory).
#[derive(Debug, Clone)]
struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const LATENCY_BUCKETS: usize = 50_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; LATENCY_BUCKETS + 1],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn add(&mut self, d: Duration) {
        let us = usize::try_from(d.as_micros()).unwrap_or(usize::MAX);
        self.counts[us.min(LATENCY_BUCKETS)] += 1;
        self.total += 1;
    }

    /// The smallest bucket at or above quantile `q` (µs; 50,000 = "more").
    fn quantile(&self, q: f64) -> u64 {
        let want = (self.total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (us, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return us as u64;
            }
        }
        0
    }
}

/// One JSON value and a newline.
pub fn write_line<W: Write, T: Serialize>(w: &mut W, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(std::io::Error::from)?;
    w.write_all(b"\n")
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "replayed {}", self.input.display())?;
        writeln!(
            f,
            "  events       {} lines: {} verdicts, {} dead letters",
            self.lines, self.verdicts, self.dead_letters
        )?;
        writeln!(
            f,
            "  verdicts     allow {}   review {}   block {}   -> {}",
            self.actions.allow,
            self.actions.review,
            self.actions.block,
            self.out.display()
        )?;
        if self.dead_letters > 0 {
            writeln!(f, "  dead letters -> {}", self.dead_letter.display())?;
        }
        if self.already_processed > 0 {
            writeln!(
                f,
                "  already processed (idempotent, not counted again): {}",
                self.already_processed
            )?;
        }
        writeln!(
            f,
            "  throughput   {:.0} events/s ({:.2} s); work per event p50 {} µs, p99 {} µs",
            self.events_per_second, self.seconds, self.latency_p50_us, self.latency_p99_us
        )?;
        writeln!(
            f,
            "  versions     rules {}   model {}",
            self.rules_version, self.model_version
        )?;
        if let Some(e) = &self.evaluation {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

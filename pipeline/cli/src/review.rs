//! `haechi review ...` and `haechi serve`.
//!
//! The commands talk to a [`Queue`]: the store itself (`--data-dir`) or the
//! HTTP API of a serving process (`--server`). Both identify the moderator
//! by token.

use crate::args::{ReviewArgs, ReviewCommand, ServeArgs};
use anyhow::{anyhow, bail, Context};
use haechi_engine::{Span, TextField};
use haechi_store::review::{AuditEntry, Case, CaseFilter, ReviewStats, Status, REASON_CODES};
use haechi_store::Store;
use haechi_stream::moderators::Moderators;
use haechi_stream::review_api::{router, ReviewState};
use std::io::IsTerminal;
use std::sync::Arc;

/// The review queue, wherever it is.
pub trait Queue {
    fn moderator(&self) -> &str;
    fn next(&self, lease_secs: i64) -> anyhow::Result<Option<Case>>;
    fn list(&self, f: &CaseFilter) -> anyhow::Result<Vec<Case>>;
    fn show(&self, id: &str) -> anyhow::Result<Case>;
    fn decide(
        &self,
        id: &str,
        action: &str,
        reason: &str,
        note: Option<String>,
    ) -> anyhow::Result<Case>;
    fn release(&self, id: &str) -> anyhow::Result<Case>;
    fn stats(&self) -> anyhow::Result<ReviewStats>;
    fn audit(&self, limit: usize) -> anyhow::Result<Vec<AuditEntry>>;
    fn export(&self) -> anyhow::Result<Vec<u8>>;
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The store, opened by this process.
pub struct Direct {
    store: Store,
    who: String,
}

impl Queue for Direct {
    fn moderator(&self) -> &str {
        &self.who
    }
    fn next(&self, lease_secs: i64) -> anyhow::Result<Option<Case>> {
        Ok(self
            .store
            .claim_next(&self.who, lease_secs * 1000, now_ms())?)
    }
    fn list(&self, f: &CaseFilter) -> anyhow::Result<Vec<Case>> {
        Ok(self.store.cases(f, now_ms())?)
    }
    fn show(&self, id: &str) -> anyhow::Result<Case> {
        self.store.case(id)?.ok_or_else(|| anyhow!("no case {id}"))
    }
    fn decide(
        &self,
        id: &str,
        action: &str,
        reason: &str,
        note: Option<String>,
    ) -> anyhow::Result<Case> {
        Ok(self
            .store
            .decide(id, &self.who, action, reason, note, now_ms())?)
    }
    fn release(&self, id: &str) -> anyhow::Result<Case> {
        Ok(self.store.release(id, &self.who, now_ms())?)
    }
    fn stats(&self) -> anyhow::Result<ReviewStats> {
        Ok(self.store.review_stats(now_ms())?)
    }
    fn audit(&self, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(self.store.audit_log(limit)?)
    }
    fn export(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.store.export_labels(&mut out)?;
        Ok(out)
    }
}

/// A serving process over HTTP.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Remote {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Option<ureq::Response>> {
        let req = self
            .agent
            .request(
                method,
                &format!("{}{path}", self.base.trim_end_matches('/')),
            )
            .set("Authorization", &format!("Bearer {}", self.token));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) if r.status() == 204 => Ok(None),
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(code, r)) => {
                let msg = r
                    .into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                bail!(
                    "{} (HTTP {code})",
                    if msg.is_empty() {
                        "request refused".into()
                    } else {
                        msg
                    }
                )
            }
            Err(e) => Err(anyhow!("cannot reach {}: {e}", self.base)),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Option<T>> {
        match self.call(method, path, body)? {
            Some(r) => Ok(Some(r.into_json().context("reading the server's answer")?)),
            None => Ok(None),
        }
    }

    fn some<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        self.json(method, path, body)?
            .ok_or_else(|| anyhow!("empty answer from the server"))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Queue for Remote {
    fn moderator(&self) -> &str {
        "(server)"
    }
    fn next(&self, lease_secs: i64) -> anyhow::Result<Option<Case>> {
        self.json(
            "POST",
            "/v1/cases/next",
            Some(serde_json::json!({ "lease_secs": lease_secs })),
        )
    }
    fn list(&self, f: &CaseFilter) -> anyhow::Result<Vec<Case>> {
        let mut q = format!("?limit={}", f.limit);
        for (k, v) in [
            ("status", &f.status),
            ("kind", &f.kind),
            ("seller", &f.seller),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        self.some("GET", &format!("/v1/cases{q}"), None)
    }
    fn show(&self, id: &str) -> anyhow::Result<Case> {
        self.some("GET", &format!("/v1/cases/{}", enc(id)), None)
    }
    fn decide(
        &self,
        id: &str,
        action: &str,
        reason: &str,
        note: Option<String>,
    ) -> anyhow::Result<Case> {
        self.some(
            "POST",
            &format!("/v1/cases/{}/decide", enc(id)),
            Some(serde_json::json!({ "action": action, "reason": reason, "note": note })),
        )
    }
    fn release(&self, id: &str) -> anyhow::Result<Case> {
        self.some(
            "POST",
            &format!("/v1/cases/{}/release", enc(id)),
            Some(serde_json::json!({})),
        )
    }
    fn stats(&self) -> anyhow::Result<ReviewStats> {
        self.some("GET", "/v1/stats", None)
    }
    fn audit(&self, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        self.some("GET", &format!("/v1/audit?limit={limit}"), None)
    }
    fn export(&self) -> anyhow::Result<Vec<u8>> {
        let r = self
            .call("GET", "/v1/export-labels", None)?
            .ok_or_else(|| anyhow!("empty answer"))?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut out)?;
        Ok(out)
    }
}

/// The queue the arguments name.
pub fn open(a: &ReviewArgs) -> anyhow::Result<Box<dyn Queue>> {
    let token = a
        .token
        .clone()
        .ok_or_else(|| anyhow!("no moderator token: pass --token or set HAECHI_TOKEN"))?;
    match (&a.data_dir, &a.server) {
        (Some(dir), _) => {
            let moderators = Moderators::load(&a.moderators)?;
            let who = moderators
                .identify(&token)
                .ok_or_else(|| anyhow!("unknown token (not in {})", a.moderators.display()))?
                .to_owned();
            let store = Store::open(dir)
                .with_context(|| format!("opening the store in {}", dir.display()))?;
            Ok(Box::new(Direct { store, who }))
        }
        (None, Some(url)) => Ok(Box::new(Remote {
            base: url.clone(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .build(),
        })),
        (None, None) => bail!("say where the queue is: --data-dir DIR or --server URL"),
    }
}

pub fn run(a: ReviewArgs) -> anyhow::Result<i32> {
    if let ReviewCommand::Reasons = a.command {
        for r in REASON_CODES {
            println!("{r}");
        }
        return Ok(0);
    }
    let q = open(&a)?;
    let color = std::io::stdout().is_terminal();
    match a.command {
        ReviewCommand::Next { lease_mins, json } => match q.next(lease_mins * 60)? {
            Some(c) if json => println!("{}", serde_json::to_string_pretty(&c)?),
            Some(c) => print!("{}", render_case(&c, color)),
            None if json => println!("null"),
            None => println!("the queue is empty"),
        },
        ReviewCommand::List {
            status,
            kind,
            seller,
            limit,
            json,
        } => {
            let cases = q.list(&CaseFilter {
                status,
                kind,
                seller,
                limit,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cases)?);
            } else {
                println!(
                    "{:<18} {:<7} {:>6} {:<9} {:<14} title",
                    "case", "action", "score", "status", "seller"
                );
                for c in &cases {
                    println!(
                        "{:<18} {:<7} {:>6.3} {:<9} {:<14} {}",
                        c.id,
                        c.action.as_str(),
                        c.score,
                        status_name(&c.status),
                        c.seller_id,
                        c.title.chars().take(40).collect::<String>()
                    );
                }
                println!("{} case(s)", cases.len());
            }
        }
        ReviewCommand::Show { id, json } => {
            let c = q.show(&id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("{}", render_case(&c, color));
            }
        }
        ReviewCommand::Decide {
            id,
            action,
            reason,
            note,
            json,
        } => {
            let c = q.decide(&id, &action, &reason, note)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("decided {}: {action} ({reason}) — recorded", c.id);
            }
        }
        ReviewCommand::Release { id } => {
            q.release(&id)?;
            println!("released {id} back to the queue");
        }
        ReviewCommand::Stats { json } => {
            let s = q.stats()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_stats(&s);
            }
        }
        ReviewCommand::Audit { limit, json } => {
            let log = q.audit(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                for e in &log {
                    let when = chrono::DateTime::from_timestamp_millis(e.at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    let d = e
                        .decision
                        .as_ref()
                        .map(|d| format!(" {} ({})", d.action, d.reason))
                        .unwrap_or_default();
                    println!(
                        "#{:<6} {when} {:<10} {:<8} {:<18} {} -> {}{d}",
                        e.seq, e.moderator, e.what, e.case_id, e.from, e.to
                    );
                }
            }
        }
        ReviewCommand::ExportLabels { out } => {
            let bytes = q.export()?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            let n = bytes.iter().filter(|&&b| b == b'\n').count();
            println!(
                "wrote {n} labeled event(s) from moderator decisions to {}",
                out.display()
            );
        }
        ReviewCommand::Tui => crate::tui::run(q)?,
        ReviewCommand::Reasons => {}
    }
    Ok(0)
}

pub fn status_name(s: &Status) -> String {
    match s {
        Status::Claimed { by, .. } => format!("claimed:{by}"),
        other => other.name().to_owned(),
    }
}

/// The spans of every reason, per field.
pub fn spans(c: &Case, field: TextField) -> Vec<Span> {
    let mut v: Vec<Span> = c
        .reasons
        .iter()
        .flat_map(|r| r.spans.iter())
        .filter(|s| s.field == field)
        .cloned()
        .collect();
    v.sort();
    v
}

/// A text with its matched spans marked: ANSI reverse red on a terminal,
/// [[brackets]] otherwise.
pub fn highlight(text: &str, spans: &[Span], color: bool) -> String {
    let (open, close) = if color {
        ("\x1b[1;41;97m", "\x1b[0m")
    } else {
        ("[[", "]]")
    };
    let mut out = String::new();
    let mut inside = false;
    for (i, ch) in text.chars().enumerate() {
        let i = i as u32;
        let hit = spans.iter().any(|s| s.start <= i && i < s.end);
        if hit && !inside {
            out.push_str(open);
        } else if !hit && inside {
            out.push_str(close);
        }
        inside = hit;
        out.push(ch);
    }
    if inside {
        out.push_str(close);
    }
    out
}

pub fn render_case(c: &Case, color: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "case {}  [{}]  score {:.3}  {}\n",
        c.id,
        c.action.as_str(),
        c.score,
        status_name(&c.status)
    ));
    s.push_str(&format!(
        "listing {} ({})  seller {}  price {} KRW  {}{}\n\n",
        c.listing_id,
        c.event,
        c.seller_id,
        c.price,
        c.category.as_deref().unwrap_or("-"),
        c.region
            .as_deref()
            .map(|r| format!("  {r}"))
            .unwrap_or_default()
    ));
    s.push_str(&format!(
        "  {}\n",
        highlight(&c.title, &spans(c, TextField::Title), color)
    ));
    for line in highlight(&c.body, &spans(c, TextField::Body), color).lines() {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str("\nreasons:\n");
    for r in &c.reasons {
        s.push_str(&format!(
            "  {:+6.2}  {:<8} {:<34} {}\n",
            r.weight,
            r.source.as_str(),
            r.id,
            r.detail
        ));
    }
    let sel = &c.seller;
    s.push_str(&format!(
        "\nseller: {} listings ({} this week), {} reviewed, {} blocked, {} confirmed fraud, {} cleared",
        sel.listings_total, sel.listings_7d, sel.reviewed, sel.blocked, sel.confirmed_fraud, sel.cleared
    ));
    if let Some(j) = sel
        .joined_at
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        s.push_str(&format!(", joined {}", j.format("%Y-%m-%d")));
    }
    s.push('\n');
    if !c.identifiers.is_empty() {
        s.push_str(&format!("identifiers: {}\n", c.identifiers.join(", ")));
    }
    if !c.linked_sellers.is_empty() {
        s.push_str(&format!(
            "linked sellers (same identifiers): {}\n",
            c.linked_sellers.join(", ")
        ));
    }
    if let Some(d) = &c.decision {
        s.push_str(&format!(
            "decision: {} ({}) by {}\n",
            d.action, d.reason, d.by
        ));
    }
    s
}

fn print_stats(s: &ReviewStats) {
    println!(
        "queue: {} open, {} claimed, {} decided",
        s.open, s.claimed, s.decided
    );
    if let Some(h) = s.oldest_open_hours {
        println!("oldest open case: {h:.1} hours");
    }
    for (m, by) in &s.decisions {
        let parts: Vec<String> = by.iter().map(|(a, n)| format!("{a} {n}")).collect();
        println!("  {m:<12} {}", parts.join(", "));
    }
    if !s.reasons.is_empty() {
        println!("precision of flags by reason (decided cases):");
        for r in &s.reasons {
            println!(
                "  {:<36} {:>5} decided  {:>5} confirmed  precision {:.3}",
                r.reason, r.decided, r.confirmed, r.precision
            );
        }
    }
}

/// `haechi serve`: the review API over a store.
pub fn serve(a: ServeArgs) -> anyhow::Result<i32> {
    let moderators = Moderators::load(&a.moderators)?;
    if moderators.is_empty() {
        bail!(
            "{} names no moderator: nobody could use the queue",
            a.moderators.display()
        );
    }
    let store = Store::open(&a.data_dir)
        .with_context(|| format!("opening the store in {}", a.data_dir.display()))?;
    let state = ReviewState {
        store: Arc::new(store),
        moderators: Arc::new(moderators),
        lease_ms: a.lease_mins * 60_000,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        eprintln!(
            "haechi serve: review queue of {} on http://{}",
            a.data_dir.display(),
            listener.local_addr()?
        );
        axum::serve(
            listener,
            router(state.clone()).route("/healthz", axum::routing::get(|| async { "ok" })),
        )
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        state.store.flush()?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

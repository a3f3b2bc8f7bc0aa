//! `haechi review tui`: work the queue full-screen.
//!
//! Left, the listing with every matched span highlighted; right, the
//! reasons and the seller's history. One key per decision: `a` approve,
//! `r` remove, `b` ban the seller (the reason code is the strongest fraud
//! kind among the reasons), `s` skip (release the case), `q` quit. The next
//! case is claimed as soon as one is decided.

use crate::review::{spans, status_name, Queue};
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use haechi_engine::{ReasonSource, TextField};
use haechi_store::review::Case;
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span as TSpan, Text};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

const LEASE_SECS: i64 = 600;

struct App {
    case: Option<Case>,
    message: String,
    decided: usize,
}

/// The reason code for a one-key removal: the fraud kind behind the
/// strongest reason (rule ids name their kind: `ko.prepay.demand`).
fn reason_code(c: &Case) -> String {
    const BY_ID: &[(&str, &str)] = &[
        ("contact", "off_platform_contact"),
        ("prepay", "prepayment"),
        ("escrow", "fake_escrow"),
        ("link", "fake_escrow"),
        ("counterfeit", "counterfeit"),
        ("prohibited", "prohibited"),
        ("giftcard", "giftcard_ticket"),
        ("ticket", "giftcard_ticket"),
        ("too_cheap", "too_cheap"),
        ("edit_adds_contact", "bait_and_switch"),
    ];
    let mut reasons: Vec<_> = c
        .reasons
        .iter()
        .filter(|r| r.weight > 0.0 && r.source != ReasonSource::Model)
        .collect();
    reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    reasons
        .iter()
        .find_map(|r| {
            BY_ID
                .iter()
                .find(|(k, _)| r.id.contains(k))
                .map(|(_, kind)| (*kind).to_owned())
        })
        .unwrap_or_else(|| "other".to_owned())
}

fn styled(text: &str, spans: &[haechi_engine::Span]) -> Vec<Line<'static>> {
    let hl = Style::default()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::default()];
    let mut run = String::new();
    let mut run_hit = false;
    let flush = |lines: &mut Vec<Line<'static>>, run: &mut String, hit: bool| {
        if !run.is_empty() {
            let s = std::mem::take(run);
            if let Some(l) = lines.last_mut() {
                l.spans.push(if hit {
                    TSpan::styled(s, hl)
                } else {
                    TSpan::raw(s)
                });
            }
        }
    };
    for (i, ch) in text.chars().enumerate() {
        let hit = spans
            .iter()
            .any(|s| s.start <= i as u32 && (i as u32) < s.end);
        if ch == '\n' {
            flush(&mut lines, &mut run, run_hit);
            lines.push(Line::default());
            continue;
        }
        if hit != run_hit {
            flush(&mut lines, &mut run, run_hit);
            run_hit = hit;
        }
        run.push(ch);
    }
    flush(&mut lines, &mut run, run_hit);
    lines
}

fn draw(f: &mut Frame, app: &App, who: &str) {
    let area = f.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(5),
            Constraint::Length(2),
        ])
        .split(area);
    let head = match &app.case {
        Some(c) => format!(
            " haechi review — {who} — case {} [{}] score {:.3} {} — decided this session: {}",
            c.id,
            c.action.as_str(),
            c.score,
            status_name(&c.status),
            app.decided
        ),
        None => format!(
            " haechi review — {who} — the queue is empty — decided this session: {}",
            app.decided
        ),
    };
    f.render_widget(
        Paragraph::new(head).style(Style::default().add_modifier(Modifier::REVERSED)),
        rows[0],
    );
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(rows[1]);
    if let Some(c) = &app.case {
        let mut text = Text::default();
        text.lines.push(Line::styled(
            format!(
                "{} KRW · {} · {}",
                c.price,
                c.category.as_deref().unwrap_or("-"),
                c.event
            ),
            Style::default().fg(Color::DarkGray),
        ));
        for l in styled(&c.title, &spans(c, TextField::Title)) {
            text.lines
                .push(l.style(Style::default().add_modifier(Modifier::BOLD)));
        }
        text.lines.push(Line::default());
        text.lines
            .extend(styled(&c.body, &spans(c, TextField::Body)));
        f.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(" listing ")),
            cols[0],
        );
        let mut side: Vec<Line> = c
            .reasons
            .iter()
            .map(|r| Line::raw(format!("{:+5.1} {} {}", r.weight, r.id, r.detail)))
            .collect();
        let s = &c.seller;
        side.push(Line::default());
        side.push(Line::styled(
            format!("seller {}", c.seller_id),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        side.push(Line::raw(format!(
            "{} listings, {} this week; {} reviewed, {} blocked",
            s.listings_total, s.listings_7d, s.reviewed, s.blocked
        )));
        side.push(Line::raw(format!(
            "{} confirmed fraud, {} cleared",
            s.confirmed_fraud, s.cleared
        )));
        if let Some(j) = s
            .joined_at
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            side.push(Line::raw(format!("joined {}", j.format("%Y-%m-%d"))));
        }
        if !c.identifiers.is_empty() {
            side.push(Line::raw(format!(
                "identifiers: {}",
                c.identifiers.join(", ")
            )));
        }
        if !c.linked_sellers.is_empty() {
            side.push(Line::raw(format!(
                "linked sellers: {}",
                c.linked_sellers.join(", ")
            )));
        }
        f.render_widget(
            Paragraph::new(side).wrap(Wrap { trim: true }).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" reasons · seller "),
            ),
            cols[1],
        );
    }
    let help = format!(
        " a approve   r remove   b ban seller   s skip   q quit   {}",
        app.message
    );
    f.render_widget(Paragraph::new(help), rows[2]);
}

pub fn run(q: Box<dyn Queue>) -> anyhow::Result<()> {
    let mut app = App {
        case: q.next(LEASE_SECS)?,
        message: String::new(),
        decided: 0,
    };
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            terminal.draw(|f| draw(f, &app, q.moderator()))?;
            let Event::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let decision = match k.code {
                KeyCode::Char('q') | KeyCode::Esc => {
                    if let Some(c) = &app.case {
                        let _ = q.release(&c.id);
                    }
                    return Ok(());
                }
                KeyCode::Char('a') => Some(("approve", "legit".to_owned())),
                KeyCode::Char('r') => app.case.as_ref().map(|c| ("remove", reason_code(c))),
                KeyCode::Char('b') => app.case.as_ref().map(|c| ("ban-seller", reason_code(c))),
                KeyCode::Char('s') => {
                    if let Some(c) = app.case.take() {
                        q.release(&c.id)?;
                        app.message = format!("skipped {}", c.id);
                    }
                    app.case = q.next(LEASE_SECS)?;
                    None
                }
                _ => None,
            };
            if let (Some((action, reason)), Some(c)) = (decision, app.case.as_ref()) {
                match q.decide(&c.id, action, &reason, None) {
                    Ok(_) => {
                        app.decided += 1;
                        app.message = format!("{} {} ({reason})", c.id, action);
                        app.case = q.next(LEASE_SECS)?;
                    }
                    Err(e) => app.message = format!("error: {e}"),
                }
            }
        }
    })();
    ratatui::restore();
    result
}

//! Rule packs: keywords, regexes, exceptions and composites, compiled into one
//! matcher.
//!
//! A rule pack is a TOML file of rules written by trust-and-safety people, not
//! programmers (see `rules/README.md` for the format). Rules only *name* what
//! they see and say how much it weighs, like rspamd symbols; the policy decides
//! what the sum means. All keywords of all packs go into ONE aho-corasick
//! automaton that runs over the compact view of the text (so 카.톡 and
//! ㅋㅏㅌㅗㄱ hit the keyword 카톡); all regexes go into ONE `RegexSet` over the
//! folded view, and only the regexes the set reports are run again for their
//! spans. An exception (카톡 사절, 선입금 안 받아요) cancels a hit of its rule
//! when it overlaps the hit or lies within the rule's window of it, measured
//! in characters of the original text.
//!
//! Loading is pure: [`RuleSet::compile`] takes file names and contents and
//! returns either a rule set or every problem found, each with file and line,
//! so a broken pack is rejected whole and the caller keeps its old rules.

pub mod lists;
mod pack;

pub use lists::{ListHit, Lists};
pub use pack::{ExampleOutcome, RuleError, RuleErrors, Source};

use crate::contract::{Span, TextField};
use crate::extract::Facts;
use crate::normalize::{Normalized, View};
use aho_corasick::AhoCorasick;
use regex::{Regex, RegexSet};
use std::collections::HashMap;

/// The fraud kinds a rule (or a label) can name.
pub const KINDS: &[&str] = &[
    "off_platform_contact",
    "prepayment",
    "fake_escrow",
    "too_cheap",
    "counterfeit",
    "prohibited",
    "giftcard_ticket",
    "bait_and_switch",
    "legit_signal",
];

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: String,
    pub weight: f64,
    pub description: String,
    pub pack: String,
    pub fields: Vec<TextField>,
    pub exception_window: u32,
}

/// A condition of a composite rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    /// Another rule hit (by index into [`RuleSet::rules`]).
    Rule(usize),
    /// Some rule of this kind hit.
    Kind(String),
    /// An extracted fact is present (`phone`, `messenger_id`, `url`,
    /// `foreign_url`, `bank_account`, `price_mention`, `listed`).
    Fact(String),
    /// The listing's category equals this.
    Category(String),
    /// Price strictly below (KRW).
    PriceBelow(u64),
    /// Price at least (KRW).
    PriceAtLeast(u64),
}

/// A rule over other rules and facts: fires when all of `all`, at least one
/// of `any` (if given) and none of `none` hold.
#[derive(Debug, Clone)]
pub struct Composite {
    pub rule: Rule,
    pub all: Vec<Atom>,
    pub any: Vec<Atom>,
    pub none: Vec<Atom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Match,
    Exception,
}

/// A rule that fired on a listing, with the spans in the original text.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleHit {
    /// Index into [`RuleSet::rules`], or `rules.len() + i` for composite `i`.
    pub rule: usize,
    pub spans: Vec<Span>,
}

/// The compiled rule packs.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    composites: Vec<Composite>,
    automaton: AhoCorasick,
    /// Automaton pattern -> (rule, role).
    patterns: Vec<(usize, Role)>,
    regex_set: RegexSet,
    /// Literals every match of some regex must contain (a prefix or suffix
    /// of it): a text containing none of them cannot match any regex, and
    /// the set is not run. `None` when some regex has no such literals.
    regex_gate: Option<AhoCorasick>,
    /// RegexSet index -> (rule, role, regex).
    regexes: Vec<(usize, Role, Regex)>,
    /// The examples each rule carries, for `rules check`.
    examples: Vec<pack::Examples>,
    keyword_count: usize,
}

impl RuleSet {
    /// Compiles rule packs from their sources. Every problem in every file is
    /// reported, each with its file and line.
    pub fn compile(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
        pack::compile(sources)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn composites(&self) -> &[Composite] {
        &self.composites
    }

    /// The rule behind a [`RuleHit::rule`] index.
    pub fn rule(&self, index: usize) -> Option<&Rule> {
        if index < self.rules.len() {
            self.rules.get(index)
        } else {
            self.composites
                .get(index - self.rules.len())
                .map(|c| &c.rule)
        }
    }

    pub fn keyword_count(&self) -> usize {
        self.keyword_count
    }

    pub fn regex_count(&self) -> usize {
        self.regexes.len()
    }

    /// Regexes with no literal every match must start or end with: while
    /// there is one, every text runs the whole regex set (slower, still
    /// correct). `rules check` names them.
    pub fn regexes_without_literals(&self) -> Vec<&str> {
        self.regexes
            .iter()
            .map(|(_, _, re)| re.as_str())
            .filter(|p| pack::required_literals(p).is_none())
            .collect()
    }

    /// Runs the text rules over both fields of a listing.
    pub fn match_text(&self, title: &Normalized, body: &Normalized) -> Vec<RuleHit> {
        let mut per_rule: HashMap<usize, Vec<Span>> = HashMap::new();
        for (field, norm) in [(TextField::Title, title), (TextField::Body, body)] {
            self.match_field(field, norm, &mut per_rule);
        }
        let mut hits: Vec<RuleHit> = per_rule
            .into_iter()
            .map(|(rule, mut spans)| {
                spans.sort();
                spans.dedup();
                RuleHit { rule, spans }
            })
            .collect();
        hits.sort_by_key(|h| h.rule);
        hits
    }

    fn match_field(
        &self,
        field: TextField,
        norm: &Normalized,
        out: &mut HashMap<usize, Vec<Span>>,
    ) {
        // (rule, start, end) in original characters
        let mut found: Vec<(usize, u32, u32)> = Vec::new();
        let mut exceptions: Vec<(usize, u32, u32)> = Vec::new();
        let mut record = |rule: usize, role: Role, view: &View, a: usize, b: usize| {
            if !self.rules[rule].fields.contains(&field) {
                return;
            }
            if let Some((s, e)) = view.original_span(a, b) {
                match role {
                    Role::Match => found.push((rule, s, e)),
                    Role::Exception => exceptions.push((rule, s, e)),
                }
            }
        };
        let compact = &norm.compact;
        for m in self.automaton.find_overlapping_iter(compact.as_str()) {
            let (rule, role) = self.patterns[m.pattern().as_usize()];
            record(rule, role, compact, m.start(), m.end());
        }
        let folded = &norm.folded;
        let gated_out = self
            .regex_gate
            .as_ref()
            .is_some_and(|gate| !gate.is_match(folded.as_str()));
        if !gated_out {
            for i in self.regex_set.matches(folded.as_str()).iter() {
                let (rule, role, re) = &self.regexes[i];
                for m in re.find_iter(folded.as_str()) {
                    if m.start() < m.end() {
                        record(*rule, *role, folded, m.start(), m.end());
                    }
                }
            }
        }
        for (rule, s, e) in found {
            let w = self.rules[rule].exception_window;
            let cancelled = exceptions.iter().any(|&(r, xs, xe)| {
                r == rule && xs < e.saturating_add(w) && s < xe.saturating_add(w)
            });
            if !cancelled {
                out.entry(rule).or_default().push(Span {
                    field,
                    start: s,
                    end: e,
                    text: String::new(),
                });
            }
        }
    }

    /// Evaluates composite rules on top of text hits and facts; returns the
    /// composites that fire (as [`RuleHit`]s without spans of their own: they
    /// carry the spans of the rules they combine).
    pub fn match_composites(
        &self,
        hits: &[RuleHit],
        facts: &Facts,
        category: Option<&str>,
        price: u64,
    ) -> Vec<RuleHit> {
        let holds = |a: &Atom| match a {
            Atom::Rule(r) => hits.iter().any(|h| h.rule == *r),
            Atom::Kind(k) => hits
                .iter()
                .any(|h| self.rule(h.rule).is_some_and(|r| &r.kind == k)),
            Atom::Fact(f) => facts.has(f),
            Atom::Category(c) => category == Some(c.as_str()),
            Atom::PriceBelow(p) => price < *p,
            Atom::PriceAtLeast(p) => price >= *p,
        };
        let mut out = Vec::new();
        for (i, c) in self.composites.iter().enumerate() {
            let fires = c.all.iter().all(holds)
                && (c.any.is_empty() || c.any.iter().any(holds))
                && !c.none.iter().any(holds);
            if fires {
                let mut spans: Vec<Span> = hits
                    .iter()
                    .filter(|h| {
                        c.all.iter().chain(&c.any).any(|a| match a {
                            Atom::Rule(r) => h.rule == *r,
                            Atom::Kind(k) => self.rule(h.rule).is_some_and(|r| &r.kind == k),
                            _ => false,
                        })
                    })
                    .flat_map(|h| h.spans.iter().cloned())
                    .collect();
                spans.sort();
                spans.dedup();
                out.push(RuleHit {
                    rule: self.rules.len() + i,
                    spans,
                });
            }
        }
        out
    }

    /// Runs every rule's examples (with these lists deciding which links are
    /// foreign); returns one outcome per failing example.
    pub fn check_examples(&self, lists: &Lists) -> Vec<ExampleOutcome> {
        pack::check_examples(self, lists)
    }
}

/// Fills in the `text` of each span from the original strings.
pub fn fill_span_text(spans: &mut [Span], title: &str, body: &str) {
    for s in spans {
        let src = match s.field {
            TextField::Title => title,
            TextField::Body => body,
        };
        s.text = src
            .chars()
            .skip(s.start as usize)
            .take((s.end - s.start) as usize)
            .collect();
    }
}

//! The rule-pack file format, its validation and compilation.

use super::{Atom, Composite, Role, Rule, RuleSet, KINDS};
use crate::contract::TextField;
use crate::extract::{extract, FACTS};
use crate::normalize::{compact_key, normalize};
use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

/// A file handed to the compiler: its path (for messages) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: String,
    pub text: String,
}

/// One problem in a rule pack, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every problem found while compiling rule packs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl std::fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the rule packs:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    pack: PackMeta,
    #[serde(default)]
    rule: Vec<RuleDef>,
    #[serde(default)]
    composite: Vec<CompositeDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackMeta {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    lang: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: Spanned<String>,
    kind: Spanned<String>,
    weight: Spanned<f64>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    keywords: Vec<Spanned<String>>,
    #[serde(default)]
    regex: Vec<Spanned<String>>,
    #[serde(default)]
    exceptions: Vec<Spanned<String>>,
    #[serde(default)]
    exception_regex: Vec<Spanned<String>>,
    #[serde(default)]
    exception_window: Option<u32>,
    #[serde(default)]
    fields: Option<Vec<TextField>>,
    #[serde(default, rename = "match")]
    must_match: Vec<Spanned<String>>,
    #[serde(default)]
    no_match: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompositeDef {
    id: Spanned<String>,
    kind: Spanned<String>,
    weight: Spanned<f64>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    all: Vec<Spanned<String>>,
    #[serde(default)]
    any: Vec<Spanned<String>>,
    #[serde(default)]
    none: Vec<Spanned<String>>,
    #[serde(default)]
    example: Vec<CompositeExample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompositeExample {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default = "default_price")]
    price: u64,
    expect: bool,
    #[serde(skip)]
    line: usize,
}

fn default_price() -> u64 {
    10_000
}

/// The examples a rule carries, with their lines.
#[derive(Debug, Clone, Default)]
pub(super) struct Examples {
    file: String,
    must_match: Vec<(usize, String)>,
    no_match: Vec<(usize, String)>,
    listings: Vec<CompositeExample>,
}

/// An example that did not behave as its rule says it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleOutcome {
    pub rule: String,
    pub file: String,
    pub line: usize,
    pub text: String,
    pub expected_match: bool,
}

impl std::fmt::Display for ExampleOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: rule `{}` {} {:?}",
            self.file,
            self.line,
            self.rule,
            if self.expected_match {
                "should match but does not:"
            } else {
                "should not match but does:"
            },
            self.text
        )
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Ctx<'a> {
    src: &'a Source,
    errors: &'a mut Vec<RuleError>,
}

impl Ctx<'_> {
    fn err(&mut self, offset: usize, message: String) {
        self.errors.push(RuleError {
            file: self.src.path.clone(),
            line: line_of(&self.src.text, offset),
            message,
        });
    }
}

struct Builder {
    rules: Vec<Rule>,
    examples: Vec<Examples>,
    keywords: Vec<(String, usize, Role)>,
    regexes: Vec<(String, usize, Role)>,
    ids: HashMap<String, (String, usize)>,
    composites: Vec<(usize, CompositeDef, Rule)>,
}

pub(super) fn compile(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut sorted: Vec<&Source> = sources.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut b = Builder {
        rules: Vec::new(),
        examples: Vec::new(),
        keywords: Vec::new(),
        regexes: Vec::new(),
        ids: HashMap::new(),
        composites: Vec::new(),
    };
    for (si, src) in sorted.iter().enumerate() {
        let mut ctx = Ctx {
            src,
            errors: &mut errors,
        };
        let file: PackFile = match toml::from_str(&src.text) {
            Ok(f) => f,
            Err(e) => {
                let at = e.span().map_or(0, |s| s.start);
                ctx.err(at, format!("not a valid rule pack: {}", e.message()));
                continue;
            }
        };
        let _ = (&file.pack.description, &file.pack.lang);
        for def in file.rule {
            add_rule(&mut b, &mut ctx, &file.pack.id, def);
        }
        for def in file.composite {
            let rule = match rule_header(
                &mut b,
                &mut ctx,
                &file.pack.id,
                &def.id,
                &def.kind,
                &def.weight,
                &def.description,
            ) {
                Some(r) => r,
                None => continue,
            };
            b.composites.push((si, def, rule));
        }
    }
    // Composites are resolved last: they may name rules of any pack.
    let index: HashMap<String, usize> = b
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let mut composites = Vec::new();
    let mut composite_examples = Vec::new();
    for (si, def, rule) in std::mem::take(&mut b.composites) {
        let src = sorted[si];
        let mut ctx = Ctx {
            src,
            errors: &mut errors,
        };
        if def.all.is_empty() && def.any.is_empty() {
            ctx.err(
                def.id.span().start,
                format!("composite `{}` has no `all` or `any` condition", rule.id),
            );
            continue;
        }
        let atoms = |list: &[Spanned<String>], ctx: &mut Ctx| -> Vec<Atom> {
            list.iter()
                .filter_map(|s| match parse_atom(s.get_ref(), &index) {
                    Ok(a) => Some(a),
                    Err(m) => {
                        ctx.err(s.span().start, format!("composite `{}`: {m}", rule.id));
                        None
                    }
                })
                .collect()
        };
        let all = atoms(&def.all, &mut ctx);
        let any = atoms(&def.any, &mut ctx);
        let none = atoms(&def.none, &mut ctx);
        let line = line_of(&src.text, def.id.span().start);
        composite_examples.push(Examples {
            file: src.path.clone(),
            must_match: Vec::new(),
            no_match: Vec::new(),
            listings: def
                .example
                .into_iter()
                .map(|mut e| {
                    e.line = line;
                    e
                })
                .collect(),
        });
        composites.push(Composite {
            rule,
            all,
            any,
            none,
        });
    }
    if !errors.is_empty() {
        return Err(RuleErrors(errors));
    }
    let keyword_count = b.keywords.iter().filter(|k| k.2 == Role::Match).count();
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .prefilter(false)
        .build(b.keywords.iter().map(|k| k.0.as_str()))
        .map_err(|e| {
            RuleErrors(vec![RuleError {
                file: "<all packs>".into(),
                line: 0,
                message: format!("keyword automaton: {e}"),
            }])
        })?;
    let regex_set = RegexSet::new(b.regexes.iter().map(|r| r.0.as_str())).map_err(|e| {
        RuleErrors(vec![RuleError {
            file: "<all packs>".into(),
            line: 0,
            message: format!("regex set: {e}"),
        }])
    })?;
    let regex_gate = regex_gate(b.regexes.iter().map(|r| r.0.as_str()));
    let mut regexes = Vec::with_capacity(b.regexes.len());
    for (pattern, rule, role) in &b.regexes {
        // Each pattern already compiled alone in add_rule.
        if let Ok(re) = Regex::new(pattern) {
            regexes.push((*rule, *role, re));
        }
    }
    let mut examples = b.examples;
    examples.extend(composite_examples);
    Ok(RuleSet {
        rules: b.rules,
        composites,
        automaton,
        regex_gate,
        patterns: b.keywords.iter().map(|k| (k.1, k.2)).collect(),
        regex_set,
        regexes,
        examples,
        keyword_count,
    })
}

fn rule_header(
    b: &mut Builder,
    ctx: &mut Ctx,
    pack: &str,
    id: &Spanned<String>,
    kind: &Spanned<String>,
    weight: &Spanned<f64>,
    description: &str,
) -> Option<Rule> {
    let line = line_of(&ctx.src.text, id.span().start);
    let name = id.get_ref().trim();
    let mut ok = true;
    if name.is_empty() {
        ctx.err(id.span().start, "rule with an empty id".into());
        ok = false;
    } else if let Some((file, first)) = b.ids.get(name) {
        ctx.err(
            id.span().start,
            format!("duplicate rule id `{name}` (first defined at {file}:{first})"),
        );
        ok = false;
    } else {
        b.ids.insert(name.to_owned(), (ctx.src.path.clone(), line));
    }
    if !KINDS.contains(&kind.get_ref().as_str()) {
        ctx.err(
            kind.span().start,
            format!(
                "rule `{name}`: unknown kind `{}` (known: {})",
                kind.get_ref(),
                KINDS.join(", ")
            ),
        );
        ok = false;
    }
    if !weight.get_ref().is_finite() || weight.get_ref().abs() > 20.0 {
        ctx.err(
            weight.span().start,
            format!("rule `{name}`: weight must be a number in -20..20"),
        );
        ok = false;
    }
    ok.then(|| Rule {
        id: name.to_owned(),
        kind: kind.get_ref().clone(),
        weight: *weight.get_ref(),
        description: description.to_owned(),
        pack: pack.to_owned(),
        fields: vec![TextField::Title, TextField::Body],
        exception_window: 0,
    })
}

fn add_rule(b: &mut Builder, ctx: &mut Ctx, pack: &str, def: RuleDef) {
    let Some(mut rule) = rule_header(
        b,
        ctx,
        pack,
        &def.id,
        &def.kind,
        &def.weight,
        &def.description,
    ) else {
        return;
    };
    if def.keywords.is_empty() && def.regex.is_empty() {
        ctx.err(
            def.id.span().start,
            format!(
                "rule `{}` is empty: it has no keywords and no regex",
                rule.id
            ),
        );
        return;
    }
    if let Some(f) = def.fields {
        if f.is_empty() {
            ctx.err(
                def.id.span().start,
                format!("rule `{}`: `fields` is empty", rule.id),
            );
            return;
        }
        rule.fields = f;
    }
    rule.exception_window = def.exception_window.unwrap_or(0);
    let index = b.rules.len();
    let mut ok = true;
    let mut keywords = Vec::new();
    for (list, role) in [
        (&def.keywords, Role::Match),
        (&def.exceptions, Role::Exception),
    ] {
        for k in list {
            let key = compact_key(k.get_ref());
            if key.is_empty() {
                ctx.err(
                    k.span().start,
                    format!(
                        "rule `{}`: keyword {:?} is empty once normalized (only separators?)",
                        rule.id,
                        k.get_ref()
                    ),
                );
                ok = false;
            } else {
                keywords.push((key, index, role));
            }
        }
    }
    let mut regexes = Vec::new();
    for (list, role) in [
        (&def.regex, Role::Match),
        (&def.exception_regex, Role::Exception),
    ] {
        for r in list {
            let pattern = ascii_boundaries(r.get_ref());
            match Regex::new(&pattern) {
                Ok(re) if re.is_match("") => {
                    ctx.err(
                        r.span().start,
                        format!(
                            "rule `{}`: regex {:?} matches the empty string",
                            rule.id,
                            r.get_ref()
                        ),
                    );
                    ok = false;
                }
                Ok(_) => regexes.push((pattern, index, role)),
                Err(e) => {
                    ctx.err(
                        r.span().start,
                        format!("rule `{}`: bad regex {:?}: {e}", rule.id, r.get_ref()),
                    );
                    ok = false;
                }
            }
        }
    }
    if !ok {
        return;
    }
    let spanned = |v: &[Spanned<String>]| {
        v.iter()
            .map(|s| (line_of(&ctx.src.text, s.span().start), s.get_ref().clone()))
            .collect::<Vec<_>>()
    };
    b.examples.push(Examples {
        file: ctx.src.path.clone(),
        must_match: spanned(&def.must_match),
        no_match: spanned(&def.no_match),
        listings: Vec::new(),
    });
    b.keywords.extend(keywords);
    b.regexes.extend(regexes);
    b.rules.push(rule);
}

/// Rewrites `\b` and `\B` into ASCII word boundaries. Unicode word
/// boundaries force the regex engine off its DFAs onto the PikeVM for any
/// non-ASCII text (all of Korean), tens of times slower; Korean has no
/// spaces-inside-words semantics worth that price, and an ASCII boundary
/// still separates Latin words from each other and from Hangul.
pub(crate) fn ascii_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn parse_atom(s: &str, index: &HashMap<String, usize>) -> Result<Atom, String> {
    let (head, tail) = s
        .split_once(':')
        .ok_or_else(|| format!("condition {s:?} is not `rule:`, `kind:`, `fact:`, `category:`, `price_below:` or `price_at_least:`"))?;
    match head {
        "rule" => index
            .get(tail)
            .map(|&i| Atom::Rule(i))
            .ok_or_else(|| format!("condition {s:?} names no known text rule")),
        "kind" if KINDS.contains(&tail) => Ok(Atom::Kind(tail.to_owned())),
        "kind" => Err(format!("condition {s:?}: unknown kind")),
        "fact" if FACTS.contains(&tail) => Ok(Atom::Fact(tail.to_owned())),
        "fact" => Err(format!(
            "condition {s:?}: unknown fact (known: {})",
            FACTS.join(", ")
        )),
        "category" if !tail.is_empty() => Ok(Atom::Category(tail.to_owned())),
        "price_below" | "price_at_least" => {
            let n: u64 = tail
                .parse()
                .map_err(|_| format!("condition {s:?}: not a price in KRW"))?;
            Ok(if head == "price_below" {
                Atom::PriceBelow(n)
            } else {
                Atom::PriceAtLeast(n)
            })
        }
        _ => Err(format!("condition {s:?} is not understood")),
    }
}

pub(super) fn check_examples(set: &RuleSet, lists: &super::Lists) -> Vec<ExampleOutcome> {
    let mut out = Vec::new();
    let empty = normalize("");
    let fires = |rule: usize, title: &str, body: &str, category: Option<&str>, price: u64| {
        let (t, bd) = (normalize(title), normalize(body));
        let hits = set.match_text(&t, &bd);
        if rule < set.rules.len() {
            return hits.iter().any(|h| h.rule == rule);
        }
        let mut facts = extract(&t, &bd);
        lists.apply(&mut facts);
        set.match_composites(&hits, &facts, category, price)
            .iter()
            .any(|h| h.rule == rule)
    };
    for (i, ex) in set.examples.iter().enumerate() {
        let Some(rule) = set.rule(i) else { continue };
        for (expected, list) in [(true, &ex.must_match), (false, &ex.no_match)] {
            for (line, text) in list {
                let body = normalize(text);
                let hit = set.match_text(&empty, &body).iter().any(|h| h.rule == i);
                if hit != expected {
                    out.push(ExampleOutcome {
                        rule: rule.id.clone(),
                        file: ex.file.clone(),
                        line: *line,
                        text: text.clone(),
                        expected_match: expected,
                    });
                }
            }
        }
        for l in &ex.listings {
            if fires(i, &l.title, &l.body, l.category.as_deref(), l.price) != l.expect {
                out.push(ExampleOutcome {
                    rule: rule.id.clone(),
                    file: ex.file.clone(),
                    line: l.line,
                    text: format!("{} / {}", l.title, l.body),
                    expected_match: l.expect,
                });
            }
        }
    }
    out
}

/// Literals that every match of `pattern` starts with, or every match ends
/// with (whichever set has the longer shortest literal); `None` when neither
/// is a finite set of non-empty literals.
pub(crate) fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    [ExtractKind::Prefix, ExtractKind::Suffix]
        .into_iter()
        .filter_map(|kind| {
            let seq = Extractor::new().kind(kind).limit_class(64).extract(&hir);
            let lits: Vec<Vec<u8>> = seq
                .literals()?
                .iter()
                .map(|l| l.as_bytes().to_vec())
                .collect();
            let shortest = lits.iter().map(Vec::len).min()?;
            (shortest > 0).then_some((shortest, lits))
        })
        .max_by_key(|(shortest, _)| *shortest)
        .map(|(_, lits)| lits)
}

/// One automaton of the required literals of all regexes (see
/// [`required_literals`]): a text without any of them matches no regex.
fn regex_gate<'a>(patterns: impl Iterator<Item = &'a str>) -> Option<AhoCorasick> {
    let mut all = Vec::new();
    for p in patterns {
        all.extend(required_literals(p)?);
    }
    if all.is_empty() {
        return None;
    }
    AhoCorasick::builder()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(all)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|v| {
            let mut v: Vec<String> = v
                .into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect();
            v.sort();
            v
        })
    }

    #[test]
    fn required_literals_take_the_better_end() {
        // A digit class in front: the suffix is the useful side.
        let l = lits(r"\d+\s?년산").unwrap();
        assert!(l.contains(&"년산".to_owned()) && l.iter().all(|x| x.ends_with("년산")));
        assert_eq!(
            lits(r"(?:상품권|기프트).{0,20}\d{2}\s?퍼").unwrap(),
            ["기프트", "상품권"]
        );
        assert_eq!(lits(r"\[\.\]").unwrap(), ["[.]"]);
        // Matches that may be empty, or are bounded by unbounded classes on
        // both ends, have none: the gate is then off.
        assert_eq!(lits(r"a*"), None);
        assert_eq!(lits(r"[^x]+"), None);
        // Small classes are spelled out (up to 64 members).
        assert_eq!(lits(r"[a-z0-9] (?:dot|닷) [a-z]").unwrap().len(), 52);
        assert!(regex_gate([r"\[\.\]", r"[^x]+"].into_iter()).is_none());
    }

    #[test]
    fn the_gate_never_hides_a_match() {
        let patterns = [
            r"\d+\s?년산",
            r"(?:상품권|기프트).{0,20}\d{2}\s?퍼",
            r"1\s?:\s?1\s?(?:제작|퀄|급|복각)",
            r"(?i)contact\s+me",
            r"h[^a-z0-9]{1,3}t[^a-z0-9]{1,3}t[^a-z0-9]{1,3}p",
        ];
        let gate = regex_gate(patterns.into_iter()).expect("a gate");
        let texts = [
            "10년산 발렌타인",
            "상품권 팝니다 95퍼",
            "1 : 1 제작 가능",
            "CONTACT  me now",
            "h.t.t.p 링크",
            "그냥 평범한 글",
        ];
        for t in texts {
            let any = patterns
                .iter()
                .any(|p| regex::Regex::new(p).unwrap().is_match(t));
            if any {
                assert!(gate.is_match(t), "{t:?} matches a regex but not the gate");
            }
        }
        assert!(!gate.is_match("그냥 평범한 글"));
    }
}

//! Extractors: the identifiers and numbers a listing carries, typed.
//!
//! Scams need a way to reach the buyer off the platform and a way to be paid:
//! phone numbers, messenger IDs, links, bank accounts. Extracted identifiers
//! are canonical (a phone is its digits, `010-1234-5678`, `공일공 1234 5678`
//! and `+82 10 1234 5678` are all `01012345678`; a domain is lower-case
//! without `www.`), so the seller-history stage can index them across
//! accounts and the lists in `rules/lists/` can be checked exactly.
//!
//! Everything runs on the folded view (see [`crate::normalize`]), which
//! already turned fullwidth, circled and Korean-word digits into ASCII digits.

use crate::contract::{Span, TextField};
use crate::normalize::{Normalized, View};
use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// The facts a composite rule can ask for (`fact:NAME`).
pub const FACTS: &[&str] = &[
    "phone",
    "messenger_id",
    "url",
    "foreign_url",
    "bank_account",
    "price_mention",
    "listed",
];

/// What kind of identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentKind {
    Phone,
    MessengerId,
    Domain,
    BankAccount,
}

impl IdentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentKind::Phone => "phone",
            IdentKind::MessengerId => "messenger_id",
            IdentKind::Domain => "domain",
            IdentKind::BankAccount => "bank_account",
        }
    }
}

/// One extracted identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    pub kind: IdentKind,
    /// Canonical value: digits for phones and accounts, `service:id` for
    /// messenger IDs, the lower-case host for domains.
    pub value: String,
    pub span: Span,
}

/// Everything the extractors found in a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub idents: Vec<Ident>,
    /// Prices written in the text, in KRW.
    pub prices: Vec<u64>,
    /// Some URL's domain is not one of the platform's own (set by the lists).
    pub foreign_url: bool,
    /// Some identifier is on a known-bad list (set by the lists).
    pub listed: bool,
}

impl Facts {
    pub fn has(&self, fact: &str) -> bool {
        let any = |k| self.idents.iter().any(|i| i.kind == k);
        match fact {
            "phone" => any(IdentKind::Phone),
            "messenger_id" => any(IdentKind::MessengerId),
            "url" => any(IdentKind::Domain),
            "foreign_url" => self.foreign_url,
            "bank_account" => any(IdentKind::BankAccount),
            "price_mention" => !self.prices.is_empty(),
            "listed" => self.listed,
            _ => false,
        }
    }

    pub fn of(&self, kind: IdentKind) -> impl Iterator<Item = &Ident> {
        self.idents.iter().filter(move |i| i.kind == kind)
    }
}

/// Runs every extractor over both fields.
pub fn extract(title: &Normalized, body: &Normalized) -> Facts {
    let mut facts = Facts::default();
    for (field, n) in [(TextField::Title, title), (TextField::Body, body)] {
        let v = &n.folded;
        let domains = domains(v, field);
        messenger_ids(n, field, &mut facts.idents);
        facts.idents.extend(domains);
        let runs = digit_runs(v.as_str());
        let phones = phones(v, field, &runs);
        accounts(v, field, &runs, &phones, &mut facts.idents);
        facts.idents.extend(phones);
        prices(v.as_str(), &mut facts.prices);
    }
    facts
        .idents
        .sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
    facts
        .idents
        .dedup_by(|a, b| a.kind == b.kind && a.value == b.value);
    facts
}

fn span(v: &View, field: TextField, a: usize, b: usize) -> Option<Span> {
    v.original_span(a, b).map(|(start, end)| Span {
        field,
        start,
        end,
        text: String::new(),
    })
}

// --- URLs and domains ------------------------------------------------------

static URL: LazyLock<Regex> = LazyLock::new(|| {
    // A host: labels separated by dots, optionally written as (dot), [.] or 닷,
    // optionally with spaces around the dot; scheme-less hosts need a TLD we know.
    let dot = r"(?:\s?\.\s?|\s?\(dot\)\s?|\s?\[\.\]\s?|\s?\[dot\]\s?|\s?닷\s?)";
    let label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
    let tld = r"(?:com|net|org|kr|co|me|io|ly|gl|gg|xyz|top|shop|site|info|biz|cc|link|app|page|store|online|club|vip|live|pro|pw|tk|ml|ga|cf|to|im|in|us|cn|jp|ru|su|ws|bz|la|so|one|icu|cyou|buzz|fun|asia|kakao|naver)";
    let re = format!(
        r"(?:https?://\s?)?(?P<host>(?:{label}{dot})+{tld})(?-u:\b)(?P<path>/[^\s]*)?|(?:https?://)(?P<host2>(?:{label}{dot})+[a-z]{{2,12}})(?-u:\b)(?P<path2>/[^\s]*)?"
    );
    Regex::new(&re).unwrap_or_else(|e| panic!("built-in URL regex: {e}"))
});

fn clean_host(raw: &str) -> String {
    let mut host: String = raw
        .replace("(dot)", ".")
        .replace("[dot]", ".")
        .replace("[.]", ".")
        .replace('닷', ".")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if let Some(h) = host.strip_prefix("www.") {
        host = h.to_owned();
    }
    host
}

fn domains(v: &View, field: TextField) -> Vec<Ident> {
    let mut out = Vec::new();
    // Every host ends in a Latin TLD: most Korean listings have no Latin
    // letter at all and skip the regex.
    if !v.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return out;
    }
    for c in URL.captures_iter(v.as_str()) {
        let (Some(whole), Some(host)) = (c.get(0), c.name("host").or_else(|| c.name("host2")))
        else {
            continue;
        };
        let host = clean_host(host.as_str());
        // Version numbers and abbreviations look like hosts: need a letter label.
        if !host
            .split('.')
            .next()
            .is_some_and(|l| l.chars().any(|c| c.is_ascii_alphabetic()))
        {
            continue;
        }
        if let Some(sp) = span(v, field, whole.start(), whole.end()) {
            out.push(Ident {
                kind: IdentKind::Domain,
                value: host,
                span: sp,
            });
        }
    }
    out
}

// --- messenger IDs -----------------------------------------------------------

/// Messenger service names, matched on the COMPACT view so that disguised
/// names (카.톡, ㅋㅏㅌㅗㄱ, ｔｅｌｅｇｒａｍ) are found too.
const SERVICES: &[(&str, &str)] = &[
    ("카톡", "kakao"),
    ("카카오톡", "kakao"),
    ("카카오", "kakao"),
    ("갠톡", "kakao"),
    ("kakaotalk", "kakao"),
    ("kakao", "kakao"),
    ("katalk", "kakao"),
    ("텔레그램", "telegram"),
    ("텔레", "telegram"),
    ("telegram", "telegram"),
    ("라인", "line"),
    ("line", "line"),
    ("위챗", "wechat"),
    ("wechat", "wechat"),
    ("왓츠앱", "whatsapp"),
    ("whatsapp", "whatsapp"),
];

static SERVICE_AC: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(
            SERVICES
                .iter()
                .map(|(name, _)| crate::normalize::compact_key(name)),
        )
        .unwrap_or_else(|e| panic!("built-in service automaton: {e}"))
});

/// What follows a service name up to the ID: "아이디:", " id = ", "은 ", "@".
static ID_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^ ?(?:아이디|아뒤|아디|id|주소)? ?(?:[:=>\-→]|은|는|로|으로)? ?@?(?P<id>[a-z](?:[-._*/~^,]{0,3}[a-z0-9]){2,40})(?-u:\b)")
        .unwrap_or_else(|e| panic!("built-in messenger id regex: {e}"))
});

/// Words that follow a messenger name but are not IDs.
const NOT_IDS: &[&str] = &[
    "id", "no", "only", "me", "us", "or", "and", "the", "please", "pls", "plz", "via", "chat",
    "message", "msg", "dm", "for", "to", "ok", "com", "open", "app", "gram", "talk",
];

/// A messenger ID's canonical form: lower-case letters and digits.
pub fn canonical_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn messenger_ids(n: &Normalized, field: TextField, out: &mut Vec<Ident>) {
    let (compact, folded) = (&n.compact, &n.folded);
    for m in SERVICE_AC.find_iter(compact.as_str()) {
        let service = SERVICES[m.pattern().as_usize()].1;
        let Some((orig_start, orig_end)) = compact.original_span(m.start(), m.end()) else {
            continue;
        };
        // A Latin name glued to other Latin letters is part of a word (online).
        let start_byte = folded.byte_at_original(orig_start);
        let latin_before = folded.as_str()[..start_byte]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphabetic());
        if latin_before {
            continue;
        }
        let after = folded.byte_at_original(orig_end);
        let Some(c) = ID_AFTER.captures(&folded.as_str()[after..]) else {
            continue;
        };
        let Some(id) = c.name("id") else { continue };
        // Canonical: the letters and digits only, so `scam_kim`, `scam.kim`
        // and `s-c-a-m-k-i-m` are one identifier.
        let canonical = canonical_id(id.as_str());
        let id_str = canonical.as_str();
        if NOT_IDS.contains(&id_str) || id_str.len() < 3 {
            continue;
        }
        let (a, b) = (start_byte, after + id.end());
        if let Some(sp) = span(folded, field, a.min(b), b) {
            out.push(Ident {
                kind: IdentKind::MessengerId,
                value: format!("{service}:{id_str}"),
                span: sp,
            });
        }
    }
    let v = folded;
    // Links that are messenger IDs: t.me/NAME, open.kakao.com/o/CODE, line.me/ti/p/NAME.
    static LINK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?P<host>t\.me|telegram\.me|open\.kakao\.com/o|line\.me/ti/p)/(?P<id>[a-z0-9_~+-]{3,40})")
            .unwrap_or_else(|e| panic!("built-in link regex: {e}"))
    });
    {
        for c in LINK.captures_iter(v.as_str()) {
            let (Some(whole), Some(host), Some(id)) = (c.get(0), c.name("host"), c.name("id"))
            else {
                continue;
            };
            let service = if host.as_str().contains("kakao") {
                "kakao_open"
            } else if host.as_str().contains("line") {
                "line"
            } else {
                "telegram"
            };
            if let Some(sp) = span(v, field, whole.start(), whole.end()) {
                out.push(Ident {
                    kind: IdentKind::MessengerId,
                    value: format!("{service}:{}", canonical_id(id.as_str())),
                    span: sp,
                });
            }
        }
    }
}

// --- phone numbers -----------------------------------------------------------

/// Runs of digits in the view, each a list of groups (byte ranges) separated
/// by at most two separator characters.
fn digit_runs(text: &str) -> Vec<Vec<(usize, usize)>> {
    let mut runs = Vec::new();
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return runs;
    }
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut gap = 0usize;
    let mut cur: Option<(usize, usize)> = None;
    // Bytes, not chars: digits and separators are ASCII, and every byte of
    // a multi-byte character is neither, so it ends the run just as the
    // character would.
    for (i, &c) in text.as_bytes().iter().enumerate() {
        if c.is_ascii_digit() {
            cur = Some(match cur {
                Some((s, _)) => (s, i + 1),
                None => (i, i + 1),
            });
            gap = 0;
            continue;
        }
        if let Some(g) = cur.take() {
            groups.push(g);
        }
        let separator = matches!(
            c,
            b' ' | b'-' | b'.' | b')' | b'(' | b'/' | b'_' | b'~' | b'*' | b',' | b':' | b'+'
        );
        gap += 1;
        if !separator || gap > 3 {
            if !groups.is_empty() {
                runs.push(std::mem::take(&mut groups));
            }
            gap = 0;
        }
    }
    if let Some(g) = cur {
        groups.push(g);
    }
    if !groups.is_empty() {
        runs.push(groups);
    }
    runs
}

fn is_phone(d: &str) -> bool {
    let n = d.len();
    let b = d.as_bytes();
    if !(9..=12).contains(&n) || b[0] != b'0' {
        return false;
    }
    match b[1] {
        b'1' => matches!(b[2], b'0' | b'1' | b'6' | b'7' | b'8' | b'9') && (n == 10 || n == 11),
        // 070 internet phones; 050x personal safe numbers are 11-12 digits.
        b'7' => b[2] == b'0' && (n == 10 || n == 11),
        b'5' => b[2] == b'0' && (n == 11 || n == 12),
        b'2' => n == 9 || n == 10,
        b'3'..=b'6' => (b'1'..=b'5').contains(&b[2]) && (n == 10 || n == 11),
        _ => false,
    }
}

fn phones(v: &View, field: TextField, runs: &[Vec<(usize, usize)>]) -> Vec<Ident> {
    let text = v.as_str();
    let mut out = Vec::new();
    for run in runs {
        // The shortest phone number has 9 digits.
        if run.iter().map(|(s, e)| e - s).sum::<usize>() < 9 {
            continue;
        }
        let mut g = 0;
        while g < run.len() {
            let mut digits = String::new();
            let mut found = None;
            for (h, &(s, e)) in run.iter().enumerate().skip(g) {
                digits.push_str(&text[s..e]);
                // +82 10-1234-5678: the country code replaces the leading 0.
                let candidate = match digits.strip_prefix("82") {
                    Some(rest) if !rest.starts_with('0') => format!("0{rest}"),
                    _ => digits.clone(),
                };
                if digits.len() > 13 {
                    break;
                }
                if is_phone(&candidate) {
                    // Prefer the longest: 010-1234-5678 over 010-1234-567.
                    found = Some((h, candidate));
                }
            }
            match found {
                Some((h, value)) => {
                    if let Some(sp) = span(v, field, run[g].0, run[h].1) {
                        out.push(Ident {
                            kind: IdentKind::Phone,
                            value,
                            span: sp,
                        });
                    }
                    g = h + 1;
                }
                None => g += 1,
            }
        }
    }
    out
}

// --- bank accounts -------------------------------------------------------------

static BANK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:국민|신한|우리|하나|농협|nh|kb|기업|ibk|카카오\s?뱅크|카뱅|케이\s?뱅크|토스\s?뱅크|토스|새마을|우체국|수협|신협|씨티|sc제일|제일|대구|부산|경남|광주|전북|제주|산업|저축)(?:은행)?|계좌|입금|송금|이체|account|bank",
    )
    .unwrap_or_else(|e| panic!("built-in bank regex: {e}"))
});

fn accounts(
    v: &View,
    field: TextField,
    runs: &[Vec<(usize, usize)>],
    phones: &[Ident],
    out: &mut Vec<Ident>,
) {
    let text = v.as_str();
    // Bank and transfer words, looked for only once a number could be an
    // account (most listings have none).
    let mut cues: Option<Vec<usize>> = None;
    for run in runs {
        if !(10..=14).contains(&run.iter().map(|(s, e)| e - s).sum::<usize>()) {
            continue;
        }
        let digits: String = run.iter().map(|&(s, e)| &text[s..e]).collect();
        let (start, end) = (run[0].0, run[run.len() - 1].1);
        if is_phone(&digits) {
            continue;
        }
        let overlaps_phone = phones.iter().any(|p| {
            v.original_span(start, end)
                .is_some_and(|(s, e)| s < p.span.end && p.span.start < e)
        });
        if overlaps_phone {
            continue;
        }
        // A bank or transfer word shortly before, or the grouped shape of an account.
        let cues = cues.get_or_insert_with(|| BANK.find_iter(text).map(|m| m.end()).collect());
        let cued = cues
            .iter()
            .any(|&c| c <= start && v.char_index(start) - v.char_index(c) <= 12);
        if cued || run.len() >= 3 {
            if let Some(sp) = span(v, field, start, end) {
                out.push(Ident {
                    kind: IdentKind::BankAccount,
                    value: digits,
                    span: sp,
                });
            }
        }
    }
}

// --- prices ----------------------------------------------------------------------

static PRICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:₩ ?|\\ ?)?(?P<num>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+(?:\.[0-9]+)?) ?(?P<unit>억|천만|백만|만|천)? ?(?P<won>원|won|krw)?")
        .unwrap_or_else(|e| panic!("built-in price regex: {e}"))
});

fn prices(text: &str, out: &mut Vec<u64>) {
    // The regex finds the spans (a DFA, cheap); the parts are read from the
    // matched text by hand rather than with capture groups, which cost a
    // second, slower search for every number in the text. The pattern is a
    // chain of greedy optional parts, so reading them greedily in order
    // gives exactly the groups the regex would.
    for m in PRICE.find_iter(text) {
        let s = m.as_str();
        let (has_symbol, rest) = match s.strip_prefix('₩').or_else(|| s.strip_prefix('\\')) {
            Some(r) => (true, r.strip_prefix(' ').unwrap_or(r)),
            None => (false, s),
        };
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b',' || *b == b'.')
            .count();
        let (num, rest) = rest.split_at(num_len);
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let unit = ["억", "천만", "백만", "만", "천"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let rest = &rest[unit.map_or(0, str::len)..];
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let won = ["원", "won", "krw"].iter().any(|w| rest.starts_with(w));
        if unit.is_none() && !won && !has_symbol {
            continue;
        }
        out.extend(won_amount(num, unit));
    }
}

/// A number (with thousands commas) and its Korean unit in won, when that
/// is a plausible price.
fn won_amount(num: &str, unit: Option<&str>) -> Option<u64> {
    let n = num.replace(',', "").parse::<f64>().ok()?;
    let mult = match unit {
        Some("억") => 1e8,
        Some("천만") => 1e7,
        Some("백만") => 1e6,
        Some("만") => 1e4,
        Some("천") => 1e3,
        _ => 1.0,
    };
    let krw = n * mult;
    (100.0..1e11).contains(&krw).then(|| krw.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn facts(body: &str) -> Facts {
        extract(&normalize(""), &normalize(body))
    }

    fn values(f: &Facts, k: IdentKind) -> Vec<String> {
        f.of(k).map(|i| i.value.clone()).collect()
    }

    #[test]
    fn phones_in_disguise() {
        for s in [
            "연락 010-1234-5678",
            "010 1234 5678 문자주세요",
            "공일공-일이삼사-오육칠팔",
            "０１０.１２３４.５６７８",
            "+82 10 1234 5678",
            "⓪①⓪ ①②③④ ⑤⑥⑦⑧",
            "아이폰 13 01012345678",
        ] {
            assert_eq!(values(&facts(s), IdentKind::Phone), ["01012345678"], "{s}");
        }
        assert!(values(&facts("가격 350,000원 2023년 구매"), IdentKind::Phone).is_empty());
    }

    #[test]
    fn messenger_ids_and_links() {
        let f = facts("카톡 아이디: scam_kim 으로 연락");
        assert_eq!(values(&f, IdentKind::MessengerId), ["kakao:scamkim"]);
        let f = facts("라_인 아이디 s-m-a-r-t-.-g-i-f-t-8 로만");
        assert_eq!(values(&f, IdentKind::MessengerId), ["line:smartgift8"]);
        let f = facts("텔레 @fastdeal77");
        assert_eq!(values(&f, IdentKind::MessengerId), ["telegram:fastdeal77"]);
        let f = facts("open.kakao.com/o/sAbc123 들어오세요");
        assert!(values(&f, IdentKind::MessengerId).contains(&"kakao_open:sabc123".to_string()));
        assert!(values(&facts("카톡 사절합니다"), IdentKind::MessengerId).is_empty());
        assert!(values(&facts("No Telegram, no WhatsApp"), IdentKind::MessengerId).is_empty());
        let f = facts("카톡abc123 주세요");
        assert_eq!(values(&f, IdentKind::MessengerId), ["kakao:abc123"]);
    }

    #[test]
    fn domains_and_accounts() {
        let f = facts("안전결제 https://safe-pay.co.kr/order?id=1 에서");
        assert_eq!(values(&f, IdentKind::Domain), ["safe-pay.co.kr"]);
        let f = facts("joonggo-safe (dot) com 접속");
        assert_eq!(values(&f, IdentKind::Domain), ["joonggo-safe.com"]);
        assert!(values(&facts("버전 1.2.3 입니다"), IdentKind::Domain).is_empty());
        let f = facts("국민 123456-01-234567 김철수 선입금");
        assert_eq!(values(&f, IdentKind::BankAccount), ["12345601234567"]);
    }

    /// The capture-group reading of [`PRICE`] that `prices` replaces.
    fn prices_by_captures(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for c in PRICE.captures_iter(text) {
            let Some(num) = c.name("num") else { continue };
            let (unit, won) = (c.name("unit"), c.name("won"));
            let s = c.get(0).map_or("", |m| m.as_str());
            let has_symbol = s.starts_with('₩') || s.starts_with('\\');
            if unit.is_none() && won.is_none() && !has_symbol {
                continue;
            }
            out.extend(won_amount(num.as_str(), unit.map(|u| u.as_str())));
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn prices_read_by_hand_equal_the_capture_groups(
            text in "([0-9]{1,5}|,|\\.| |  |₩|\\\\|억|천만|천|백만|만|원|won|krw|개|a){0,12}"
        ) {
            let mut by_hand = Vec::new();
            prices(&text, &mut by_hand);
            proptest::prop_assert_eq!(by_hand, prices_by_captures(&text));
        }
    }

    #[test]
    fn prices_in_text() {
        let mut p = facts("35만원에 팝니다, 원가 1,200,000원").prices;
        p.sort();
        assert_eq!(p, [350_000, 1_200_000]);
        assert!(facts("아이폰 13 128기가").prices.is_empty());
    }
}

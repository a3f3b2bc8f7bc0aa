//! Korean-aware text normalization with an offset map back to the original.
//!
//! Scammers write so that a plain keyword filter misses them: 카.톡, ㅋㅏㅌㅗㄱ,
//! ｋａｋａｏ, 공일공-①②③④-5678, zero-width spaces inside words, Cyrillic `о`
//! for Latin `o`. Normalization undoes that in one pass over the characters
//! and produces two *views* of the text, each remembering, for every character
//! it holds, which characters of the original it came from:
//!
//! * [`Normalized::folded`]: compatibility-folded (NFKD per character with the
//!   combining marks dropped, which folds fullwidth, circled and styled letters
//!   and digits, and accents), lower-cased, invisible and control characters
//!   removed, Hangul compatibility jamo recomposed into syllables, homoglyphs
//!   from Cyrillic and Greek folded to Latin, Korean digit words turned into
//!   digits, whitespace collapsed. Regex rules and extractors read this view:
//!   it keeps separators, so `\b`, URLs and phone groups still make sense.
//! * [`Normalized::compact`]: the folded view with every separator between
//!   letters removed (spaces, punctuation, symbols, emoji: 카 톡, 카/톡, 카♡톡
//!   all become 카톡) and leetspeak folded where a digit or symbol sits inside
//!   a Latin word (te1egram, c@sh). The keyword automaton reads this view, and
//!   keywords are compiled through the same function, so both sides agree.
//!
//! Why not NFKC? NFKC turns the compatibility jamo ㅋ (U+314B) into the
//! conjoining initial U+110F, and a final consonant typed as a compatibility
//! jamo becomes an *initial*: NFKC alone never turns ㅋㅏㅌㅗㄱ into 카톡. We
//! decompose per character with the `unicode-normalization` crate and compose
//! Hangul ourselves; syllable arithmetic (U+AC00 + (L·21 + V)·28 + T) is exact.
//! Precomposed syllables and ASCII — nearly all of a real listing — take a
//! fast path that touches no table.
//!
//! Offsets: a match found at bytes `a..b` of a view maps to characters
//! `start..end` of the original via [`View::original_span`]; `end` never
//! exceeds the original's character count, and `start < end`.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// One character of a view and the original characters it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    c: char,
    /// First original character (char index).
    s: u32,
    /// One past the last original character.
    e: u32,
}

/// A normalized rendering of a text, with its offset map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    text: String,
    /// For each character of `text`: its byte offset in `text` and the original
    /// character range it came from.
    map: Vec<(u32, u32, u32)>,
}

impl View {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Number of characters in the view.
    pub fn char_len(&self) -> usize {
        self.map.len()
    }

    /// Maps a byte range of the view (as returned by a matcher) to a character
    /// range of the original text. Returns `None` for an empty or out-of-range
    /// input.
    pub fn original_span(&self, start: usize, end: usize) -> Option<(u32, u32)> {
        if start >= end || end > self.text.len() {
            return None;
        }
        let first = self.map.partition_point(|&(b, _, _)| (b as usize) < start);
        let last = self.map.partition_point(|&(b, _, _)| (b as usize) < end);
        if first >= last {
            return None;
        }
        let s = self.map[first..last].iter().map(|m| m.1).min()?;
        let e = self.map[first..last].iter().map(|m| m.2).max()?;
        Some((s, e))
    }

    /// The character index in the view of a byte offset (for windows measured
    /// in characters).
    pub fn char_index(&self, byte: usize) -> usize {
        self.map.partition_point(|&(b, _, _)| (b as usize) < byte)
    }

    /// The byte offset of the first character of the view that comes from
    /// original character `orig` or later (the view's length if none).
    pub fn byte_at_original(&self, orig: u32) -> usize {
        let i = self.map.partition_point(|&(_, s, _)| s < orig);
        self.map.get(i).map_or(self.text.len(), |m| m.0 as usize)
    }

    #[inline]
    fn push(&mut self, it: Item) {
        // Text lengths are bounded by the decoder's limits (a few hundred
        // KiB), far below u32::MAX, so the cast cannot truncate.
        self.map.push((self.text.len() as u32, it.s, it.e));
        self.text.push(it.c);
    }
}

/// The two views of one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    pub folded: View,
    pub compact: View,
}

/// Normalizes a text; see the module documentation for what that means.
pub fn normalize(original: &str) -> Normalized {
    let mut items = Vec::with_capacity(original.len());
    // Most listings have no jamo and no digit words: skip those stages then.
    let (mut jamo_seen, mut digit_words_seen) = (false, 0usize);
    for (i, c) in original.chars().enumerate() {
        let i = i as u32;
        // Fast path: ASCII letters, digits and precomposed syllables fold to
        // themselves (lower-cased).
        if c.is_ascii_alphanumeric() || c == ' ' {
            items.push(Item {
                c: c.to_ascii_lowercase(),
                s: i,
                e: i + 1,
            });
            continue;
        }
        if is_syllable(c) {
            digit_words_seen += usize::from(digit_word(c).is_some());
            items.push(Item { c, s: i, e: i + 1 });
            continue;
        }
        fold_char(c, &mut |c| {
            jamo_seen |= is_jamo(c);
            digit_words_seen += usize::from(digit_word(c).is_some());
            items.push(Item { c, s: i, e: i + 1 })
        });
    }
    if jamo_seen {
        items = compose_jamo(&items);
        // Jamo may have composed into digit words (ㄱㅗㅇㅇㅣㄹ → 공일).
        digit_words_seen = items.iter().filter(|it| digit_word(it.c).is_some()).count();
    }
    if digit_words_seen >= 2 {
        items = digit_words(items);
    }
    build_views(&items)
}

/// Normalizes a keyword the way the compact view normalizes text, so the two
/// can be compared byte for byte.
pub fn compact_key(keyword: &str) -> String {
    normalize(keyword).compact.text
}

// ---------------------------------------------------------------------------
// Stage 1: per-character folding.

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{20E3}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Characters NFKD leaves alone that scammers use as look-alikes.
fn special(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{3002}' | '\u{FF61}' | '\u{00B7}' | '\u{30FB}' | '\u{FF65}' | '\u{2219}'
        | '\u{318D}' | '\u{119E}' => ".",
        '\u{30FC}' | '\u{FF70}' | '\u{2010}'..='\u{2015}' | '\u{2212}' => "-",
        // Negative circled and dingbat circled digits have no decomposition.
        '\u{24FF}' | '\u{1F10C}' => "0",
        '\u{2776}'..='\u{277F}' => DINGBAT_DIGITS[(c as usize) - 0x2776],
        '\u{2780}'..='\u{2789}' => DINGBAT_DIGITS[(c as usize) - 0x2780],
        '\u{278A}'..='\u{2793}' => DINGBAT_DIGITS[(c as usize) - 0x278A],
        '\u{24EB}'..='\u{24F4}' => TEENS[(c as usize) - 0x24EB],
        '\u{24F5}'..='\u{24FE}' => DINGBAT_DIGITS[(c as usize) - 0x24F5],
        _ => return None,
    })
}

const DINGBAT_DIGITS: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
const TEENS: [&str; 10] = ["11", "12", "13", "14", "15", "16", "17", "18", "19", "20"];

/// Cyrillic and Greek letters that look like Latin ones (after lower-casing).
fn homoglyph(c: char) -> char {
    match c {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' => 'e',
        'ɡ' => 'g',
        'һ' | 'н' => 'h',
        'і' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'о' | 'ο' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        _ => c,
    }
}

fn fold_char(c: char, out: &mut impl FnMut(char)) {
    if c.is_ascii() {
        match c {
            '\t' | '\n' | '\r' | '\x0B' | '\x0C' => out(' '),
            c if c.is_ascii_control() => {}
            c => out(c.to_ascii_lowercase()),
        }
        return;
    }
    if is_invisible(c) || c.is_control() {
        return;
    }
    if let Some(s) = special(c) {
        s.chars().for_each(&mut *out);
        return;
    }
    if is_jamo(c) {
        out(c);
        return;
    }
    if c.is_whitespace() {
        out(' ');
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) || is_invisible(d) {
            return;
        }
        if d.is_ascii() {
            out(d.to_ascii_lowercase());
        } else if let Some(s) = special(d) {
            s.chars().for_each(&mut *out);
        } else if d.is_whitespace() {
            out(' ');
        } else {
            for l in d.to_lowercase() {
                out(homoglyph(l));
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Stage 2: Hangul jamo composition.

/// A jamo, whichever of its Unicode forms it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jamo {
    /// Index into the 30 compatibility consonants U+3131..U+314E.
    Consonant(u8),
    /// Vowel index 0..21 (U+314F.. / U+1161..).
    Vowel(u8),
}

fn is_jamo(c: char) -> bool {
    matches!(c, '\u{1100}'..='\u{11FF}' | '\u{3131}'..='\u{318E}')
}

/// Compatibility consonant index -> (initial index, final index); 255 = none.
const CONSONANT: [(u8, u8); 30] = [
    (0, 1),    // ㄱ
    (1, 2),    // ㄲ
    (255, 3),  // ㄳ
    (2, 4),    // ㄴ
    (255, 5),  // ㄵ
    (255, 6),  // ㄶ
    (3, 7),    // ㄷ
    (4, 255),  // ㄸ
    (5, 8),    // ㄹ
    (255, 9),  // ㄺ
    (255, 10), // ㄻ
    (255, 11), // ㄼ
    (255, 12), // ㄽ
    (255, 13), // ㄾ
    (255, 14), // ㄿ
    (255, 15), // ㅀ
    (6, 16),   // ㅁ
    (7, 17),   // ㅂ
    (8, 255),  // ㅃ
    (255, 18), // ㅄ
    (9, 19),   // ㅅ
    (10, 20),  // ㅆ
    (11, 21),  // ㅇ
    (12, 22),  // ㅈ
    (13, 255), // ㅉ
    (14, 23),  // ㅊ
    (15, 24),  // ㅋ
    (16, 25),  // ㅌ
    (17, 26),  // ㅍ
    (18, 27),  // ㅎ
];

/// Initial index -> compatibility consonant index.
const INITIAL_TO_COMPAT: [u8; 19] = [
    0, 1, 3, 6, 7, 8, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
];
/// Final index (1..=27) - 1 -> compatibility consonant index.
const FINAL_TO_COMPAT: [u8; 27] = [
    0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 25, 26, 27, 28,
    29,
];

fn jamo(c: char) -> Option<Jamo> {
    let u = c as u32;
    match u {
        0x3131..=0x314E => Some(Jamo::Consonant((u - 0x3131) as u8)),
        0x314F..=0x3163 => Some(Jamo::Vowel((u - 0x314F) as u8)),
        0x1100..=0x1112 => Some(Jamo::Consonant(INITIAL_TO_COMPAT[(u - 0x1100) as usize])),
        0x1161..=0x1175 => Some(Jamo::Vowel((u - 0x1161) as u8)),
        0x11A8..=0x11C2 => Some(Jamo::Consonant(FINAL_TO_COMPAT[(u - 0x11A8) as usize])),
        _ => None,
    }
}

fn compat_char(j: Jamo) -> char {
    let u = match j {
        Jamo::Consonant(i) => 0x3131 + u32::from(i),
        Jamo::Vowel(v) => 0x314F + u32::from(v),
    };
    char::from_u32(u).unwrap_or('\u{FFFD}')
}

fn compound_vowel(a: u8, b: u8) -> Option<u8> {
    Some(match (a, b) {
        (8, 0) => 9,
        (8, 1) => 10,
        (8, 20) => 11,
        (13, 4) => 14,
        (13, 5) => 15,
        (13, 20) => 16,
        (18, 20) => 19,
        _ => return None,
    })
}

fn compound_final(a: u8, b: u8) -> Option<u8> {
    // Compatibility consonant indexes.
    Some(match (a, b) {
        (0, 20) => 2,
        (3, 23) => 4,
        (3, 29) => 5,
        (8, 0) => 9,
        (8, 16) => 10,
        (8, 17) => 11,
        (8, 20) => 12,
        (8, 27) => 13,
        (8, 28) => 14,
        (8, 29) => 15,
        (17, 20) => 19,
        _ => return None,
    })
}

/// A Latin letter standing in for a vowel right after a consonant jamo
/// (ㅋr톡, ㅇl디).
fn latin_vowel(c: char) -> Option<u8> {
    match c {
        'r' => Some(0),
        'l' | 'i' | '1' | '|' => Some(20),
        _ => None,
    }
}

fn compose_jamo(items: &[Item]) -> Vec<Item> {
    let mut out = Vec::with_capacity(items.len());
    let mut i = 0;
    let as_jamo = |k: usize| items.get(k).and_then(|it| jamo(it.c));
    let is_vowel_at = |k: usize| matches!(as_jamo(k), Some(Jamo::Vowel(_)));
    while i < items.len() {
        let it = items[i];
        let Some(j) = jamo(it.c) else {
            out.push(it);
            i += 1;
            continue;
        };
        let Jamo::Consonant(c0) = j else {
            out.push(Item {
                c: compat_char(j),
                ..it
            });
            i += 1;
            continue;
        };
        let initial = CONSONANT[c0 as usize].0;
        // The vowel: a vowel jamo, or a Latin look-alike not followed by a letter.
        let vowel = match items.get(i + 1) {
            Some(next) => match jamo(next.c) {
                Some(Jamo::Vowel(v)) => Some(v),
                None => latin_vowel(next.c)
                    .filter(|_| !items.get(i + 2).is_some_and(|n| n.c.is_ascii_alphabetic())),
                _ => None,
            },
            None => None,
        };
        let (Some(mut v), true) = (vowel, initial != 255) else {
            out.push(Item {
                c: compat_char(j),
                ..it
            });
            i += 1;
            continue;
        };
        let mut end = i + 2;
        if let Some(Jamo::Vowel(v2)) = as_jamo(end) {
            if let Some(cv) = compound_vowel(v, v2) {
                v = cv;
                end += 1;
            }
        }
        // A final consonant: one not followed by a vowel (else it starts the
        // next syllable), possibly a compound of two.
        let mut t = 0u8;
        if let Some(Jamo::Consonant(f1)) = as_jamo(end) {
            let fin1 = CONSONANT[f1 as usize].1;
            if fin1 != 255 && !is_vowel_at(end + 1) {
                t = fin1;
                end += 1;
                if let Some(Jamo::Consonant(f2)) = as_jamo(end) {
                    if let Some(cf) = compound_final(f1, f2) {
                        if !is_vowel_at(end + 1) {
                            t = CONSONANT[cf as usize].1;
                            end += 1;
                        }
                    }
                }
            }
        }
        let code = 0xAC00 + (u32::from(initial) * 21 + u32::from(v)) * 28 + u32::from(t);
        let c = char::from_u32(code).unwrap_or('\u{FFFD}');
        out.push(Item {
            c,
            s: it.s,
            e: items[end - 1].e,
        });
        i = end;
    }
    out
}

// ---------------------------------------------------------------------------
// Stage 3: Korean digit words (공일공 -> 010).

/// Digit value (ASCII) of each Hangul syllable, 0 for none: a table lookup
/// instead of a twelve-way `match` on every syllable of every listing.
static DIGIT_SYLLABLES: [u8; 11_172] = {
    let mut t = [0u8; 11_172];
    let pairs: [(char, u8); 12] = [
        ('공', b'0'),
        ('영', b'0'),
        ('일', b'1'),
        ('이', b'2'),
        ('삼', b'3'),
        ('사', b'4'),
        ('오', b'5'),
        ('육', b'6'),
        ('륙', b'6'),
        ('칠', b'7'),
        ('팔', b'8'),
        ('구', b'9'),
    ];
    let mut i = 0;
    while i < pairs.len() {
        t[pairs[i].0 as usize - 0xAC00] = pairs[i].1;
        i += 1;
    }
    t
};

fn digit_word(c: char) -> Option<char> {
    let i = (c as u32).wrapping_sub(0xAC00) as usize;
    match DIGIT_SYLLABLES.get(i) {
        Some(&d) if d != 0 => Some(d as char),
        _ => None,
    }
}

/// A separator that may sit between the digits of an obfuscated number.
fn is_number_separator(c: char) -> bool {
    !is_letter_or_digit(c) && !is_jamo(c)
}

fn digit_words(mut items: Vec<Item>) -> Vec<Item> {
    let n = items.len();
    let mut i = 0;
    while i < n {
        let c = items[i].c;
        if digit_word(c).is_none() && !c.is_ascii_digit() {
            i += 1;
            continue;
        }
        // Extend the run over digits, digit words and short separator gaps,
        // noting the longest unbroken group.
        let start = i;
        let (mut words, mut group, mut longest, mut end) = (0usize, 0usize, 0usize, i);
        let mut k = i;
        while k < n {
            let c = items[k].c;
            if digit_word(c).is_some() {
                words += 1;
            } else if c.is_ascii_digit() {
            } else if is_number_separator(c) {
                let gap_end = (k..n)
                    .find(|&g| !is_number_separator(items[g].c))
                    .unwrap_or(n);
                if gap_end - k > 2 || gap_end == n {
                    break;
                }
                let next = items[gap_end].c;
                if digit_word(next).is_none() && !next.is_ascii_digit() {
                    break;
                }
                group = 0;
                k = gap_end;
                continue;
            } else {
                break;
            }
            group += 1;
            longest = longest.max(group);
            k += 1;
            end = k;
        }
        // A run glued to other Hangul is a word (사이즈, 오일), not a number,
        // unless it is long enough that no word explains it; short groups of
        // digit syllables apart from each other are words too (이사 공구).
        let hangul_at = |idx: Option<usize>| {
            idx.and_then(|x| items.get(x))
                .is_some_and(|it| ('\u{AC00}'..='\u{D7A3}').contains(&it.c))
        };
        let glued = hangul_at(start.checked_sub(1)) || hangul_at(Some(end));
        let qualifies = if glued {
            words >= 4 && longest >= 4
        } else {
            words >= 2 && longest >= 3
        };
        if qualifies {
            for it in &mut items[start..end] {
                if let Some(d) = digit_word(it.c) {
                    it.c = d;
                }
            }
        }
        i = end.max(start + 1);
    }
    items
}

// ---------------------------------------------------------------------------
// Stage 4: the two views.

fn leet_letter(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '|' | '!' => 'l',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        _ => return None,
    })
}

/// `char::is_alphanumeric` with the two common cases first.
fn is_letter_or_digit(c: char) -> bool {
    c.is_ascii_alphanumeric() || is_syllable(c) || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

fn build_views(items: &[Item]) -> Normalized {
    let mut folded = View {
        text: String::with_capacity(items.len() * 3),
        map: Vec::with_capacity(items.len()),
    };
    let mut compact = View {
        text: String::with_capacity(items.len() * 3),
        map: Vec::with_capacity(items.len()),
    };
    let latin = |k: Option<usize>| {
        k.and_then(|k| items.get(k))
            .is_some_and(|it| it.c.is_ascii_lowercase())
    };
    let digit = |k: Option<usize>| {
        k.and_then(|k| items.get(k))
            .is_some_and(|it| it.c.is_ascii_digit())
    };
    let mut last_space = true;
    for (k, it) in items.iter().enumerate() {
        if is_syllable(it.c) || it.c.is_ascii_lowercase() {
            last_space = false;
            folded.push(*it);
            compact.push(*it);
            continue;
        }
        if it.c == ' ' {
            if !last_space {
                folded.push(*it);
            }
            last_space = true;
            continue;
        }
        last_space = false;
        folded.push(*it);

        let (prev, next) = (k.checked_sub(1), Some(k + 1));
        if it.c.is_ascii_digit() || matches!(it.c, '@' | '$' | '|' | '!') {
            let leet = leet_letter(it.c).filter(|_| {
                if it.c.is_ascii_digit() {
                    // A lone digit touching a Latin letter: te1egram, 0pen.
                    (latin(prev) || latin(next)) && !digit(prev) && !digit(next)
                } else {
                    latin(prev) && latin(next)
                }
            });
            if let Some(l) = leet {
                compact.push(Item { c: l, ..*it });
                continue;
            }
        }
        if is_letter_or_digit(it.c) || is_jamo(it.c) {
            compact.push(*it);
        }
    }
    if folded.text.ends_with(' ') {
        folded.text.pop();
        folded.map.pop();
    }
    Normalized { folded, compact }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(s: &str) -> String {
        normalize(s).folded.text
    }
    fn compact(s: &str) -> String {
        normalize(s).compact.text
    }

    #[test]
    fn jamo_recomposition() {
        assert_eq!(compact("ㅋㅏㅌㅗㄱ"), "카톡");
        assert_eq!(compact("카ㅌㅗㄱ"), "카톡");
        assert_eq!(compact("ㅋr톡"), "카톡");
        assert_eq!(compact("ㅅㅓㄴㅇㅣㅂㄱㅡㅁ"), "선입금");
        assert_eq!(compact("ㄷㅏㄺ"), "닭");
        assert_eq!(compact("ㅎㅘㄱㅇㅣㄴ"), "확인");
        assert_eq!(compact("ㅋㅋㅋ"), "ㅋㅋㅋ");
        assert_eq!(compact("ㄹㅍ"), "ㄹㅍ");
        // conjoining jamo (what NFKC produces) compose the same way
        assert_eq!(compact("\u{110F}\u{1161}\u{1110}\u{1169}\u{11A8}"), "카톡");
    }

    #[test]
    fn separators_and_invisibles() {
        for s in [
            "카.톡",
            "카 톡",
            "카/톡",
            "카♡톡",
            "카\u{200B}톡",
            "카\u{FEFF}톡",
            "카。톡",
        ] {
            assert_eq!(compact(s), "카톡", "{s}");
        }
        assert_eq!(folded("  카   톡\n\t아이디 "), "카 톡 아이디");
    }

    #[test]
    fn width_case_and_homoglyphs() {
        assert_eq!(compact("ＫＡＫＡＯ"), "kakao");
        assert_eq!(compact("Теlеgrаm"), "telegram"); // Cyrillic Т, е, а
        assert_eq!(compact("te1egram"), "telegram");
        assert_eq!(compact("c@sh"), "cash");
        assert_eq!(compact("iphone 13"), "iphone13");
        assert_eq!(folded("Café"), "cafe");
    }

    #[test]
    fn digits_in_disguise() {
        assert_eq!(compact("공일공"), "010");
        assert_eq!(compact("⓪①⓪"), "010");
        assert_eq!(compact("❶❷❸"), "123");
        assert_eq!(compact("０１０"), "010");
        assert_eq!(compact("0\u{FE0F}\u{20E3}1\u{FE0F}\u{20E3}"), "01");
        assert_eq!(folded("공일공-일이삼사-오육칠팔"), "010-1234-5678");
        assert_eq!(folded("공1공-1234"), "010-1234");
        // words that merely contain digit syllables stay words
        assert_eq!(folded("사이즈 오일 이사 공구"), "사이즈 오일 이사 공구");
    }

    #[test]
    fn offsets_point_into_the_original() {
        let s = "연락은 ㅋㅏㅌㅗㄱ 주세요";
        let n = normalize(s);
        let at = n.compact.as_str().find("카톡").unwrap();
        let (a, b) = n.compact.original_span(at, at + "카톡".len()).unwrap();
        let orig: String = s.chars().skip(a as usize).take((b - a) as usize).collect();
        assert_eq!(orig, "ㅋㅏㅌㅗㄱ");
        assert_eq!(n.compact.original_span(0, 0), None);
        assert_eq!(n.compact.original_span(0, 10_000), None);
    }
}

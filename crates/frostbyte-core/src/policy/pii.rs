//! PII detection and redaction.
//!
//! Contract: [`detect`] returns non-overlapping matches sorted by start, whose `start..end` are byte offsets on
//! char boundaries of the input. A pattern only proposes candidates; each one must also pass a validator (area
//! rules for SSNs, Luhn and card grouping for cards, mod-97 and the country length for IBANs, octet ranges for
//! IPs, NANP rules for phones, a real calendar date for DOBs) or sit near context words (DOB, MEDICAL_RECORD,
//! PASSPORT, an unformatted nine-digit SSN, an unseparated ten-digit phone number), so that ordinary numbers are
//! not reported. Overlaps between types are resolved by a fixed priority, then by length.
//!
//! [`redact`] replaces matches with `[REDACTED:TYPE]`; [`redact_all`] repeats detection on its own output until
//! nothing is found (redacting one span can expose a neighbour that was hidden inside a longer digit run), so text
//! it returns carries no detectable PII. [`PiiSummary`] holds types and counts only, never matched text: it is the
//! only PII information audit events and reports may carry.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

use super::PolicyError;

/// The kinds of PII the policy stage detects; names match [`crate::tenant::PII_TYPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiType {
    Email,
    Phone,
    Ssn,
    CreditCard,
    Iban,
    IpAddress,
    Dob,
    MedicalRecord,
    Passport,
}

impl PiiType {
    pub const ALL: [PiiType; 9] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::Ssn,
        PiiType::CreditCard,
        PiiType::Iban,
        PiiType::IpAddress,
        PiiType::Dob,
        PiiType::MedicalRecord,
        PiiType::Passport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiType::Email => "EMAIL",
            PiiType::Phone => "PHONE",
            PiiType::Ssn => "SSN",
            PiiType::CreditCard => "CREDIT_CARD",
            PiiType::Iban => "IBAN",
            PiiType::IpAddress => "IP_ADDRESS",
            PiiType::Dob => "DOB",
            PiiType::MedicalRecord => "MEDICAL_RECORD",
            PiiType::Passport => "PASSPORT",
        }
    }

    /// Parses a type name as written in tenant config (case-insensitive).
    pub fn parse(s: &str) -> Option<PiiType> {
        let s = s.trim();
        PiiType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// Which type wins when two candidates overlap: the more specific, better-validated one.
    fn priority(self) -> u8 {
        match self {
            PiiType::Email => 9,
            PiiType::Iban => 8,
            PiiType::CreditCard => 7,
            PiiType::Ssn => 6,
            PiiType::MedicalRecord => 5,
            PiiType::Passport => 4,
            PiiType::Dob => 3,
            PiiType::IpAddress => 2,
            PiiType::Phone => 1,
        }
    }
}

impl fmt::Display for PiiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detected span. Offsets are bytes into the scanned text, always on char boundaries. It deliberately holds
/// no copy of the text: whoever has the text can slice it, nobody else can recover it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PiiMatch {
    pub pii_type: PiiType,
    pub start: usize,
    pub end: usize,
    /// How sure the validator is, 0..=1 (e.g. a card with a known issuer prefix scores higher than one without).
    pub confidence: f64,
}

/// Counts of detected PII per type: the audit-safe view of a detection run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiSummary {
    pub counts: BTreeMap<PiiType, usize>,
}

impl PiiSummary {
    pub fn from_matches(matches: &[PiiMatch]) -> Self {
        let mut summary = PiiSummary::default();
        summary.add(matches);
        summary
    }

    pub fn add(&mut self, matches: &[PiiMatch]) {
        for m in matches {
            *self.counts.entry(m.pii_type).or_default() += 1;
        }
    }

    /// Adds another summary's counts to this one.
    pub fn merge(&mut self, other: &PiiSummary) {
        for (t, n) in &other.counts {
            *self.counts.entry(*t).or_default() += n;
        }
    }

    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The types found, in a stable order.
    pub fn types(&self) -> Vec<PiiType> {
        self.counts.iter().filter(|(_, n)| **n > 0).map(|(t, _)| *t).collect()
    }
}

/// How many detect-and-redact passes [`redact_all`] makes before giving up (and failing closed).
pub const MAX_REDACTION_PASSES: usize = 8;

/// How far (bytes) a context word may be from the value it qualifies.
const CONTEXT_WINDOW: usize = 48;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in policy pattern compiles")
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b[a-z0-9][a-z0-9._%+-]*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,24}\b"));
static PHONE_NANP: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:\+?1[ .-]?)?(?:\([0-9]{3}\) ?|[0-9]{3}[ .-]?)[0-9]{3}[ .-]?[0-9]{4}"));
static PHONE_CONTEXT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|call|contact|whatsapp|sms|text\s+me)"));
static PHONE_INTL: LazyLock<Regex> = LazyLock::new(|| re(r"\+[1-9][0-9 ().-]{6,24}"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b([0-9]{3})([- ])([0-9]{2})([- ])([0-9]{4})\b"));
static SSN_CONTEXT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(?:ssn|ss#|ss\s*no\.?|social\s+security(?:\s+(?:number|no\.?|#))?|soc\.?\s*sec\.?)"));
static NINE_DIGITS: LazyLock<Regex> = LazyLock::new(|| re(r"\b[0-9]{9}\b"));
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9]+(?:[ -][0-9]+)*"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}"));
static DATE_ISO: LazyLock<Regex> = LazyLock::new(|| re(r"\b([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})\b"));
static DATE_NUMERIC: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4}|[0-9]{2})\b"));
const MONTHS: &str = "january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec";
static DATE_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)\b(?:([0-9]{{1,2}})(?:st|nd|rd|th)?\s+({MONTHS})\.?,?\s+([0-9]{{4}})|({MONTHS})\.?\s+([0-9]{{1,2}})(?:st|nd|rd|th)?,?\s+([0-9]{{4}}))\b"
    ))
});
static DOB_CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(?:born|birth|dob|d\.o\.b|geb\.|geboren|date\s+de\s+naissance|fecha\s+de\s+nacimiento)")
});
static DOB_CONTEXT_AFTER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[\s(\[,:-]{0,3}(?:dob|d\.o\.b|date\s+of\s+birth|born|birthday)\b"));
/// A word that every match of [`DOB_CONTEXT`] and [`DOB_CONTEXT_AFTER`] contains, with no boundaries or anchors:
/// a text without any has no date of birth, so its dates are not even looked for.
static DOB_WORDS: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)born|birth|dob|d\.o\.b|geb|naissance|nacimiento"));
static MRN_CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:mrn|medical\s+record|med\.?\s*rec|patient\s+(?:id|identifier|number|no)|chart\s+(?:id|number|no)|health\s+record|hospital\s+(?:number|no))",
    )
});
static MRN_TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"\b(?:[A-Za-z]{1,4}-?)?[0-9][0-9-]{3,16}[0-9]\b"));
static PASSPORT_CONTEXT: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(?:passport|reisepass|passeport|pasaporte)"));
static PASSPORT_TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z0-9]{6,9}\b"));

/// Finds PII of the given types. See the module docs for the contract.
pub fn detect(text: &str, types: &[PiiType]) -> Vec<PiiMatch> {
    let present = Present::scan(text);
    let mut candidates = Vec::new();
    for t in PiiType::ALL {
        if !types.contains(&t) || !present.may_hold(t) {
            continue;
        }
        run_detector(t, text, &mut candidates);
    }
    resolve_overlaps(candidates)
}

/// The bytes a text holds that PII detectors need (see [`Present::may_hold`]), from one pass over it.
#[derive(Debug, Clone, Copy)]
struct Present {
    /// ASCII digits.
    digits: usize,
    at: bool,
    dots: usize,
    colons: usize,
}

impl Present {
    fn scan(text: &str) -> Self {
        let (mut digits, mut at, mut dots, mut colons) = (0, 0, 0, 0);
        for &b in text.as_bytes() {
            digits += usize::from(b.is_ascii_digit());
            at += usize::from(b == b'@');
            dots += usize::from(b == b'.');
            colons += usize::from(b == b':');
        }
        Present { digits, at: at > 0, dots, colons }
    }

    /// Whether a text with these bytes can hold a match of `t` at all. Every match of every detector but e-mail
    /// and IPv6 holds at least so many ASCII digits (their patterns' `[0-9]`, or a digit count on the candidate):
    /// a card number 13, an SSN 9, a phone number 8 (an international one; a North American one 10), a medical
    /// record number 5, a date 4 (`1/2/85`), an IPv4 address 4 with three `.`, an IBAN 2, a passport number 1.
    /// An e-mail address contains `@`, an IPv6 address two `:`. Most prose has few digits, so most of its
    /// detectors' regexes are not run. Property-tested against running every detector.
    fn may_hold(self, t: PiiType) -> bool {
        let digits = self.digits;
        match t {
            PiiType::Email => self.at,
            PiiType::CreditCard => digits >= 13,
            PiiType::Ssn => digits >= 9,
            PiiType::Phone => digits >= 8,
            PiiType::MedicalRecord => digits >= 5,
            PiiType::Dob => digits >= 4,
            PiiType::IpAddress => (digits >= 4 && self.dots >= 3) || self.colons >= 2,
            PiiType::Iban => digits >= 2,
            PiiType::Passport => digits >= 1,
        }
    }
}

fn run_detector(t: PiiType, text: &str, candidates: &mut Vec<PiiMatch>) {
    match t {
        PiiType::Email => detect_email(text, candidates),
        PiiType::Phone => detect_phone(text, candidates),
        PiiType::Ssn => detect_ssn(text, candidates),
        PiiType::CreditCard => detect_card(text, candidates),
        PiiType::Iban => detect_iban(text, candidates),
        PiiType::IpAddress => detect_ip(text, candidates),
        PiiType::Dob => detect_dob(text, candidates),
        PiiType::MedicalRecord => detect_mrn(text, candidates),
        PiiType::Passport => detect_passport(text, candidates),
    }
}

/// Replaces each match with `[REDACTED:TYPE]`. Matches may come in any order; overlapping parts are redacted once,
/// and offsets off a char boundary are widened (never narrowed) so that nothing of a match survives.
pub fn redact(text: &str, matches: &[PiiMatch]) -> String {
    let mut sorted: Vec<&PiiMatch> = matches.iter().collect();
    sorted.sort_by_key(|m| (m.start, m.end));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for m in sorted {
        let start = floor_boundary(text, m.start.max(cursor));
        let end = ceil_boundary(text, m.end);
        if end <= start {
            continue;
        }
        out.push_str(&text[cursor..start]);
        out.push_str("[REDACTED:");
        out.push_str(m.pii_type.as_str());
        out.push(']');
        cursor = end;
    }
    out.push_str(&text[cursor..]);
    out
}

/// Detects and redacts until a pass finds nothing, returning the redacted text (the text itself, borrowed, when
/// nothing was found) and what was found. Fails closed with [`PolicyError::RedactionDidNotConverge`] if PII is
/// still found after [`MAX_REDACTION_PASSES`].
pub fn redact_all<'a>(text: &'a str, types: &[PiiType]) -> Result<(Cow<'a, str>, PiiSummary), PolicyError> {
    let mut summary = PiiSummary::default();
    let mut current = Cow::Borrowed(text);
    for _ in 0..MAX_REDACTION_PASSES {
        let matches = detect(&current, types);
        if matches.is_empty() {
            return Ok((current, summary));
        }
        summary.add(&matches);
        current = Cow::Owned(redact(&current, &matches));
    }
    if detect(&current, types).is_empty() {
        Ok((current, summary))
    } else {
        Err(PolicyError::RedactionDidNotConverge { passes: MAX_REDACTION_PASSES })
    }
}

fn resolve_overlaps(mut candidates: Vec<PiiMatch>) -> Vec<PiiMatch> {
    candidates.sort_by(|a, b| {
        b.pii_type
            .priority()
            .cmp(&a.pii_type.priority())
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    // Accepted spans are disjoint, so only the one starting last before `end` can overlap a new candidate.
    let mut taken: BTreeMap<usize, PiiMatch> = BTreeMap::new();
    for c in candidates {
        if c.end <= c.start {
            continue;
        }
        let overlaps = taken.range(..c.end).next_back().is_some_and(|(_, t)| t.end > c.start);
        if !overlaps {
            taken.insert(c.start, c);
        }
    }
    taken.into_values().collect()
}

fn push(out: &mut Vec<PiiMatch>, pii_type: PiiType, start: usize, end: usize, confidence: f64) {
    out.push(PiiMatch { pii_type, start, end, confidence });
}

// ---- email ----

fn detect_email(text: &str, out: &mut Vec<PiiMatch>) {
    for m in EMAIL.find_iter(text) {
        let s = m.as_str();
        let local = s.split('@').next().unwrap_or_default();
        if local.contains("..") || local.ends_with('.') || s.len() > 254 {
            continue;
        }
        push(out, PiiType::Email, m.start(), m.end(), 0.95);
    }
}

// ---- phone ----

fn detect_phone(text: &str, out: &mut Vec<PiiMatch>) {
    for m in PHONE_NANP.find_iter(text) {
        if !isolated(text, m.start(), m.end()) {
            continue;
        }
        let digits = ascii_digits(m.as_str());
        let national = match digits.len() {
            10 => &digits[..],
            11 if digits[0] == b'1' => &digits[1..],
            _ => continue,
        };
        // NANP: area code and exchange both start with 2-9.
        if !(b'2'..=b'9').contains(&national[0]) || !(b'2'..=b'9').contains(&national[3]) {
            continue;
        }
        // A bare ten-digit run is as often an order number or a timestamp: it needs a phone word nearby.
        let separated = m.as_str().bytes().any(|b| !b.is_ascii_digit());
        if !separated && (looks_like_compact_date(&digits) || !context_before(text, m.start(), &PHONE_CONTEXT)) {
            continue;
        }
        push(out, PiiType::Phone, m.start(), m.end(), if separated { 0.85 } else { 0.7 });
    }
    for m in PHONE_INTL.find_iter(text) {
        if prev_char(text, m.start()).is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        // Walk the greedy candidate: digits with at most two separator characters between them.
        let mut digits = Vec::new();
        let mut end = m.start() + 1;
        let mut separator_run = 0;
        for (i, c) in m.as_str().char_indices().skip(1) {
            if c.is_ascii_digit() {
                digits.push(c as u8);
                separator_run = 0;
                end = m.start() + i + 1;
            } else {
                separator_run += 1;
                if separator_run > 2 {
                    break;
                }
            }
        }
        if digits.len() > 15 || digits.len() < 8 || next_char(text, end).is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        if !isolated_after(text, end) || is_card_like(&digits) {
            continue;
        }
        push(out, PiiType::Phone, m.start(), end, 0.8);
    }
}

fn looks_like_compact_date(digits: &[u8]) -> bool {
    if digits.len() < 8 || !(digits.starts_with(b"19") || digits.starts_with(b"20")) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| std::str::from_utf8(&digits[r]).ok().and_then(|s| s.parse::<u32>().ok());
    matches!((n(0..4), n(4..6), n(6..8)), (Some(y), Some(mo), Some(d)) if NaiveDate::from_ymd_opt(y as i32, mo, d).is_some())
}

// ---- SSN ----

fn ssn_parts_valid(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn detect_ssn(text: &str, out: &mut Vec<PiiMatch>) {
    for caps in SSN.captures_iter(text) {
        let m = caps.get(0).expect("group 0");
        if caps[2] != caps[4] || !isolated(text, m.start(), m.end()) {
            continue;
        }
        if ssn_parts_valid(&caps[1], &caps[3], &caps[5]) {
            push(out, PiiType::Ssn, m.start(), m.end(), 0.9);
        }
    }
    tokens_after_context(text, &SSN_CONTEXT, &NINE_DIGITS, |start, end, s| {
        if ssn_parts_valid(&s[..3], &s[3..5], &s[5..]) {
            push(out, PiiType::Ssn, start, end, 0.85);
        }
    });
}

// ---- credit cards ----

fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes of the major networks (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        std::str::from_utf8(&digits[..n.min(digits.len())]).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    p1 == 4
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || (644..=649).contains(&p3)
        || p2 == 65
        || (3528..=3589).contains(&p4)
        || (300..=305).contains(&p3)
        || p2 == 36
        || p2 == 38
        || p2 == 39
        || p2 == 62
        || p2 == 50
        || (56..=69).contains(&p2)
}

fn is_card_like(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && luhn_valid(digits) && known_issuer(digits)
}

/// Card numbers are printed whole or in the networks' groupings (4-4-4-4[-3], 4-4-4-1, Amex 4-6-5, Diners 4-6-4).
fn card_grouping_ok(lens: &[usize]) -> bool {
    match lens {
        [n] => (13..=19).contains(n),
        [4, 6, 5] | [4, 6, 4] => true,
        _ => match lens.split_last() {
            Some((last, init)) => lens.len() >= 4 && init.iter().all(|&l| l == 4) && (1..=4).contains(last),
            None => false,
        },
    }
}

fn detect_card(text: &str, out: &mut Vec<PiiMatch>) {
    for run in DIGIT_RUN.find_iter(text) {
        let s = run.as_str();
        if s.bytes().filter(u8::is_ascii_digit).count() < 13 {
            continue;
        }
        // Digit groups (byte ranges relative to the run) and the separator before each.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut seps: Vec<u8> = Vec::new();
        let mut group_start = 0;
        for (i, b) in s.bytes().enumerate() {
            if !b.is_ascii_digit() {
                groups.push((group_start, i));
                seps.push(b);
                group_start = i + 1;
            }
        }
        groups.push((group_start, s.len()));
        let run_start_ok = !prev_char(text, run.start()).is_some_and(|c| c.is_alphanumeric() || c == '+')
            && !ends_with_digit_then(text, run.start(), &['.', ',']);
        let run_end_ok = isolated_after(text, run.end());
        let mut i = 0;
        while i < groups.len() {
            let mut best: Option<(usize, f64)> = None;
            let mut ndigits = 0;
            for j in i..groups.len() {
                ndigits += groups[j].1 - groups[j].0;
                if ndigits > 19 {
                    break;
                }
                if ndigits < 13 || (i == 0 && !run_start_ok) || (j == groups.len() - 1 && !run_end_ok) {
                    continue;
                }
                let lens: Vec<usize> = groups[i..=j].iter().map(|(a, b)| b - a).collect();
                let consistent = seps[i..j].windows(2).all(|w| w[0] == w[1]);
                if !consistent || !card_grouping_ok(&lens) {
                    continue;
                }
                let digits = ascii_digits(&s[groups[i].0..groups[j].1]);
                if digits.iter().all(|d| *d == digits[0]) || !luhn_valid(&digits) {
                    continue;
                }
                best = Some((j, if known_issuer(&digits) { 0.95 } else { 0.7 }));
            }
            match best {
                Some((j, confidence)) => {
                    push(out, PiiType::CreditCard, run.start() + groups[i].0, run.start() + groups[j].1, confidence);
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }
}

// ---- IBAN ----

/// IBAN lengths for the countries in the SWIFT registry most likely to appear.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "CR" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" => 31,
        _ => return None,
    })
}

fn iban_checksum_ok(compact: &[u8]) -> bool {
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut r: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        match c {
            b'0'..=b'9' => r = (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => r = (r * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    r == 1
}

fn detect_iban(text: &str, out: &mut Vec<PiiMatch>) {
    for m in IBAN.find_iter(text) {
        let s = m.as_str();
        // (byte offset just past each alphanumeric char, the char)
        let chars: Vec<(usize, u8)> =
            s.bytes().enumerate().filter(|(_, b)| b.is_ascii_alphanumeric()).map(|(i, b)| (i + 1, b)).collect();
        let compact: Vec<u8> = chars.iter().map(|(_, b)| *b).collect();
        match iban_length(&s[..2]) {
            Some(len) => {
                if compact.len() < len {
                    continue;
                }
                let end = chars[len - 1].0;
                if s.as_bytes().get(end).is_some_and(u8::is_ascii_alphanumeric) {
                    continue;
                }
                if iban_checksum_ok(&compact[..len]) {
                    push(out, PiiType::Iban, m.start(), m.start() + end, 0.95);
                }
            }
            None => {
                // Unknown country: the longest prefix ending at a group boundary that passes mod-97.
                let found = (15..=compact.len().min(34)).rev().find(|&n| {
                    let end = chars[n - 1].0;
                    !s.as_bytes().get(end).is_some_and(u8::is_ascii_alphanumeric) && iban_checksum_ok(&compact[..n])
                });
                if let Some(n) = found {
                    push(out, PiiType::Iban, m.start(), m.start() + chars[n - 1].0, 0.7);
                }
            }
        }
    }
}

// ---- IP addresses ----

fn detect_ip(text: &str, out: &mut Vec<PiiMatch>) {
    for m in IPV4.find_iter(text) {
        if isolated(text, m.start(), m.end()) && m.as_str().parse::<Ipv4Addr>().is_ok() {
            push(out, PiiType::IpAddress, m.start(), m.end(), 0.85);
        }
    }
    for m in IPV6.find_iter(text) {
        let s = m.as_str();
        let groups = s.split(':').filter(|g| !g.is_empty()).count();
        let substantial = s.split(':').any(|g| g.len() >= 2);
        let before_ok = !prev_char(text, m.start()).is_some_and(|c| c.is_alphanumeric() || c == ':' || c == '.');
        let after_ok = !next_char(text, m.end()).is_some_and(|c| c.is_alphanumeric() || c == ':');
        if groups >= 2 && substantial && before_ok && after_ok && s.parse::<Ipv6Addr>().is_ok() {
            push(out, PiiType::IpAddress, m.start(), m.end(), 0.85);
        }
    }
}

// ---- dates of birth ----

fn month_number(name: &str) -> Option<u32> {
    let key = name.get(..3)?.to_ascii_lowercase();
    let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    months.iter().position(|m| *m == key).map(|i| i as u32 + 1)
}

fn plausible_date(year: u32, month: u32, day: u32) -> bool {
    (1900..=2100).contains(&year) && NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
}

fn years(y: &str) -> Vec<u32> {
    let n: u32 = y.parse().unwrap_or(0);
    if y.len() == 2 { vec![1900 + n, 2000 + n] } else { vec![n] }
}

fn date_valid(kind: usize, caps: &Captures<'_>) -> bool {
    let num = |i: usize| caps.get(i).and_then(|m| m.as_str().parse::<u32>().ok()).unwrap_or(0);
    match kind {
        0 => plausible_date(num(1), num(2), num(3)),
        // Day-first and month-first are both in use; either reading makes it a date.
        1 => {
            years(&caps[3]).into_iter().any(|y| plausible_date(y, num(2), num(1)) || plausible_date(y, num(1), num(2)))
        }
        _ => {
            if caps.get(2).is_some() {
                month_number(&caps[2]).is_some_and(|mo| plausible_date(num(3), mo, num(1)))
            } else {
                month_number(&caps[4]).is_some_and(|mo| plausible_date(num(6), mo, num(5)))
            }
        }
    }
}

fn detect_dob(text: &str, out: &mut Vec<PiiMatch>) {
    if !DOB_WORDS.is_match(text) {
        return;
    }
    for (kind, pattern) in [&*DATE_ISO, &*DATE_NUMERIC, &*DATE_TEXT].into_iter().enumerate() {
        for caps in pattern.captures_iter(text) {
            let m = caps.get(0).expect("group 0");
            if !isolated(text, m.start(), m.end()) || !date_valid(kind, &caps) {
                continue;
            }
            let after = &text[m.end()..ceil_boundary(text, m.end() + 24)];
            if context_before(text, m.start(), &DOB_CONTEXT) || DOB_CONTEXT_AFTER.is_match(after) {
                push(out, PiiType::Dob, m.start(), m.end(), 0.85);
            }
        }
    }
}

// ---- medical record numbers and passports (context-only) ----

fn detect_mrn(text: &str, out: &mut Vec<PiiMatch>) {
    tokens_after_context(text, &MRN_CONTEXT, &MRN_TOKEN, |start, end, s| {
        let digits = s.bytes().filter(u8::is_ascii_digit).count();
        let is_date = DATE_ISO.is_match(s) || DATE_NUMERIC.is_match(s);
        if digits >= 5 && !s.contains("--") && !is_date {
            push(out, PiiType::MedicalRecord, start, end, 0.8);
        }
    });
}

fn detect_passport(text: &str, out: &mut Vec<PiiMatch>) {
    tokens_after_context(text, &PASSPORT_CONTEXT, &PASSPORT_TOKEN, |start, end, s| {
        if s.bytes().any(|b| b.is_ascii_digit()) {
            push(out, PiiType::Passport, start, end, 0.8);
        }
    });
}

// ---- helpers ----

fn ascii_digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

fn floor_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn prev_char(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn next_char(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

/// Whether the text before `i` ends with one of `seps` preceded by a digit (as in `3.` or `12-`).
fn ends_with_digit_then(text: &str, i: usize, seps: &[char]) -> bool {
    let mut before = text[..i].chars().rev();
    before.next().is_some_and(|c| seps.contains(&c)) && before.next().is_some_and(|c| c.is_ascii_digit())
}

fn isolated_after(text: &str, i: usize) -> bool {
    let mut after = text[i..].chars();
    match after.next() {
        Some(c) if c.is_alphanumeric() => false,
        Some('-' | '.' | '/' | ',') => !after.next().is_some_and(|c| c.is_ascii_digit()),
        _ => true,
    }
}

/// A candidate is isolated when it is not glued to letters or digits, nor part of a longer number such as
/// `12-555-123-4567` or `1.2.3.4.5`.
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let before_ok = match prev_char(text, start) {
        Some(c) if c.is_alphanumeric() => false,
        Some(_) => !ends_with_digit_then(text, start, &['-', '.', '/']),
        None => true,
    };
    before_ok && isolated_after(text, end)
}

/// Whether a context word occurs in the `CONTEXT_WINDOW` bytes before `start`, on the same line and clause.
fn context_before(text: &str, start: usize, context: &Regex) -> bool {
    let from = floor_boundary(text, start.saturating_sub(CONTEXT_WINDOW));
    let mut window = &text[from..start];
    if let Some(p) = window.rfind(['\n', ';']) {
        window = &window[p + 1..];
    } else if from > 0 && prev_char(text, from).is_some_and(char::is_alphanumeric) {
        // Do not let a cut-off word ("reborn") pass as a context word ("born").
        window = window.trim_start_matches(char::is_alphanumeric);
    }
    context.is_match(window)
}

/// Calls `f(start, end, token_text)` for each `token` match starting within `CONTEXT_WINDOW` bytes after a
/// `context` match, on the same line and clause. Offsets are absolute.
fn tokens_after_context(text: &str, context: &Regex, token: &Regex, mut f: impl FnMut(usize, usize, &str)) {
    for c in context.find_iter(text) {
        let from = c.end();
        // Only the next CONTEXT_WINDOW + 32 bytes matter (a token is shorter than 32), so look no further.
        let reach = ceil_boundary(text, from + CONTEXT_WINDOW + 32);
        let hay_end = text[from..reach].find(['\n', ';']).map_or(reach, |i| from + i);
        let window_end = ceil_boundary(text, from + CONTEXT_WINDOW).min(hay_end);
        // Search a small haystack: the regex sees its edges as word boundaries, so check the real neighbours.
        let hay = &text[from..hay_end];
        for t in token.find_iter(hay) {
            let (start, end) = (from + t.start(), from + t.end());
            if start >= window_end {
                break;
            }
            let glued_before = t.start() == 0 && prev_char(text, start).is_some_and(char::is_alphanumeric);
            let glued_after = end == hay_end && next_char(text, end).is_some_and(char::is_alphanumeric);
            if !glued_before && !glued_after {
                f(start, end, t.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(text: &str, t: PiiType) -> Vec<&str> {
        detect(text, &[t]).iter().map(|m| &text[m.start..m.end]).collect()
    }

    #[test]
    fn type_names_match_tenant_config() {
        let names: Vec<&str> = PiiType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, crate::tenant::PII_TYPES);
        for t in PiiType::ALL {
            assert_eq!(PiiType::parse(&t.as_str().to_lowercase()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
        }
        assert_eq!(PiiType::parse("NAME"), None);
    }

    #[test]
    fn ssn_area_group_and_serial_rules() {
        assert_eq!(found("ssn 078-05-1120 on file", PiiType::Ssn), ["078-05-1120"]);
        assert_eq!(found("id 123 45 6789.", PiiType::Ssn), ["123 45 6789"]);
        for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"] {
            assert!(found(&format!("number {bad} here"), PiiType::Ssn).is_empty(), "{bad}");
        }
        assert!(found("123-45 6789", PiiType::Ssn).is_empty(), "mixed separators");
        assert!(found("ref 1-123-45-6789", PiiType::Ssn).is_empty(), "part of a longer number");
        // Bare nine digits need context.
        assert_eq!(found("SSN: 078051120", PiiType::Ssn), ["078051120"]);
        assert!(found("order 078051120", PiiType::Ssn).is_empty());
    }

    #[test]
    fn cards_need_luhn() {
        assert_eq!(found("card 4111 1111 1111 1111 exp", PiiType::CreditCard), ["4111 1111 1111 1111"]);
        assert_eq!(found("card 4111-1111-1111-1111", PiiType::CreditCard), ["4111-1111-1111-1111"]);
        assert_eq!(found("amex 3782 822463 10005", PiiType::CreditCard), ["3782 822463 10005"]);
        assert_eq!(found("5500005555555559", PiiType::CreditCard), ["5500005555555559"]);
        assert!(found("card 4111 1111 1111 1112", PiiType::CreditCard).is_empty(), "Luhn fails");
        assert!(found("0000 0000 0000 0000", PiiType::CreditCard).is_empty(), "all zeros");
        assert!(found("4111 11 111 1111 1111", PiiType::CreditCard).is_empty(), "not a card grouping");
        let m = detect("x 4111111111111111 y", &[PiiType::CreditCard]);
        assert_eq!(m[0].confidence, 0.95);
    }

    #[test]
    fn iban_needs_mod97_and_country_length() {
        assert_eq!(found("IBAN GB82 WEST 1234 5698 7654 32.", PiiType::Iban), ["GB82 WEST 1234 5698 7654 32"]);
        assert_eq!(found("DE89 3704 0044 0532 0130 00 AND MORE", PiiType::Iban), ["DE89 3704 0044 0532 0130 00"]);
        assert_eq!(found("to DE89370400440532013000", PiiType::Iban), ["DE89370400440532013000"]);
        assert!(found("GB82 WEST 1234 5698 7654 33", PiiType::Iban).is_empty(), "one digit off");
        assert!(found("DE89 3704 0044 0532 0130 01", PiiType::Iban).is_empty(), "one digit off");
        assert!(found("DE89 3704 0044 0532 0130", PiiType::Iban).is_empty(), "too short for DE");
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(found("from 192.168.1.20, then", PiiType::IpAddress), ["192.168.1.20"]);
        assert!(found("from 256.1.1.1 now", PiiType::IpAddress).is_empty());
        assert!(found("oid 1.2.3.4.5", PiiType::IpAddress).is_empty());
        assert_eq!(found("v6 2001:db8::8a2e:370:7334 ok", PiiType::IpAddress), ["2001:db8::8a2e:370:7334"]);
        assert_eq!(found("[fe80::1]", PiiType::IpAddress), ["fe80::1"]);
        assert!(found("at 10:30:45 use std::io::Read", PiiType::IpAddress).is_empty());
        assert!(found("mac 00:1a:2b:3c:4d:5e", PiiType::IpAddress).is_empty());
    }

    #[test]
    fn phones_are_not_dates_or_cards() {
        assert_eq!(found("call (415) 555-0100 today", PiiType::Phone), ["(415) 555-0100"]);
        assert_eq!(found("call 415.555.0100", PiiType::Phone), ["415.555.0100"]);
        assert_eq!(found("call +1 415 555 0100", PiiType::Phone), ["+1 415 555 0100"]);
        assert_eq!(found("ring +44 20 7946 0958 - 2023", PiiType::Phone), ["+44 20 7946 0958"]);
        assert!(found("card 4111 1111 1111 1111", PiiType::Phone).is_empty());
        assert!(found("+4111111111111111", PiiType::Phone).is_empty());
        assert!(found("on 2024-05-17 at noon", PiiType::Phone).is_empty());
        assert!(found("phone 2024051712", PiiType::Phone).is_empty(), "compact date-time");
        assert_eq!(found("mobile: 4155550100", PiiType::Phone), ["4155550100"]);
        assert!(found("order 4155550100", PiiType::Phone).is_empty(), "bare digits need a phone word");
        assert!(found("id 123-555-0100", PiiType::Phone).is_empty(), "area code cannot start with 1");
        // With both types asked for, the card wins the overlap.
        let text = "pay 4111111111111111";
        let m = detect(text, &[PiiType::Phone, PiiType::CreditCard]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].pii_type, PiiType::CreditCard);
    }

    #[test]
    fn dob_needs_context() {
        assert_eq!(found("DOB: 03/12/1985", PiiType::Dob), ["03/12/1985"]);
        assert_eq!(found("She was born on March 3, 1985 in Leeds", PiiType::Dob), ["March 3, 1985"]);
        assert_eq!(found("date of birth 1985-03-12", PiiType::Dob), ["1985-03-12"]);
        assert_eq!(found("1985-03-12 (DOB)", PiiType::Dob), ["1985-03-12"]);
        assert!(found("Invoice dated 03/12/1985", PiiType::Dob).is_empty());
        assert!(found("DOB: 1985-13-45", PiiType::Dob).is_empty(), "not a date");
        assert!(found("reborn 1985-03-12", PiiType::Dob).is_empty());
        assert!(found("born in Leeds.\nShipped 1985-03-12", PiiType::Dob).is_empty(), "other line");
    }

    #[test]
    fn every_dob_context_passes_the_word_prefilter() {
        // Each way of saying it, in the case and spacing the context patterns accept: the prefilter must never
        // be what stops a date of birth from being found.
        for context in [
            "Born",
            "BIRTH",
            "birthday",
            "DoB",
            "d.o.b",
            "D.O.B",
            "geb.",
            "Geboren",
            "date de  naissance",
            "Fecha de nacimiento",
            "date of\tbirth",
        ] {
            let before = format!("{context}: 1985-03-12");
            assert_eq!(found(&before, PiiType::Dob), ["1985-03-12"], "{before}");
        }
        for context in ["dob", "D.O.B", "date of birth", "born", "Birthday"] {
            let after = format!("1985-03-12 ({context})");
            assert_eq!(found(&after, PiiType::Dob), ["1985-03-12"], "{after}");
        }
        assert!(found("Shipped 1985-03-12 to Leeds", PiiType::Dob).is_empty());
    }

    #[test]
    fn mrn_and_passport_need_context() {
        assert_eq!(found("MRN: 00482913", PiiType::MedicalRecord), ["00482913"]);
        assert_eq!(found("medical record number A-1234567", PiiType::MedicalRecord), ["A-1234567"]);
        assert!(found("order number 00482913", PiiType::MedicalRecord).is_empty());
        assert!(found("medical record updated 2023-01-15", PiiType::MedicalRecord).is_empty());
        assert_eq!(found("Passport No. X1234567", PiiType::Passport), ["X1234567"]);
        assert_eq!(found("passport number: 123456789", PiiType::Passport), ["123456789"]);
        assert!(found("ticket X1234567", PiiType::Passport).is_empty());
        assert!(found("passport NUMBER", PiiType::Passport).is_empty());
    }

    #[test]
    fn emails() {
        assert_eq!(found("mail jane.doe+x@example.co.uk.", PiiType::Email), ["jane.doe+x@example.co.uk"]);
        assert!(found("jane..doe@example.com", PiiType::Email).is_empty());
        assert!(found("user@localhost", PiiType::Email).is_empty());
    }

    #[test]
    fn redaction_output_is_exact() {
        let text = "Jane (SSN 078-05-1120) wrote from jane@example.com and 10.0.0.7.";
        let matches = detect(text, &PiiType::ALL);
        assert_eq!(
            redact(text, &matches),
            "Jane (SSN [REDACTED:SSN]) wrote from [REDACTED:EMAIL] and [REDACTED:IP_ADDRESS]."
        );
        let summary = PiiSummary::from_matches(&matches);
        assert_eq!(summary.total(), 3);
        assert_eq!(summary.types(), [PiiType::Email, PiiType::Ssn, PiiType::IpAddress]);
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(json, r#"{"counts":{"EMAIL":1,"SSN":1,"IP_ADDRESS":1}}"#);
        for m in &matches {
            assert!(!json.contains(&text[m.start..m.end]));
        }
    }

    #[test]
    fn redact_all_catches_what_a_redaction_uncovers() {
        // The phone is glued to the card by a dash, so it only stands alone once the card is redacted.
        let text = "4111 1111 1111 1111-415-555-0100";
        let (out, summary) = redact_all(text, &PiiType::ALL).unwrap();
        assert_eq!(out, "[REDACTED:CREDIT_CARD]-[REDACTED:PHONE]");
        assert_eq!(summary.total(), 2);
    }

    #[test]
    fn unicode_around_matches_keeps_boundaries() {
        let text = "é078-05-1120 — 📞 (415) 555-0100 ünd jäne@exämple.com";
        for m in detect(text, &PiiType::ALL) {
            assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
        }
        assert_eq!(found(text, PiiType::Phone), ["(415) 555-0100"]);
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("078-05-1120".to_owned()),
            Just("4111 1111 1111 1111".to_owned()),
            Just("GB82 WEST 1234 5698 7654 32".to_owned()),
            Just("jane@example.com".to_owned()),
            Just("(415) 555-0100".to_owned()),
            Just("+44 20 7946 0958".to_owned()),
            Just("192.168.0.1".to_owned()),
            Just("2001:db8::1".to_owned()),
            Just("DOB".to_owned()),
            Just("03/12/1985".to_owned()),
            Just("MRN".to_owned()),
            Just("00482913".to_owned()),
            Just("passport".to_owned()),
            Just("X1234567".to_owned()),
            Just("SSN".to_owned()),
            Just("078051120".to_owned()),
            // The fewest digits each detector can match with.
            Just("1.2.3.4".to_owned()),
            Just("born 1/2/85".to_owned()),
            Just("+12345678".to_owned()),
            Just("MRN 12345".to_owned()),
            Just("passport ABCDE1".to_owned()),
            "[0-9]{1,12}",
            "[ \\-./:;,()\n]{1,2}",
            "[a-zA-Z]{1,8}",
            "\\PC{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn detection_never_panics_and_offsets_are_boundaries(text in "\\PC{0,200}") {
            let matches = detect(&text, &PiiType::ALL);
            let mut last_end = 0;
            for m in &matches {
                prop_assert!(m.start < m.end && m.end <= text.len());
                prop_assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
                prop_assert!(m.start >= last_end, "sorted and non-overlapping");
                last_end = m.end;
            }
        }

        #[test]
        fn redacted_output_has_no_detectable_pii(parts in proptest::collection::vec(fragment(), 0..24)) {
            let text = parts.join(" ");
            let (out, summary) = redact_all(&text, &PiiType::ALL).unwrap();
            prop_assert!(detect(&out, &PiiType::ALL).is_empty(), "{out}");
            let json = serde_json::to_string(&summary).unwrap();
            for m in detect(&text, &PiiType::ALL) {
                prop_assert!(!json.contains(&text[m.start..m.end]));
            }
        }

        #[test]
        fn detectors_skipped_for_missing_bytes_would_have_found_nothing(
            parts in proptest::collection::vec(prop_oneof![fragment(), "[a-zA-Z@:.+ -]{1,12}".prop_map(String::from)], 0..24)
        ) {
            let text = parts.join(" ");
            let present = Present::scan(&text);
            for t in PiiType::ALL {
                if !present.may_hold(t) {
                    let mut found = Vec::new();
                    run_detector(t, &text, &mut found);
                    prop_assert!(found.is_empty(), "{t:?} in {text:?}");
                }
            }
        }

        #[test]
        fn pii_mixed_into_arbitrary_text_is_found(prefix in "\\PC{0,20}", suffix in "\\PC{0,20}") {
            let text = format!("{prefix} jane@example.com {suffix}");
            prop_assert!(detect(&text, &[PiiType::Email]).iter().any(|m| &text[m.start..m.end] == "jane@example.com"));
        }
    }
}

//! Rule-based document classification.
//!
//! Contract: [`classify`] is deterministic and needs no model. Each category has weighted keywords and phrases,
//! matched case-insensitively on word boundaries (a trailing plural `s`/`es` is accepted). A category's raw
//! evidence is the sum over its distinct terms of `weight × (1 + ln count)`, so repeating one word saturates
//! instead of dominating. Its confidence is `strength × √share`: `strength = 1 − exp(−raw / (K·L))` grows with
//! evidence and is damped by document length (`L = max(1, √(words / 150))`, so a handful of incidental keywords in a
//! long document is weak evidence); `share` is the category's part of all evidence, so mixed documents are less
//! certain. The best category wins ties in [`CATEGORIES`] order.
//!
//! Below the tenant's threshold, or with no evidence at all, the category is [`FALLBACK_CATEGORY`] (`general`):
//! "no specific domain with enough confidence". `confidence` then still reports the best category's confidence,
//! and `scores` always lists every category, so a reviewer can see how close it came.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::words::{is_ascii_space, is_ascii_word_byte, is_word_char};

/// The rule-based categories, in tie-break order.
pub const CATEGORIES: &[&str] = &["financial", "medical", "legal", "hr", "technical"];

/// The category given when no rule category reaches the threshold.
pub const FALLBACK_CATEGORY: &str = "general";

/// Evidence scale: the raw weight at which a short document's strength reaches 1 − 1/e.
const K: f64 = 4.0;

/// The outcome of classification: a category, how sure, and every category's confidence (all in 0..=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub category: String,
    pub confidence: f64,
    pub scores: BTreeMap<String, f64>,
}

const FINANCIAL: &[(&str, f64)] = &[
    ("invoice", 2.0),
    ("revenue", 2.0),
    ("balance sheet", 3.0),
    ("income statement", 3.0),
    ("cash flow", 2.5),
    ("profit", 1.5),
    ("earnings", 2.0),
    ("dividend", 2.5),
    ("interest rate", 2.0),
    ("loan", 2.0),
    ("mortgage", 2.5),
    ("credit", 1.0),
    ("debit", 1.5),
    ("bank", 1.5),
    ("account balance", 2.5),
    ("payment", 1.5),
    ("tax", 1.5),
    ("fiscal", 2.0),
    ("budget", 1.5),
    ("expense", 1.5),
    ("expenditure", 1.5),
    ("accounts payable", 3.0),
    ("accounts receivable", 3.0),
    ("ledger", 2.5),
    ("equity", 1.5),
    ("asset", 1.5),
    ("liabilities", 2.0),
    ("portfolio", 1.5),
    ("investment", 2.0),
    ("investor", 1.5),
    ("securities", 2.0),
    ("stock", 1.0),
    ("shareholder", 2.0),
    ("bond", 1.0),
    ("ebitda", 3.0),
    ("quarterly", 1.0),
    ("financial", 2.0),
    ("wire transfer", 2.5),
    ("iban", 2.5),
    ("currency", 1.5),
    ("amortization", 2.5),
    ("depreciation", 2.0),
    ("accrual", 2.5),
    ("gaap", 3.0),
    ("ifrs", 3.0),
    ("net income", 3.0),
    ("gross margin", 3.0),
    ("operating expenses", 2.5),
    ("billing", 1.5),
    ("refund", 1.5),
    ("transaction", 1.5),
];

const MEDICAL: &[(&str, f64)] = &[
    ("patient", 2.0),
    ("diagnosis", 3.0),
    ("diagnosed", 2.5),
    ("treatment", 2.0),
    ("symptom", 2.0),
    ("clinical", 2.0),
    ("clinic", 1.5),
    ("hospital", 2.0),
    ("physician", 2.5),
    ("doctor", 1.5),
    ("nurse", 1.5),
    ("prescription", 2.5),
    ("prescribed", 2.0),
    ("medication", 2.5),
    ("dosage", 2.5),
    ("mg", 1.0),
    ("therapy", 1.5),
    ("surgery", 2.5),
    ("surgical", 2.0),
    ("chronic", 1.5),
    ("disease", 2.0),
    ("disorder", 1.5),
    ("infection", 2.0),
    ("blood pressure", 2.5),
    ("heart rate", 2.0),
    ("mrn", 3.0),
    ("medical record", 3.0),
    ("medical", 2.0),
    ("health record", 2.5),
    ("icd-10", 3.0),
    ("lab results", 2.5),
    ("radiology", 2.5),
    ("oncology", 3.0),
    ("cardiology", 3.0),
    ("pediatric", 2.0),
    ("vaccine", 2.0),
    ("vaccination", 2.0),
    ("allergy", 2.0),
    ("allergies", 2.0),
    ("discharged", 1.5),
    ("prognosis", 3.0),
    ("pathology", 2.5),
    ("mri", 2.0),
    ("ct scan", 2.5),
    ("x-ray", 2.0),
    ("insulin", 2.5),
    ("diabetes", 2.5),
    ("hypertension", 2.5),
    ("tumor", 2.5),
    ("hipaa", 3.0),
    ("emergency room", 2.0),
    ("icu", 2.5),
    ("outpatient", 2.5),
    ("inpatient", 2.5),
];

const LEGAL: &[(&str, f64)] = &[
    ("contract", 2.5),
    ("agreement", 2.0),
    ("clause", 2.5),
    ("hereby", 2.5),
    ("herein", 2.5),
    ("hereinafter", 3.0),
    ("whereas", 2.5),
    ("thereof", 2.0),
    ("parties", 1.5),
    ("plaintiff", 3.0),
    ("defendant", 3.0),
    ("court", 2.0),
    ("jurisdiction", 2.5),
    ("governing law", 3.0),
    ("liability", 2.0),
    ("indemnify", 3.0),
    ("indemnification", 3.0),
    ("warranty", 1.5),
    ("breach", 2.0),
    ("arbitration", 3.0),
    ("litigation", 3.0),
    ("statute", 2.5),
    ("regulation", 1.5),
    ("compliance", 1.5),
    ("attorney", 2.5),
    ("counsel", 2.0),
    ("lawyer", 2.0),
    ("legal", 2.0),
    ("lawsuit", 3.0),
    ("confidentiality", 2.0),
    ("non-disclosure", 3.0),
    ("intellectual property", 2.5),
    ("copyright", 2.0),
    ("trademark", 2.0),
    ("patent", 2.0),
    ("licensee", 2.5),
    ("licensor", 2.5),
    ("shall", 1.0),
    ("pursuant to", 2.5),
    ("notwithstanding", 2.5),
    ("force majeure", 3.0),
    ("subpoena", 3.0),
    ("affidavit", 3.0),
    ("gdpr", 2.0),
    ("terms and conditions", 2.5),
];

const HR: &[(&str, f64)] = &[
    ("employee", 2.0),
    ("employment", 2.0),
    ("employer", 1.5),
    ("hiring", 2.0),
    ("recruitment", 2.5),
    ("recruiter", 2.5),
    ("candidate", 1.5),
    ("interview", 1.5),
    ("onboarding", 2.5),
    ("offboarding", 3.0),
    ("salary", 2.5),
    ("compensation", 2.0),
    ("payroll", 2.5),
    ("benefits", 1.5),
    ("pto", 2.5),
    ("paid time off", 3.0),
    ("vacation", 1.5),
    ("leave of absence", 3.0),
    ("parental leave", 3.0),
    ("sick leave", 2.5),
    ("performance review", 3.0),
    ("performance improvement plan", 3.0),
    ("job description", 2.5),
    ("job title", 2.0),
    ("promotion", 1.5),
    ("resignation", 2.5),
    ("human resources", 3.0),
    ("hr", 2.0),
    ("workplace", 2.0),
    ("harassment", 2.5),
    ("headcount", 2.5),
    ("pension", 2.0),
    ("overtime", 2.0),
    ("timesheet", 2.5),
    ("employee handbook", 3.0),
    ("code of conduct", 2.0),
    ("disciplinary", 2.5),
    ("grievance", 2.5),
    ("background check", 2.5),
];

const TECHNICAL: &[(&str, f64)] = &[
    ("api", 2.0),
    ("endpoint", 2.0),
    ("server", 2.0),
    ("database", 2.0),
    ("sql", 2.5),
    ("query", 1.5),
    ("function", 1.5),
    ("variable", 1.5),
    ("source code", 2.0),
    ("code", 1.0),
    ("python", 2.0),
    ("javascript", 2.0),
    ("compile", 2.0),
    ("compiler", 2.5),
    ("runtime", 2.0),
    ("library", 1.5),
    ("module", 1.5),
    ("software", 1.5),
    ("deploy", 2.0),
    ("deployment", 2.0),
    ("kubernetes", 3.0),
    ("docker", 2.5),
    ("container", 1.5),
    ("latency", 2.0),
    ("throughput", 2.0),
    ("cpu", 2.0),
    ("memory", 1.5),
    ("cache", 2.0),
    ("configuration", 1.5),
    ("install", 1.5),
    ("installation", 1.5),
    ("bug", 1.5),
    ("debug", 2.0),
    ("stack trace", 3.0),
    ("exception", 1.5),
    ("http", 2.0),
    ("json", 2.5),
    ("yaml", 2.5),
    ("git", 2.5),
    ("repository", 2.0),
    ("algorithm", 2.0),
    ("encryption", 2.0),
    ("authentication", 2.0),
    ("protocol", 1.5),
    ("linux", 2.5),
    ("command line", 2.5),
    ("script", 1.5),
    ("interpreter", 2.5),
    ("syntax", 2.0),
    ("framework", 1.5),
    ("microservice", 3.0),
    ("backend", 2.0),
    ("frontend", 2.0),
];

const RULES: [&[(&str, f64)]; 5] = [FINANCIAL, MEDICAL, LEGAL, HR, TECHNICAL];

struct Rules {
    /// Term text (lowercase, single spaces) → term id.
    ids: HashMap<&'static str, usize>,
    /// Per term id: (category index, weight).
    terms: Vec<(usize, f64)>,
    /// First word → the terms that start with it ([`Term`]), in match-preference order.
    by_first: foldhash::HashMap<&'static str, Vec<Term>>,
    /// Per first byte of a lowercase ASCII word, bit `n` set when a word of `n` bytes may start a term (its first
    /// word, or a one-word term with a plural ending): most words are ruled out without a hash lookup.
    shapes: [u32; 128],
}

/// A term as the scanner matches it: its first word (the key it is found under), then each later word with the
/// separator before it. Terms are lowercase ASCII words joined by single spaces or hyphens.
struct Term {
    /// The term's place in the preference order: longer terms first, so that "balance sheet" wins over a
    /// shorter term at the same position; ties in [`RULES`] order.
    rank: usize,
    rest: Vec<(Separator, &'static str)>,
}

/// What joins two words of a term in the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// One or more whitespace characters (a space in the term).
    Space,
    /// Exactly one `-`.
    Hyphen,
}

static COMPILED: LazyLock<Rules> = LazyLock::new(|| {
    let mut ids = HashMap::new();
    let mut terms = Vec::new();
    let mut phrases: Vec<&'static str> = Vec::new();
    for (category, rules) in RULES.iter().enumerate() {
        for &(phrase, weight) in *rules {
            ids.insert(phrase, terms.len());
            terms.push((category, weight));
            phrases.push(phrase);
        }
    }
    phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut by_first: foldhash::HashMap<&'static str, Vec<Term>> = foldhash::HashMap::default();
    let mut shapes = [0u32; 128];
    for (rank, phrase) in phrases.into_iter().enumerate() {
        let (first, rest) = split_term(phrase);
        let lengths = if rest.is_empty() { first.len()..=first.len() + 2 } else { first.len()..=first.len() };
        for n in lengths {
            assert!(n < 32, "classification term {phrase:?} starts with a word too long for the shape filter");
            shapes[usize::from(first.as_bytes()[0])] |= 1 << n;
        }
        by_first.entry(first).or_default().push(Term { rank, rest });
    }
    Rules { ids, terms, by_first, shapes }
});

/// A term's first word and its later words with their separators.
fn split_term(phrase: &'static str) -> (&'static str, Vec<(Separator, &'static str)>) {
    let mut words = phrase.split_inclusive([' ', '-']).map(|w| match w.strip_suffix(' ') {
        Some(word) => (word, Some(Separator::Space)),
        None => match w.strip_suffix('-') {
            Some(word) => (word, Some(Separator::Hyphen)),
            None => (w, None),
        },
    });
    let (first, mut separator) = words.next().expect("a term has a word");
    let mut rest = Vec::new();
    for (word, next) in words {
        rest.push((separator.expect("only the last word has no separator after it"), word));
        separator = next;
    }
    assert!(
        phrase.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ' || b == b'-')
            && [first].into_iter().chain(rest.iter().map(|(_, w)| *w)).all(|w| !w.is_empty()),
        "classification term {phrase:?} is not lowercase ASCII words joined by single spaces or hyphens"
    );
    (first, rest)
}

fn term_id(rules: &Rules, matched: &str) -> Option<usize> {
    let key = matched.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    rules
        .ids
        .get(key.as_str())
        .or_else(|| key.strip_suffix("es").and_then(|k| rules.ids.get(k)))
        .or_else(|| key.strip_suffix('s').and_then(|k| rules.ids.get(k)))
        .copied()
}

/// The byte ranges of `text`'s maximal runs of word characters.
fn word_runs(text: &str) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    if text.is_ascii() {
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(start) = bytes[i..].iter().position(|&b| is_ascii_word_byte(b)).map(|n| i + n) {
            i = bytes[start..].iter().position(|&b| !is_ascii_word_byte(b)).map_or(bytes.len(), |n| start + n);
            runs.push(start..i);
        }
        return runs;
    }
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_word_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..text.len());
    }
    runs
}

/// A word as terms are compared with it: lowercase, with the two characters that match an ASCII letter
/// case-insensitively without lowercasing to it (`ſ`, long s, as `s`; the Kelvin sign already lowercases to `k`).
fn fold(word: &str) -> Cow<'_, str> {
    if word.is_ascii() {
        if word.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(word.to_ascii_lowercase())
        } else {
            Cow::Borrowed(word)
        }
    } else {
        Cow::Owned(word.to_lowercase().replace('\u{17f}', "s"))
    }
}

/// `word` is the term word `expected`, or `expected` with a trailing `es` or `s` when `last`.
fn word_matches(word: &str, expected: &str, last: bool) -> bool {
    match word.strip_prefix(expected) {
        Some("") => true,
        Some("es" | "s") => last,
        _ => false,
    }
}

/// How many word runs, from `runs[i]` on, the preferred term starting at `runs[i]` spans, if one does.
fn match_at(rules: &Rules, text: &str, runs: &[Range<usize>], i: usize) -> Option<usize> {
    let word = &text[runs[i].clone()];
    // Room for the longest word the shape filter knows (bits 0..32 of `Rules::shapes`).
    let mut lower = [0u8; 31];
    let folded;
    let first = match lower.get_mut(..word.len()) {
        Some(lower) if word.is_ascii() => {
            lower.copy_from_slice(word.as_bytes());
            lower.make_ascii_lowercase();
            if rules.shapes[usize::from(lower[0])] & (1 << word.len()) == 0 {
                return None;
            }
            std::str::from_utf8(lower).expect("ASCII")
        }
        // Longer than any term's first word, unless lowercasing shortens it.
        None if word.is_ascii() => return None,
        _ => {
            folded = fold(word);
            folded.as_ref()
        }
    };
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |rank: usize, spans: usize| {
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, spans));
        }
    };
    for term in rules.by_first.get(first).into_iter().flatten() {
        if term.rest.is_empty() || spans_rest(text, runs, i, &term.rest) {
            consider(term.rank, 1 + term.rest.len());
        }
    }
    // One-word terms followed by a plural ending.
    for stem in [first.strip_suffix("es"), first.strip_suffix('s')].into_iter().flatten() {
        for term in rules.by_first.get(stem).into_iter().flatten().filter(|t| t.rest.is_empty()) {
            consider(term.rank, 1);
        }
    }
    best.map(|(_, spans)| spans)
}

/// The runs after `runs[i]` spell `rest`, each joined to the one before by its separator.
fn spans_rest(text: &str, runs: &[Range<usize>], i: usize, rest: &[(Separator, &str)]) -> bool {
    let Some(following) = runs.get(i + 1..=i + rest.len()) else { return false };
    let mut end = runs[i].end;
    for (n, ((separator, expected), run)) in rest.iter().zip(following).enumerate() {
        let gap = &text[end..run.start];
        let joined = match separator {
            Separator::Space => gap.chars().all(char::is_whitespace),
            Separator::Hyphen => gap == "-",
        };
        if !joined || !word_matches(&fold(&text[run.clone()]), expected, n + 1 == rest.len()) {
            return false;
        }
        end = run.end;
    }
    true
}

/// Calls `found` with the id of each term occurrence in `text`: matched case-insensitively on word boundaries,
/// with a trailing plural `s`/`es`, the longest term first where several start at the same word, and without
/// overlaps.
fn scan_terms(rules: &Rules, text: &str, mut found: impl FnMut(usize)) {
    let runs = word_runs(text);
    let mut i = 0;
    while i < runs.len() {
        match match_at(rules, text, &runs, i) {
            Some(spans) => {
                if let Some(id) = term_id(rules, &text[runs[i].start..runs[i + spans - 1].end]) {
                    found(id);
                }
                i += spans;
            }
            None => i += 1,
        }
    }
}

/// `text.split_whitespace().count()`, without decoding characters when `text` is ASCII.
fn whitespace_words(text: &str) -> usize {
    if !text.is_ascii() {
        return text.split_whitespace().count();
    }
    let bytes = text.as_bytes();
    bytes.iter().enumerate().filter(|&(i, &b)| !is_ascii_space(b) && (i == 0 || is_ascii_space(bytes[i - 1]))).count()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Classifies `text`; see the module docs for the scoring and the fallback.
pub fn classify(text: &str, threshold: f64) -> Classification {
    let mut classifier = Classifier::new();
    classifier.add(text);
    classifier.finish(threshold)
}

/// Classifies a document given in parts (its blocks) as a whole: each part's term occurrences and words count
/// towards one score, so the document's length damps its evidence as it does for [`classify`] on one text. A term
/// is matched within a part, never across two. One part gives what [`classify`] gives for it.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Occurrences so far, by term id.
    counts: Vec<u32>,
    words: usize,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new()
    }
}

impl Classifier {
    pub fn new() -> Self {
        Classifier { counts: vec![0; COMPILED.terms.len()], words: 0 }
    }

    /// Adds the evidence of one part.
    pub fn add(&mut self, text: &str) {
        scan_terms(&COMPILED, text, |id| self.counts[id] += 1);
        self.words += whitespace_words(text);
    }

    /// The category of everything added, against `threshold`.
    pub fn finish(&self, threshold: f64) -> Classification {
        let rules = &*COMPILED;
        let mut raw = [0.0f64; 5];
        // In term id order, so that each category's sum is the same float on every run.
        for (id, &n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (category, weight) = rules.terms[id];
            raw[category] += weight * (1.0 + f64::from(n).ln());
        }
        let length_damping = (self.words as f64 / 150.0).sqrt().max(1.0);
        let total: f64 = raw.iter().sum();
        let mut scores = BTreeMap::new();
        let mut best: Option<(usize, f64)> = None;
        for (i, &r) in raw.iter().enumerate() {
            let confidence = if total > 0.0 {
                let strength = 1.0 - (-r / (K * length_damping)).exp();
                round4(strength * (r / total).sqrt())
            } else {
                0.0
            };
            scores.insert(CATEGORIES[i].to_owned(), confidence);
            if best.is_none_or(|(_, c)| confidence > c) {
                best = Some((i, confidence));
            }
        }
        let (index, confidence) = best.unwrap_or((0, 0.0));
        let category = if confidence > 0.0 && confidence >= threshold { CATEGORIES[index] } else { FALLBACK_CATEGORY };
        Classification { category: category.to_owned(), confidence, scores }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FINANCE_TEXT: &str = "Quarterly results: revenue grew 12% while operating expenses fell. Net income and \
        EBITDA improved, the balance sheet shows lower liabilities, and the board approved a dividend. Cash flow \
        from accounts receivable covered the loan payments.";

    const MEDICAL_TEXT: &str = "The patient was admitted with chest pain. Diagnosis: hypertension. The physician \
        prescribed medication at a dosage of 10 mg daily and ordered lab results and an MRI. Follow-up at the \
        cardiology clinic in two weeks.";

    const CONTRACT_TEXT: &str = "This Agreement is entered into by the parties hereinafter named. Whereas the \
        Licensor owns the intellectual property, the Licensee shall indemnify the Licensor against any breach. \
        Governing law: England. Disputes go to arbitration.";

    const HR_TEXT: &str = "Welcome to onboarding. Your salary, benefits and paid time off are described in the \
        employee handbook. Performance reviews happen twice a year; contact human resources about parental leave.";

    const TECH_TEXT: &str = "To deploy the service, build the Docker container, push it to the repository and \
        apply the Kubernetes configuration. The API endpoint returns JSON; check latency and CPU usage, and read \
        the stack trace if the runtime throws an exception.";

    #[test]
    fn clear_documents_get_their_category() {
        for (text, expected) in [
            (FINANCE_TEXT, "financial"),
            (MEDICAL_TEXT, "medical"),
            (CONTRACT_TEXT, "legal"),
            (HR_TEXT, "hr"),
            (TECH_TEXT, "technical"),
        ] {
            let c = classify(text, 0.7);
            assert_eq!(c.category, expected, "{c:?}");
            assert!(c.confidence >= 0.7 && c.confidence <= 1.0, "{c:?}");
        }
    }

    #[test]
    fn weak_or_no_evidence_falls_back_to_general() {
        let c = classify("We walked along the river and had lunch in the park.", 0.7);
        assert_eq!(c.category, FALLBACK_CATEGORY);
        assert_eq!(c.confidence, 0.0);
        assert_eq!(c.scores.len(), CATEGORIES.len());

        let c = classify("She paid the invoice after lunch in the park.", 0.7);
        assert_eq!(c.category, FALLBACK_CATEGORY, "one keyword is not enough: {c:?}");
        assert!(c.confidence > 0.0);
        // The same text passes a permissive threshold.
        assert_eq!(classify("She paid the invoice after lunch in the park.", 0.1).category, "financial");
    }

    #[test]
    fn keywords_match_on_word_boundaries_only() {
        // "tax" inside "syntax", "bank" inside "embankment", "api" inside "capital" must not count.
        let c = classify("the embankment syntax was capital", 0.0);
        assert_eq!(c.scores["financial"], 0.0, "{c:?}");
    }

    #[test]
    fn a_document_in_parts_is_classified_as_a_whole() {
        let parts = [FINANCE_TEXT, "Meeting notes.", TECH_TEXT];
        let mut classifier = Classifier::new();
        parts.iter().for_each(|p| classifier.add(p));
        assert_eq!(classifier.finish(0.3), classify(&parts.join("\n\n"), 0.3));
        let mut one = Classifier::default();
        one.add(MEDICAL_TEXT);
        assert_eq!(one.finish(0.7), classify(MEDICAL_TEXT, 0.7));
        // A term is not matched across two parts.
        let mut split = Classifier::new();
        split.add("the balance");
        split.add("sheet");
        assert_eq!(split.finish(0.0).scores["financial"], 0.0);
        assert!(classify("the balance sheet", 0.0).scores["financial"] > 0.0);
    }

    #[test]
    fn one_paragraph_does_not_decide_a_long_document() {
        // A paragraph with one financial keyword is financial on its own at this threshold; in a long document of
        // general text it is incidental, and the document is not.
        let aside = "She paid the invoice after lunch in the park.";
        assert_eq!(classify(aside, 0.3).category, "financial");
        let mut classifier = Classifier::new();
        for _ in 0..60 {
            classifier.add("We walked along the river and had lunch in the park before the rain came.");
        }
        classifier.add(aside);
        let whole = classifier.finish(0.3);
        assert_eq!(whole.category, FALLBACK_CATEGORY, "{whole:?}");
        assert!(whole.confidence > 0.0 && whole.confidence < classify(aside, 0.3).confidence, "{whole:?}");
    }

    #[test]
    fn mixed_documents_are_less_certain() {
        let pure = classify(FINANCE_TEXT, 0.0).confidence;
        let mixed = classify(&format!("{FINANCE_TEXT} {CONTRACT_TEXT}"), 0.0).confidence;
        assert!(mixed < pure, "{mixed} < {pure}");
    }

    /// How often each term occurs in `text`, by term id, as [`scan_terms`] finds them.
    fn term_counts(rules: &Rules, text: &str) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        scan_terms(rules, text, |id| *counts.entry(id).or_default() += 1);
        counts
    }

    /// The scanner's definition of a term match, as the regular expression it replaced: the longest-first
    /// alternation of every term, case-insensitive, between Unicode word boundaries, with an optional plural
    /// ending; the matches' ids as [`term_counts`] counts them.
    fn regex_counts(text: &str) -> BTreeMap<usize, usize> {
        static PATTERN: LazyLock<regex::Regex> = LazyLock::new(|| {
            let mut phrases: Vec<&str> = RULES.iter().flat_map(|r| r.iter().map(|(p, _)| *p)).collect();
            phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
            let alternation: Vec<String> = phrases.iter().map(|p| regex::escape(p).replace(' ', r"\s+")).collect();
            regex::Regex::new(&format!(r"(?i)\b(?:{})(?:es|s)?\b", alternation.join("|"))).unwrap()
        });
        let rules = &*COMPILED;
        let mut counts = BTreeMap::new();
        for m in PATTERN.find_iter(text) {
            if let Some(id) = term_id(rules, m.as_str()) {
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn only_the_kelvin_sign_and_long_s_match_an_ascii_letter_case_insensitively() {
        // `fold` relies on this: every other character that matches [a-z] case-insensitively lowercases into it.
        let letter = regex::Regex::new("(?i)^[a-z]$").unwrap();
        let others: Vec<char> = (0x80..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|c| letter.is_match(c.encode_utf8(&mut [0; 4])))
            .collect();
        assert_eq!(others, ['\u{17f}', '\u{212a}']);
    }

    #[test]
    fn terms_match_as_the_alternation_does() {
        for text in [
            FINANCE_TEXT,
            MEDICAL_TEXT,
            CONTRACT_TEXT,
            HR_TEXT,
            TECH_TEXT,
            "Balance  Sheets, balance\nsheet, BALANCE\u{a0}SHEETS and balance-sheet; taxes, taxs, taxess",
            "ICD-10 codes, icd-10s, icd - 10, an X-Ray and x-rays; non-disclosure agreements",
            "\u{212a}idney disease, \u{17f}tock, stock_options, stocké, stock\u{301}, tax\u{b2}, medical records",
            "accounts payable accounts receivable account balance",
            // Words of 31, 32 and 33 letters, around the shape filter's limit.
            "taxabcdefghijklmnopqrstuvwxyz0123 taxabcdefghijklmnopqrstuvwxyz012 taxabcdefghijklmnopqrstuvwxyz01 tax",
        ] {
            assert_eq!(term_counts(&COMPILED, text), regex_counts(text), "{text:?}");
        }
        assert!(term_counts(&COMPILED, "medical records").values().sum::<usize>() == 1);
    }

    /// Pieces of text that put terms, their parts, plural endings and every kind of boundary next to each other.
    fn piece() -> impl Strategy<Value = String> {
        let terms: Vec<&str> = RULES.iter().flat_map(|r| r.iter().map(|(p, _)| *p)).collect();
        prop_oneof![
            4 => proptest::sample::select(terms).prop_map(str::to_owned),
            2 => proptest::sample::select(vec![
                "balance", "sheet", "account", "medical", "record", "x", "ray", "icd", "10", "non", "tax", "stock",
            ])
            .prop_map(str::to_owned),
            2 => proptest::sample::select(vec!["s", "es", "ess", "e", "_", "\u{301}", "\u{e9}", "\u{b2}", "9"])
                .prop_map(str::to_owned),
            4 => proptest::sample::select(vec![" ", "  ", "\t", "\n", "\u{a0}", "-", "--", ".", ", ", "/"])
                .prop_map(str::to_owned),
        ]
        .prop_flat_map(|p| {
            // Random case, and now and then the two characters that fold to ASCII letters without lowercasing to
            // them.
            proptest::collection::vec(0u8..8, p.chars().count()).prop_map(move |cases| {
                p.chars()
                    .zip(cases)
                    .map(|(c, case)| match (c, case) {
                        ('k', 0) => '\u{212a}',
                        ('s', 0) => '\u{17f}',
                        (c, 1..=3) => c.to_ascii_uppercase(),
                        (c, _) => c,
                    })
                    .collect::<String>()
            })
        })
    }

    proptest! {
        #[test]
        fn whitespace_words_are_split_whitespace(text in "[ a\\t\\n\\x0b\\x0c\\r\\x1c\\x85\\u{a0}é-]{0,40}") {
            prop_assert_eq!(whitespace_words(&text), text.split_whitespace().count());
        }

        #[test]
        fn scanner_counts_what_the_alternation_matches(pieces in proptest::collection::vec(piece(), 0..40)) {
            let text = pieces.concat();
            prop_assert_eq!(term_counts(&COMPILED, &text), regex_counts(&text), "{:?}", text);
        }

        #[test]
        fn deterministic_and_bounded(text in "\\PC{0,300}") {
            let a = classify(&text, 0.5);
            prop_assert_eq!(&a, &classify(&text, 0.5));
            prop_assert!((0.0..=1.0).contains(&a.confidence));
            prop_assert!(a.scores.values().all(|s| (0.0..=1.0).contains(s)));
        }
    }
}

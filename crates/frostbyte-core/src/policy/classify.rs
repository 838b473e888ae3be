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

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

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
    pattern: Regex,
    /// Term text (lowercase, single spaces) → term id.
    ids: HashMap<&'static str, usize>,
    /// Per term id: (category index, weight).
    terms: Vec<(usize, f64)>,
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
    // Longest first, so that "balance sheet" wins over a shorter term at the same position.
    phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let alternation: Vec<String> = phrases.iter().map(|p| regex::escape(p).replace(' ', r"\s+")).collect();
    let pattern = Regex::new(&format!(r"(?i)\b(?:{})(?:es|s)?\b", alternation.join("|")))
        .expect("built-in classification pattern compiles");
    Rules { pattern, ids, terms }
});

fn term_id(rules: &Rules, matched: &str) -> Option<usize> {
    let key = matched.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    rules
        .ids
        .get(key.as_str())
        .or_else(|| key.strip_suffix("es").and_then(|k| rules.ids.get(k)))
        .or_else(|| key.strip_suffix('s').and_then(|k| rules.ids.get(k)))
        .copied()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Classifies `text`; see the module docs for the scoring and the fallback.
pub fn classify(text: &str, threshold: f64) -> Classification {
    let rules = &*COMPILED;
    let mut counts = vec![0usize; rules.terms.len()];
    for m in rules.pattern.find_iter(text) {
        if let Some(id) = term_id(rules, m.as_str()) {
            counts[id] += 1;
        }
    }
    let mut raw = [0.0f64; 5];
    for (id, &n) in counts.iter().enumerate() {
        if n > 0 {
            let (category, weight) = rules.terms[id];
            raw[category] += weight * (1.0 + (n as f64).ln());
        }
    }
    let words = text.split_whitespace().count() as f64;
    let length_damping = (words / 150.0).sqrt().max(1.0);
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
    fn mixed_documents_are_less_certain() {
        let pure = classify(FINANCE_TEXT, 0.0).confidence;
        let mixed = classify(&format!("{FINANCE_TEXT} {CONTRACT_TEXT}"), 0.0).confidence;
        assert!(mixed < pure, "{mixed} < {pure}");
    }

    proptest! {
        #[test]
        fn deterministic_and_bounded(text in "\\PC{0,300}") {
            let a = classify(&text, 0.5);
            prop_assert_eq!(&a, &classify(&text, 0.5));
            prop_assert!((0.0..=1.0).contains(&a.confidence));
            prop_assert!(a.scores.values().all(|s| (0.0..=1.0).contains(s)));
        }
    }
}

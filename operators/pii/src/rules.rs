//! Recognizers kept as data: secrets (API keys, access tokens, passwords in assignments,
//! private-key blocks) and personal data found by its context (dates of birth, NHS and medical
//! record numbers, passport numbers, postal addresses, names after a title or a role).
//!
//! `secrets.toml` holds one rule per vendor token format and `context.toml` one per context
//! (next to this crate's manifest); each rule lists keywords one of which every match
//! contains. One case-insensitive Aho-Corasick pass over a text finds which keywords occur;
//! only the rules they name run their regex, so a text without any keyword costs that single
//! pass. A rule may mark the part of its match that is the value (the key after
//! `aws_secret_access_key =`, the date after `born`), require a least entropy of it (random
//! keys, not words or hex digests), and name a check the value must pass (`nhs` mod 11, a
//! plausible `birth-date`, a `name` from the gazetteer).
//!
//! Spans are returned sorted and non-overlapping; where rules overlap the earlier start wins,
//! then the longer span, then the rule listed first.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_automata::meta::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use serde::Deserialize;

use crate::{PiiKind, context};

/// The rule sets, compiled into the binary.
const RULE_FILES: [&str; 2] = [
    include_str!("../secrets.toml"),
    include_str!("../context.toml"),
];

/// A rule as written in `secrets.toml` (its examples and negatives are read by the tests).
#[derive(Debug, Deserialize)]
#[cfg_attr(not(test), allow(dead_code))]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    pub(crate) id: String,
    /// The kind found (secrets by default).
    #[serde(default = "secret_kind")]
    pub(crate) kind: RuleKind,
    pub(crate) keywords: Vec<String>,
    pub(crate) regex: String,
    #[serde(default)]
    pub(crate) entropy: Option<f64>,
    #[serde(default)]
    pub(crate) check: Option<Check>,
    /// Most bytes between a keyword and either end of a match (default 256): the regex runs
    /// only this far around where a keyword occurs.
    #[serde(default)]
    pub(crate) reach: Option<usize>,
    /// Whether every match starts where its keyword does: the regex is then tried anchored
    /// there (failing in a few bytes), not searched for around it.
    #[serde(default)]
    pub(crate) at_keyword: bool,
    #[serde(default)]
    pub(crate) examples: Vec<String>,
    #[serde(default)]
    pub(crate) negatives: Vec<String>,
}

fn secret_kind() -> RuleKind {
    RuleKind::Secret
}

/// The kinds a rule may find.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RuleKind {
    Secret,
    Name,
    Address,
    Dob,
    HealthId,
    Passport,
}

impl RuleKind {
    pub(crate) fn pii(self) -> PiiKind {
        match self {
            RuleKind::Secret => PiiKind::Secret,
            RuleKind::Name => PiiKind::Name,
            RuleKind::Address => PiiKind::Address,
            RuleKind::Dob => PiiKind::Dob,
            RuleKind::HealthId => PiiKind::HealthId,
            RuleKind::Passport => PiiKind::Passport,
        }
    }
}

/// A check the value must pass, beyond its shape.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Check {
    /// An NHS number: ten digits, the last the mod-11 check digit of the others.
    Nhs,
    /// A calendar date between 1900 and this century, in any of the usual orders.
    BirthDate,
    /// A person's name: its first word a given name of the gazetteer, or every word
    /// capitalized.
    Name,
    /// A person's name whose first word is a given name of the gazetteer and every word is
    /// capitalized (no cue before it).
    GazetteerName,
    /// A name after a title (`Mr.`, `Dr.`): a surname alone will do, but not a word of
    /// [`context::name`]'s stop list (`Dr. No`).
    TitledName,
    /// A travel document's number: 6 to 9 letters and digits, at least 5 of them digits.
    DocumentNumber,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RuleSpec>,
}

/// Why the rule set does not load (a build of this crate with a broken rule file).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RulesError {
    #[error("rule file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("rule {id}: {source}")]
    Regex {
        id: String,
        source: Box<regex_automata::meta::BuildError>,
    },
    #[error("rule {0}: no keywords")]
    NoKeywords(String),
    #[error("{0} rules, at most 64")]
    TooMany(usize),
    #[error("rule keywords: {0}")]
    Keywords(#[from] aho_corasick::BuildError),
}

struct Rule {
    regex: Regex,
    /// The `value` group marking the span, if the regex has one.
    group: Option<usize>,
    at_keyword: bool,
    entropy: f64,
    check: Option<Check>,
    kind: PiiKind,
    reach: usize,
}

/// The compiled rule set.
pub(crate) struct Rules {
    #[cfg(test)]
    specs: Vec<RuleSpec>,
    rules: Vec<Rule>,
    keywords: AhoCorasick,
    /// For each keyword (pattern id), the bit set of the rules that list it.
    keyword_rules: Vec<u64>,
    /// The rules whose keyword is [`GAZETTEER`]: fired by a capitalized given name.
    gazetteer_rules: u64,
}

/// The keyword that fires a rule where a text has a capitalized given name of the gazetteer
/// followed by another capitalized word.
const GAZETTEER: &str = "<gazetteer>";

impl Rules {
    pub(crate) fn parse(files: &[&str]) -> Result<Self, RulesError> {
        let mut specs = Vec::new();
        for text in files {
            let file: RuleFile = toml::from_str(text)?;
            specs.extend(file.rule);
        }
        if specs.len() > 64 {
            return Err(RulesError::TooMany(specs.len()));
        }
        let mut rules = Vec::with_capacity(specs.len());
        let mut keywords = Vec::new();
        let mut keyword_rules = Vec::new();
        let mut gazetteer_rules = 0u64;
        for (i, spec) in specs.iter().enumerate() {
            if spec.keywords.is_empty() {
                return Err(RulesError::NoKeywords(spec.id.clone()));
            }
            let regex = Regex::builder()
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .configure(Regex::config().hybrid_cache_capacity(8 << 20))
                .build(&spec.regex)
                .map_err(|source| RulesError::Regex {
                    id: spec.id.clone(),
                    source: Box::new(source),
                })?;
            let group = regex
                .group_info()
                .to_index(regex_automata::PatternID::ZERO, "value");
            rules.push(Rule {
                regex,
                group,
                entropy: spec.entropy.unwrap_or(0.0),
                check: spec.check,
                kind: spec.kind.pii(),
                reach: spec.reach.unwrap_or(256),
                at_keyword: spec.at_keyword,
            });
            for keyword in &spec.keywords {
                if keyword == GAZETTEER {
                    gazetteer_rules |= 1u64 << i;
                    continue;
                }
                let lower = keyword.to_ascii_lowercase();
                match keywords.iter().position(|k| *k == lower) {
                    Some(k) => keyword_rules[k] |= 1u64 << i,
                    None => {
                        keywords.push(lower);
                        keyword_rules.push(1u64 << i);
                    }
                }
            }
        }
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)?;
        Ok(Rules {
            #[cfg(test)]
            specs,
            rules,
            keywords,
            keyword_rules,
            gazetteer_rules,
        })
    }

    /// The rules as written, in order.
    #[cfg(test)]
    pub(crate) fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// The values the rules find in `text`, sorted and non-overlapping, each with its rule's
    /// index.
    pub(crate) fn scan(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let bytes = text.as_bytes();
        // Where each fired rule must look: `(rule, from, to, anchored)` at or around each
        // keyword found.
        let mut tries: Vec<(usize, usize, usize, bool)> = Vec::new();
        let mut push = |i: usize, start: usize, end: usize| {
            let rule = &self.rules[i];
            let to = (end + rule.reach).min(bytes.len());
            if rule.at_keyword {
                tries.push((i, start, to, true));
            } else {
                tries.push((i, start.saturating_sub(rule.reach), to, false));
            }
        };
        for (pattern, start, end) in self.keyword_hits(bytes) {
            let mut fired = self.keyword_rules[pattern];
            while fired != 0 {
                let i = fired.trailing_zeros() as usize;
                fired &= fired - 1;
                push(i, start, end);
            }
        }
        if self.gazetteer_rules != 0 {
            context::given_names(bytes, |start, end| {
                let mut fired = self.gazetteer_rules;
                while fired != 0 {
                    let i = fired.trailing_zeros() as usize;
                    fired &= fired - 1;
                    push(i, start, end);
                }
            });
        }
        if tries.is_empty() {
            return Vec::new();
        }
        tries.sort_unstable();
        tries.dedup();
        let mut found = Vec::new();
        let mut k = 0;
        while k < tries.len() {
            let (i, from, mut to, anchored) = tries[k];
            k += 1;
            if anchored {
                // A match found at an earlier keyword may cover this one.
                if found
                    .last()
                    .is_some_and(|&(_, end, r): &(usize, usize, usize)| r == i && end > from)
                {
                    continue;
                }
                self.search(i, text, from, to, true, &mut found);
                continue;
            }
            // Overlapping windows of one rule are searched as one.
            while k < tries.len() && tries[k].0 == i && !tries[k].3 && tries[k].1 <= to {
                to = to.max(tries[k].2);
                k += 1;
            }
            let (from, to) = (floor_char(text, from), ceil_char(text, to));
            self.search(i, text, from, to, false, &mut found);
        }
        found.sort_by_key(|&(start, end, i)| (start, std::cmp::Reverse(end), i));
        let mut end = 0;
        found.retain(|&(s, e, _)| {
            let keep = s >= end;
            if keep {
                end = e;
            }
            keep
        });
        found
    }

    /// Every keyword occurrence in `bytes`, overlapping ones too (`avenida` inside
    /// ` avenida`), as `(pattern, start, end)`, sorted.
    fn keyword_hits(&self, bytes: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut hits: Vec<(usize, usize, usize)> = self
            .keywords
            .find_overlapping_iter(bytes)
            .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
            .collect();
        hits.sort_unstable();
        hits
    }

    /// Adds the values rule `i` finds in `text[from..to]`: the one starting at `from` if
    /// `anchored`, else every one (resuming just after the start of a match that fails its
    /// check: a shorter one may start inside it, `user Customer aiko tanaka`).
    fn search(
        &self,
        i: usize,
        text: &str,
        from: usize,
        to: usize,
        anchored: bool,
        found: &mut Vec<(usize, usize, usize)>,
    ) {
        let rule = &self.rules[i];
        let bytes = text.as_bytes();
        let mut caps: Option<Captures> = rule.group.map(|_| rule.regex.create_captures());
        let mut at = from;
        while at < to {
            let input = Input::new(bytes).range(at..to).anchored(if anchored {
                Anchored::Yes
            } else {
                Anchored::No
            });
            let (whole, value) = match (&mut caps, rule.group) {
                (Some(caps), Some(group)) => {
                    // Resolving the groups costs ten times the match: a name rule first
                    // checks the word after its cue (most cues are followed by no name).
                    if anchored
                        && let Some(check) = rule.check
                        && !context::may_start_name(check_kind(check), bytes, at, to)
                    {
                        break;
                    }
                    rule.regex.search_captures(&input, caps);
                    let (Some(whole), Some(value)) = (caps.get_match(), caps.get_group(group))
                    else {
                        break;
                    };
                    ((whole.start(), whole.end()), (value.start, value.end))
                }
                _ => {
                    let Some(m) = rule.regex.search(&input) else {
                        break;
                    };
                    ((m.start(), m.end()), (m.start(), m.end()))
                }
            };
            match accept(rule, text, value.0, value.1) {
                Some(end) => {
                    found.push((value.0, end, i));
                    at = whole.1.max(next_char(text, whole.0));
                }
                None => at = next_char(text, whole.0),
            }
            if anchored {
                break;
            }
        }
    }

    /// The id of rule `i`.
    #[cfg(test)]
    pub(crate) fn id(&self, i: usize) -> &str {
        &self.specs[i].id
    }

    /// The kind rule `i` finds.
    pub(crate) fn kind(&self, i: usize) -> PiiKind {
        self.rules[i].kind
    }
}

/// The end of the value `text[start..end]` that `rule` finds there, if it accepts it.
fn accept(rule: &Rule, text: &str, start: usize, end: usize) -> Option<usize> {
    // Entropy is never negative: only a rule with a floor counts it.
    if !(text.is_char_boundary(start)
        && text.is_char_boundary(end)
        && (rule.entropy <= 0.0 || entropy(&text.as_bytes()[start..end]) >= rule.entropy))
    {
        return None;
    }
    // A street number inside a token (`v4.35.100 Main Street Bank`, `ORD-16890-20 Main…`)
    // starts no address.
    let b = text.as_bytes();
    if rule.kind == PiiKind::Address
        && start >= 2
        && b".-/:_#".contains(&b[start - 1])
        && b[start - 2].is_ascii_alphanumeric()
    {
        return None;
    }
    match rule.check {
        None => Some(end),
        Some(c) => check(c, &text[start..end]).map(|len| start + len),
    }
}

/// `i`, or the start of the character it falls in.
fn floor_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `i`, or the end of the character it falls in.
fn ceil_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The offset of the character after the one at `i`.
fn next_char(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

/// What [`context::may_start_name`] must check for `check`.
fn check_kind(check: Check) -> Option<context::NameCue> {
    match check {
        Check::Name => Some(context::NameCue::Role),
        Check::TitledName => Some(context::NameCue::Title),
        Check::GazetteerName | Check::Nhs | Check::BirthDate | Check::DocumentNumber => None,
    }
}

/// Whether `value` passes `check`: the length of the value it accepts (a name may end
/// before the words the rule's shape let in after it).
fn check(check: Check, value: &str) -> Option<usize> {
    let whole = |ok: bool| ok.then_some(value.len());
    match check {
        Check::Nhs => whole(context::nhs_valid(value)),
        Check::BirthDate => whole(context::birth_date(value)),
        Check::DocumentNumber => whole(context::document_number(value)),
        Check::Name => context::name(value, false),
        Check::TitledName => context::titled_name(value),
        Check::GazetteerName => context::name(value, true),
    }
}

/// Shannon entropy of `bytes` in bits per byte.
fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The built-in rule set.
pub(crate) static RULES: LazyLock<Rules> = LazyLock::new(|| {
    // Panic: the rule files are part of the crate; the unit tests load them.
    Rules::parse(&RULE_FILES).expect("the rule files are valid")
});

#[cfg(test)]
mod tests {
    use super::*;

    /// An example's text and the secret's span in it (`⟦…⟧`, else the whole example).
    fn marked(example: &str) -> (String, usize, usize) {
        match (example.find('⟦'), example.find('⟧')) {
            (Some(open), Some(close)) => {
                let text = example.replace(['⟦', '⟧'], "");
                (text, open, close - '⟦'.len_utf8())
            }
            _ => (example.to_string(), 0, example.len()),
        }
    }

    #[test]
    fn the_rule_set_loads() {
        assert!(RULES.specs().len() >= 35);
    }

    #[test]
    fn every_example_is_found_whole_by_its_rule_in_every_context() {
        let contexts: [(&str, &str); 6] = [
            ("", ""),
            ("key: ", " (rotate)"),
            ("\"", "\","),
            ("export X=", "\n"),
            ("l'agent a utilisé ", " hier."),
            ("日志 ", " 。"),
        ];
        for (i, spec) in RULES.specs().iter().enumerate() {
            assert!(
                !spec.examples.is_empty(),
                "rule {} has no examples",
                spec.id
            );
            for example in &spec.examples {
                let (value, start, end) = marked(example);
                for (before, after) in contexts {
                    let text = format!("{before}{value}{after}");
                    let found = RULES.scan(&text);
                    let want = (before.len() + start, before.len() + end);
                    assert!(
                        found.iter().any(|&(s, e, _)| (s, e) == want),
                        "{}: {text:?} -> {:?}, want {:?}",
                        spec.id,
                        found
                            .iter()
                            .map(|&(s, e, r)| (&text[s..e], RULES.id(r)))
                            .collect::<Vec<_>>(),
                        &text[want.0..want.1]
                    );
                    let by = found.iter().find(|&&(s, _, _)| s == want.0).map(|f| f.2);
                    assert_eq!(by, Some(i), "{}: {text:?} found by another rule", spec.id);
                }
            }
        }
    }

    #[test]
    fn negatives_find_nothing() {
        for spec in RULES.specs() {
            for text in &spec.negatives {
                let found: Vec<&str> = RULES
                    .scan(text)
                    .iter()
                    .map(|&(s, e, _)| &text[s..e])
                    .collect();
                assert!(found.is_empty(), "{}: {text:?} -> {found:?}", spec.id);
            }
        }
    }

    #[test]
    fn plain_prose_and_identifiers_are_not_secrets() {
        for text in [
            "The task-runner finished; see ticket OPS-1234 and the ASIAN desk.",
            "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "passwords must be rotated every 90 days",
            "token budget: 4096 tokens; api_key rotation is quarterly",
            "request_id=7f9c2ba4e88f827d616045507605853e",
            "https://docs.example.com:443/guide?x=1",
            "eyJ is the start of a base64 JSON object",
        ] {
            let found: Vec<&str> = RULES
                .scan(text)
                .iter()
                .map(|&(s, e, _)| &text[s..e])
                .collect();
            assert!(found.is_empty(), "{text:?} -> {found:?}");
        }
    }

    #[test]
    fn spans_never_split_a_character() {
        let text = "password=ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé";
        for (s, e, _) in RULES.scan(text) {
            assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
        }
    }

    #[test]
    fn entropy_separates_keys_from_words() {
        assert!(entropy(b"spNxnyVmihA+2O76UMFxFkM+R5Kjp1vRt/1fjORS") > 4.2);
        assert!(entropy(b"3f2a9c0d1e4b5a6978877665544332211aabbccd") < 4.2);
        assert!(entropy(b"********") < 1.0);
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// How often each rule is tried on the benchmark corpus, and the time spent (to find
    /// keywords that cost).
    #[test]
    #[ignore]
    fn print_rule_fires() {
        let samples = crate::corpus::corpus(2000, 1024, 0xBE7C);
        let n = RULES.rules.len();
        let (mut tries, mut nanos) = (vec![0usize; n], vec![0u128; n]);
        for s in &samples {
            let text = s.text.as_str();
            for (pattern, start, end) in RULES.keyword_hits(text.as_bytes()) {
                let mut fired = RULES.keyword_rules[pattern];
                while fired != 0 {
                    let i = fired.trailing_zeros() as usize;
                    fired &= fired - 1;
                    let rule = &RULES.rules[i];
                    let anchored = rule.at_keyword;
                    let from = if anchored {
                        start
                    } else {
                        start.saturating_sub(rule.reach)
                    };
                    let to = (end + rule.reach).min(text.len());
                    let (from, to) = (floor_char(text, from), ceil_char(text, to));
                    let t = std::time::Instant::now();
                    let mut found = Vec::new();
                    RULES.search(i, text, from, to, anchored, &mut found);
                    nanos[i] += t.elapsed().as_nanos();
                    tries[i] += 1;
                }
            }
        }
        for i in 0..n {
            println!(
                "{:8} tries {:8} us {}",
                tries[i],
                nanos[i] / 1000,
                RULES.specs[i].id
            );
        }
        let bytes: usize = samples.iter().map(|s| s.text.len()).sum();
        let per_kb =
            |d: std::time::Duration| d.as_nanos() as f64 / (bytes as f64 / 1024.0) / 1000.0;
        for pass in 0..2 {
            let t = std::time::Instant::now();
            let hits: usize = samples
                .iter()
                .map(|s| RULES.keyword_hits(s.text.as_bytes()).len())
                .sum();
            let keywords = t.elapsed();
            let t = std::time::Instant::now();
            let mut names = 0;
            for s in &samples {
                context::given_names(s.text.as_bytes(), |_, _| names += 1);
            }
            let given = t.elapsed();
            let t = std::time::Instant::now();
            let found: usize = samples.iter().map(|s| RULES.scan(&s.text).len()).sum();
            let rules = t.elapsed();
            let t = std::time::Instant::now();
            let spans: usize = samples.iter().map(|s| crate::scan(&s.text).len()).sum();
            let all = t.elapsed();
            println!(
                "pass {pass}: keywords {hits} hits {:.2} us/KB; given names {names} {:.2} us/KB; \
                 rules {found} {:.2} us/KB; scan {spans} {:.2} us/KB",
                per_kb(keywords),
                per_kb(given),
                per_kb(rules),
                per_kb(all)
            );
        }
    }
}

//! PII recognizers and tenant-keyed tokens.
//!
//! A [`Tokenizer`] finds personal data and secrets in free text and replaces each occurrence by a
//! deterministic token `<KIND:tok_…>`: the same value gives the same token within a tenant (so
//! auditors can still correlate), and tokens are unlinkable across tenants because each tenant
//! has its own key: a random key kept wrapped in the keystore and destroyed when the tenant is
//! erased ([`TokenKeys`]), or, without a keystore, one derived from the master key and the
//! tenant id with HMAC-SHA256.
//!
//! Recognizers, in two families:
//! - **Shapes**, one combined byte regex scanned once per text, each match confirmed by its
//!   module: emails (Unicode and IDN too), payment cards (issuer range and Luhn, `card`), US
//!   SSNs (`ssn`), IBANs (registry length and mod 97, `iban`), phone numbers (libphonenumber,
//!   `phone`) and personal IPv4 and IPv6 addresses (`ip`).
//! - **Keyword rules**, kept as data (`secrets.toml`, `context.toml`; `rules`): secrets in
//!   vendors' published token formats, and personal data found by its context: dates of
//!   birth, NHS (mod 11) and medical record numbers, passport numbers, postal addresses, and
//!   names after a title or role or starting with a given name of the gazetteer
//!   (`data/given_names.txt`; checks in `context`). A rule runs only where one of its keywords
//!   occurs.
//!
//! What a rule finds wins over shapes inside it; shapes are looked for between. [`corpus`]
//! scores every kind on a labeled corpus generated from the formats' specifications.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use hmac::{Hmac, Mac};
use regex::bytes::{Regex, RegexBuilder};
use sha2::Sha256;

mod card;
mod context;
pub mod corpus;
mod iban;
mod ip;
mod phone;
mod rules;
mod ssn;

type HmacSha256 = Hmac<Sha256>;

/// The kinds of sensitive data the scanner recognizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A payment card number that passes the Luhn check.
    Card,
    /// An API key, token or private key block.
    Secret,
    /// A US social security number.
    Ssn,
    /// An IBAN that passes the mod-97 check.
    Iban,
    /// A phone number.
    Phone,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A person's name (after a title or role, or a given name of the gazetteer).
    Name,
    /// A postal address.
    Address,
    /// A date of birth (a date after words naming it).
    Dob,
    /// A health identifier: an NHS number (mod 11) or a medical record number.
    HealthId,
    /// A passport number (after words naming it).
    Passport,
    /// A tenant's own dictionary word or pattern (the token shows the rule's label).
    Custom,
}

/// Number of kinds, built-in and custom: the size of per-kind counters.
pub const KINDS: usize = 13;

impl PiiKind {
    /// Every built-in kind.
    pub const ALL: [PiiKind; 12] = [
        PiiKind::Email,
        PiiKind::Card,
        PiiKind::Secret,
        PiiKind::Ssn,
        PiiKind::Iban,
        PiiKind::Phone,
        PiiKind::Ip,
        PiiKind::Name,
        PiiKind::Address,
        PiiKind::Dob,
        PiiKind::HealthId,
        PiiKind::Passport,
    ];

    /// The label used inside tokens and metrics.
    pub fn label(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Card => "CARD",
            PiiKind::Secret => "SECRET",
            PiiKind::Ssn => "SSN",
            PiiKind::Iban => "IBAN",
            PiiKind::Phone => "PHONE",
            PiiKind::Ip => "IP",
            PiiKind::Name => "NAME",
            PiiKind::Address => "ADDRESS",
            PiiKind::Dob => "DOB",
            PiiKind::HealthId => "HEALTH_ID",
            PiiKind::Passport => "PASSPORT",
            PiiKind::Custom => "CUSTOM",
        }
    }
}

/// Group names in [`PATTERN`], in the same order as the alternation (leftmost-first priority).
const GROUPS: [(&str, PiiKind); 7] = [
    ("email", PiiKind::Email),
    ("iban", PiiKind::Iban),
    ("card", PiiKind::Card),
    ("ssn", PiiKind::Ssn),
    ("ip", PiiKind::Ip),
    ("ip6", PiiKind::Ip),
    ("phone", PiiKind::Phone),
];

const PATTERN: &str = r"(?x)
  (?P<email>[A-Za-z0-9._%+'\x80-\xff-]+@(?:[A-Za-z0-9\x80-\xff-]+\.)+(?:xn--[A-Za-z0-9-]+|[A-Za-z]{2,}|[\x80-\xff]{4,}))
| (?P<iban>\b[A-Za-z]{2}[0-9]{2}(?:[\ -]?[A-Za-z0-9]{4}){2,7}(?:[\ -]?[A-Za-z0-9]{1,3})?\b)
| (?P<card>\b(?:[0-9]{14,19}|[0-9]{4}(?:[\ -][0-9]{4}){3}(?:[\ -][0-9]{3})?|[0-9]{4}[\ -][0-9]{6}[\ -][0-9]{4,5})\b)
| (?P<ssn>\b(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3}\ [0-9]{2}\ [0-9]{4}|[0-9]{9})\b)
| (?P<ip>\b(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\b)
| (?P<ip6>(?:\b[0-9A-Fa-f]{1,4}(?:::?[0-9A-Fa-f]{1,4}){1,7}(?:::)?|\b[0-9A-Fa-f]{1,4}::|\B::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?)(?:(?:\.[0-9]{1,3}){3})?)
| (?P<phone>(?:
      (?:\+|\b00)\ ?[1-9][0-9]{0,3}(?:[\ .\-/]?\(0\))?(?:[\ .\-/]?[0-9]{1,6}){1,6}
    | \(0?[0-9]{1,5}\)\ ?[0-9]{2,5}(?:[\ .\-/][0-9]{2,5}){0,3}
    | \b0[0-9]{1,5}(?:[\ .\-/][0-9]{2,8}){1,5}
    | \b[1-9][0-9]{1,4}(?:[\ .\-][0-9]{2,5}){1,4}
  )(?:\ ?(?:x|ext\.?|extension)\ ?[0-9]{1,6})?\b)
";

static SCANNER: LazyLock<Regex> = LazyLock::new(|| {
    RegexBuilder::new(PATTERN)
        .unicode(false)
        // The lazy DFA of this many alternations outgrows the default 2 MiB cache on mixed
        // text and would thrash; a bigger cache keeps the scan in the DFA.
        .dfa_size_limit(32 << 20)
        .build()
        // Panic: PATTERN is a constant; the unit tests compile it.
        .expect("pii pattern compiles")
});

/// The text of the alternative `name` of [`PATTERN`] (its `(?P<name>…)` line or lines).
fn alternative(name: &str) -> &'static str {
    let open = format!("(?P<{name}>");
    // Panic: only called with names of GROUPS, each in PATTERN (the unit tests build every
    // shape that uses it).
    let start = PATTERN.find(&open).expect("a group of PATTERN");
    let len = PATTERN[start..]
        .find("\n| ")
        .unwrap_or(PATTERN.len() - start);
    &PATTERN[start..start + len]
}

/// `(?x)` anchored at the start (and at the end if `whole`) of the alternative `name`.
fn anchored(name: &str, whole: bool) -> Regex {
    let end = if whole { "$" } else { "" };
    RegexBuilder::new(&format!("(?x)^(?:{}){end}", alternative(name)))
        .unicode(false)
        .build()
        // Panic: PATTERN is a constant; the unit tests compile every shape built from it.
        .expect("pii shape compiles")
}

/// The phone alternative alone, anchored: tried where a match of an earlier alternative was
/// rejected (French `01.23.45.67.89` is an IPv4 address followed by more).
static PHONE_AT: LazyLock<Regex> = LazyLock::new(|| anchored("phone", false));

/// Whole-match shapes of the digit-only alternatives, in the alternation's order.
static DIGIT_SHAPES: LazyLock<[(Regex, PiiKind); 3]> = LazyLock::new(|| {
    [
        (anchored("card", true), PiiKind::Card),
        (anchored("ssn", true), PiiKind::Ssn),
        (anchored("ip", true), PiiKind::Ip),
    ]
});

/// A recognized span in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiiSpan {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// What was recognized.
    pub kind: PiiKind,
}

/// Finds the sensitive spans in `text`, left to right, non-overlapping. What the keyword
/// rules find (secrets, and data found by its context) comes first: a shape of another kind
/// inside or across it (digits of a token, the `user:pass@host` of a URL, the number of a
/// street address) is part of it.
pub fn scan(text: &str) -> Vec<PiiSpan> {
    let found = rules::RULES.scan(text);
    let mut spans = Vec::new();
    if !may_contain_pii(text.as_bytes()) {
        spans.extend(found.into_iter().map(|(start, end, rule)| PiiSpan {
            start,
            end,
            kind: rules::RULES.kind(rule),
        }));
        return spans;
    }
    // The shapes are looked for between what the rules found (a date of birth is not the
    // start of a phone number running into the card after it).
    let mut from = 0;
    for (start, end, rule) in found {
        scan_shapes(text, from, start, &mut spans);
        spans.push(PiiSpan {
            start,
            end,
            kind: rules::RULES.kind(rule),
        });
        from = end;
    }
    scan_shapes(text, from, text.len(), &mut spans);
    spans
}

/// Appends the spans of [`PATTERN`]'s shapes (every kind but the rules') in `text[from..to]`,
/// each confirmed by its module.
fn scan_shapes(text: &str, from: usize, to: usize, spans: &mut Vec<PiiSpan>) {
    if from >= to {
        return;
    }
    // Shapes end by `to` (they may look at what precedes `from`).
    let text = &text[..to];
    let bytes = text.as_bytes();
    let mut pos = from;
    // The DFA finds each match; its alternative is read off its shape (resolving capture
    // groups costs more than the scan itself).
    while let Some(m) = SCANNER.find_at(bytes, pos) {
        let found = &bytes[m.start()..m.end()];
        let kind = classify(found);
        // A rejected phone candidate may have run into a value after it (a clock time into an
        // SSN, an order id into an address), and a rejected IBAN shape may have swallowed the
        // words after it (`ab12 with user jane@…`): the scan resumes right after their start
        // (inside a word, where no other shape can start). Other shapes rejected are passed
        // over whole (the digits of an invalid card are no phone).
        // A rejected card of digit groups that starts with a port (`:8080 6553 8844 1100
        // 5767`) started one group early: the scan resumes at its second group.
        pos = if matches!(kind, PiiKind::Phone | PiiKind::Iban) {
            m.start() + 1
        } else if kind == PiiKind::Card && m.start() > 0 && bytes[m.start() - 1] == b':' {
            found
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(m.end(), |sep| m.start() + sep + 1)
        } else {
            m.end().max(pos + 1)
        };
        let whole = Some((m.start(), m.end()));
        let mut retry_phone = kind != PiiKind::Phone;
        let confirmed = match kind {
            PiiKind::Card => card_span(bytes, m.start(), m.end()),
            PiiKind::Iban => iban_span(bytes, m.start(), m.end()),
            PiiKind::Ssn => whole.filter(|_| ssn::valid(bytes, m.start(), m.end())),
            PiiKind::Ip if found.contains(&b':') => ip6_span(bytes, m.start(), m.end()),
            // Four numbers followed by more are not an address (a dotted phone number, a
            // version).
            PiiKind::Ip => {
                let continues = bytes.get(m.end()) == Some(&b'.')
                    && bytes.get(m.end() + 1).is_some_and(u8::is_ascii_digit);
                // An address that is not personal is still an address, not a phone number.
                retry_phone = continues;
                whole.filter(|_| !continues && ip::personal_v4(bytes, m.start(), m.end()))
            }
            PiiKind::Email => email_span(text, m.start(), m.end()),
            PiiKind::Phone => phone::confirm(text, m.start(), m.end()),
            _ => whole,
        };
        let confirmed = match confirmed {
            Some((start, end)) => Some((start, end, kind)),
            // A rejected match of another shape may start a phone number.
            None if retry_phone => PHONE_AT
                .find(&bytes[m.start()..])
                .and_then(|p| phone::confirm(text, m.start(), m.start() + p.end()))
                .map(|(start, end)| (start, end, PiiKind::Phone)),
            None => None,
        };
        if let Some((start, end, kind)) = confirmed {
            // A match cut back (a phone that ran into the next number) resumes scanning there.
            pos = end;
            spans.push(PiiSpan { start, end, kind });
        }
    }
}

/// Which alternative of [`PATTERN`] produced `found` (the shapes are disjoint).
fn classify(found: &[u8]) -> PiiKind {
    let starts = |p: &[u8]| found.starts_with(p);
    if found.contains(&b'@') {
        PiiKind::Email
    } else if found.contains(&b':') {
        PiiKind::Ip
    } else if found.len() > 2 && found[..2].iter().all(u8::is_ascii_alphabetic) {
        PiiKind::Iban
    } else if starts(b"+") || starts(b"(") {
        PiiKind::Phone
    } else {
        DIGIT_SHAPES
            .iter()
            .find(|(shape, _)| shape.is_match(found))
            .map_or(PiiKind::Phone, |(_, kind)| *kind)
    }
}

/// The alternative that matched, from the capture groups: the slow reference for
/// [`classify`].
#[doc(hidden)]
pub fn classify_by_groups(text: &str) -> Vec<(usize, PiiKind)> {
    SCANNER
        .captures_iter(text.as_bytes())
        .filter_map(|caps| {
            GROUPS
                .iter()
                .find_map(|(name, kind)| caps.name(name).map(|m| (m.start(), *kind)))
        })
        .collect()
}

/// Cheap pre-filter: every shape of [`PATTERN`] needs a digit, an `@` or a `:`.
fn may_contain_pii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|&b| b.is_ascii_digit() || matches!(b, b'@' | b':'))
}

/// The ASCII digits of `text` (separators skipped) into a buffer of `N`, and how many there
/// are; `None` if there are more than `N`.
fn digits_of<const N: usize>(text: &[u8]) -> Option<([u8; N], usize)> {
    let mut digits = [0u8; N];
    let mut n = 0;
    for &b in text.iter().filter(|b| b.is_ascii_digit()) {
        *digits.get_mut(n)? = b;
        n += 1;
    }
    Some((digits, n))
}

/// The card number in `text[start..end]`: the whole match, or without a trailing group of
/// three digits that belongs to what follows (`4111 1111 1111 1111 123` when the 19-digit
/// reading fails).
fn card_span(text: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    if card::valid(&text[start..end]) {
        return Some((start, end));
    }
    let found = &text[start..end];
    let cut = found.len().checked_sub(4)?;
    (matches!(found[cut], b' ' | b'-') && card::valid(&found[..cut]))
        .then_some((start, start + cut))
}

/// The IBAN that starts `text[start..end]` (a match of the IBAN shape, which may have run
/// into the words after it: `AT03 0718 5637 7622 8080 confidence`): the whole match, or
/// the longest valid prefix ending before a space or dash.
fn iban_span(text: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    // Inside a dashed token (a UUID's groups), not an account number.
    if start >= 2 && text[start - 1] == b'-' && text[start - 2].is_ascii_alphanumeric() {
        return None;
    }
    let mut end = end;
    loop {
        // Not the head of a longer dashed token (`be91fc97-e4c6-2c59-889f-…`, a UUID).
        let continues = text.get(end) == Some(&b'-')
            && text.get(end + 1).is_some_and(u8::is_ascii_alphanumeric);
        if !continues && iban::valid(&text[start..end]) {
            return Some((start, end));
        }
        end = start
            + text[start..end]
                .iter()
                .rposition(|b| matches!(b, b' ' | b'-'))?;
    }
}

/// The personal IPv6 address in `text[start..end]` (a match of the IPv6 shape), if it is one.
fn ip6_span(text: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    ip::personal_v6(&text[start..end]).then_some((start, end))
}

/// The address in `text[start..end]` (a match of the email shape) without punctuation the
/// shape let in around it: quotes, dots or guillemets before the local part, non-ASCII
/// punctuation after the domain (`«josé@correo.es»`, `'o'brien@example.ie'`).
fn email_span(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let found = text.get(start..end)?;
    let local_start = found
        .char_indices()
        .find(|&(_, c)| c.is_alphanumeric() || c == '_' || c == '@')
        .map_or(found.len(), |(i, _)| i);
    let domain_end = found
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_alphanumeric())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let email = found.get(local_start..domain_end)?;
    let (local, domain) = email.split_once('@')?;
    let tld = domain.rsplit_once('.')?.1;
    (!local.is_empty() && tld.chars().count() >= 2)
        .then_some((start + local_start, start + domain_end))
}

/// A tenant-specific recognizer from configuration: dictionary words (matched
/// case-insensitively as whole words) and/or a regular expression.
#[derive(Clone, Debug, Default)]
pub struct CustomRule {
    /// Shown in the token, e.g. `EMPLOYEE_ID` gives `<EMPLOYEE_ID:tok_…>`.
    pub label: String,
    /// A regular expression, if any.
    pub pattern: Option<String>,
    /// Dictionary words or phrases.
    pub words: Vec<String>,
    /// Tenants it applies to; empty for all.
    pub tenants: Vec<String>,
}

#[derive(Debug)]
struct CompiledRule {
    label: String,
    regex: Regex,
    tenants: Option<std::collections::HashSet<String>>,
}

/// Errors in a PII policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A custom rule does not compile or has nothing to match.
    #[error("pii rule {label:?}: {message}")]
    Rule {
        /// The rule.
        label: String,
        /// Why.
        message: String,
    },
    /// A field selector is not `EVENT_TYPE.field` or `EVENT_TYPE.*`.
    #[error(
        "pii fields of tenant {tenant:?}: {selector:?} is not EVENT_TYPE.field or EVENT_TYPE.*"
    )]
    Field {
        /// The tenant.
        tenant: String,
        /// The selector.
        selector: String,
    },
}

/// Per-tenant additions to the built-in recognizers: custom rules, and which payload fields
/// are scanned (the event type's text fields unless a tenant names its own).
#[derive(Debug, Default)]
pub struct PiiPolicy {
    rules: Vec<CompiledRule>,
    fields: HashMap<String, HashMap<custody_schemas::EventType, Vec<String>>>,
}

impl PiiPolicy {
    /// Compiles `rules`; `fields` maps a tenant to selectors `EVENT_TYPE.field` (or
    /// `EVENT_TYPE.*` for every payload field) that replace the defaults for that tenant.
    pub fn new(
        rules: Vec<CustomRule>,
        fields: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<Self, PolicyError> {
        let mut compiled = Vec::new();
        for rule in rules {
            let mut alternatives: Vec<String> = Vec::new();
            if let Some(p) = &rule.pattern {
                alternatives.push(format!("(?:{p})"));
            }
            if !rule.words.is_empty() {
                let words: Vec<String> = rule.words.iter().map(|w| regex::escape(w)).collect();
                alternatives.push(format!("(?i:\\b(?:{})\\b)", words.join("|")));
            }
            if alternatives.is_empty() {
                return Err(PolicyError::Rule {
                    label: rule.label,
                    message: "needs a pattern or words".into(),
                });
            }
            let regex = RegexBuilder::new(&alternatives.join("|"))
                .build()
                .map_err(|e| PolicyError::Rule {
                    label: rule.label.clone(),
                    message: e.to_string(),
                })?;
            compiled.push(CompiledRule {
                label: rule.label.to_ascii_uppercase(),
                regex,
                tenants: (!rule.tenants.is_empty()).then(|| rule.tenants.into_iter().collect()),
            });
        }
        let mut by_tenant = HashMap::new();
        for (tenant, selectors) in fields {
            let mut per_type: HashMap<custody_schemas::EventType, Vec<String>> = HashMap::new();
            for selector in selectors {
                let parsed = selector
                    .split_once('.')
                    .and_then(|(t, f)| Some((custody_schemas::EventType::parse(t)?, f)));
                let Some((ty, field)) = parsed else {
                    return Err(PolicyError::Field { tenant, selector });
                };
                per_type.entry(ty).or_default().push(field.to_string());
            }
            by_tenant.insert(tenant, per_type);
        }
        Ok(PiiPolicy {
            rules: compiled,
            fields: by_tenant,
        })
    }

    /// The payload fields scanned for `tenant`'s events of type `ty`: `None` for the
    /// defaults; a list containing `*` means every field.
    pub fn fields(&self, tenant: &str, ty: custody_schemas::EventType) -> Option<&[String]> {
        let per_type = self.fields.get(tenant)?;
        Some(per_type.get(&ty).map_or(&[][..], Vec::as_slice))
    }

    /// Adds the custom rules' matches in `text` to `spans`, keeping them sorted and
    /// non-overlapping (an earlier start wins, then the longer span).
    fn custom_spans(&self, tenant: &str, text: &str, spans: &mut Vec<(PiiSpan, Option<usize>)>) {
        let before = spans.len();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.tenants.as_ref().is_some_and(|t| !t.contains(tenant)) {
                continue;
            }
            for m in rule.regex.find_iter(text.as_bytes()) {
                if m.end() > m.start() {
                    let span = PiiSpan {
                        start: m.start(),
                        end: m.end(),
                        kind: PiiKind::Custom,
                    };
                    spans.push((span, Some(i)));
                }
            }
        }
        if spans.len() == before {
            return;
        }
        spans.sort_by_key(|(s, _)| (s.start, std::cmp::Reverse(s.end)));
        let mut end = 0;
        spans.retain(|(s, _)| {
            let keep = s.start >= end;
            if keep {
                end = s.end;
            }
            keep
        });
    }
}

/// Where tenants' token keys come from when they are not derived from the master key: a
/// keystore that keeps one random key per tenant, wrapped, and destroys it when the tenant is
/// erased (after which its old tokens cannot be linked to anything new).
pub trait TokenKeys: Send + Sync {
    /// The token key of `tenant`, created if it has none.
    ///
    /// # Errors
    /// When the keystore cannot be read or written.
    fn token_key(&self, tenant: &str) -> Result<[u8; 32], TokenKeyError>;
}

/// A tenant's token key could not be had from the keystore.
#[derive(Debug, thiserror::Error)]
#[error("token key of tenant {tenant:?}: {message}")]
pub struct TokenKeyError {
    /// The tenant.
    pub tenant: String,
    /// What failed.
    pub message: String,
}

/// Replaces sensitive data with tenant-keyed tokens.
#[derive(Clone)]
pub struct Tokenizer {
    master: HmacSha256,
    /// Per-tenant keys from a keystore; `None` derives them from the master key.
    keys: Option<Arc<dyn TokenKeys>>,
    tenant_keys: HashMap<String, HmacSha256>,
    policy: Arc<PiiPolicy>,
    vault: VaultMode,
    /// `(token, value)` pairs produced since the last [`Tokenizer::take_revealed`].
    revealed: Vec<(String, String)>,
}

/// What goes to the vault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VaultMode {
    /// Seal each token's value (enables re-identification and per-subject erasure).
    pub tokens: bool,
    /// Replace text fields by a commitment and seal their content (enables content erasure).
    pub content: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("master", &"<redacted>")
            .finish()
    }
}

/// The token scope used for input that could not be attributed to a tenant (quarantine).
pub const QUARANTINE_SCOPE: &str = "\u{0}quarantine";

impl Tokenizer {
    /// A tokenizer keyed by `master_key` (any length; 32 random bytes recommended).
    pub fn new(master_key: &[u8]) -> Self {
        Tokenizer {
            // Panic: HMAC accepts keys of any length.
            master: HmacSha256::new_from_slice(master_key).expect("hmac takes any key length"),
            keys: None,
            tenant_keys: HashMap::new(),
            policy: Arc::default(),
            vault: VaultMode::default(),
            revealed: Vec::new(),
        }
    }

    /// Takes tenants' token keys from `keys` (a keystore) instead of deriving them from the
    /// master key. Input not attributed to a tenant ([`QUARANTINE_SCOPE`]) keeps the derived
    /// key.
    pub fn with_token_keys(mut self, keys: Arc<dyn TokenKeys>) -> Self {
        self.keys = Some(keys);
        self.tenant_keys.clear();
        self
    }

    /// Sets what is kept (sealed) in the vault.
    pub fn with_vault(mut self, vault: VaultMode) -> Self {
        self.vault = vault;
        self
    }

    /// The vault mode.
    pub fn vault_mode(&self) -> VaultMode {
        self.vault
    }

    /// The `(token, value)` pairs produced since the last call (only with `tokens` vaulting).
    pub fn take_revealed(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.revealed)
    }

    /// Applies tenants' custom recognizers and field policies.
    pub fn with_policy(mut self, policy: Arc<PiiPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &PiiPolicy {
        &self.policy
    }

    /// The policy in force, shared (read while the tokenizer changes).
    pub fn policy_handle(&self) -> Arc<PiiPolicy> {
        Arc::clone(&self.policy)
    }

    fn tenant_mac(&mut self, tenant: &str) -> &HmacSha256 {
        if !self.tenant_keys.contains_key(tenant) {
            let key = match &self.keys {
                Some(keys) if tenant != QUARANTINE_SCOPE => match keys.token_key(tenant) {
                    Ok(key) => key,
                    // Panic: a token under any other key would be wrong forever (and a
                    // derived key is what erasure must not leave behind); the worker stops,
                    // and the uncommitted input is read again after the restart.
                    Err(e) => panic!("{e}"),
                },
                _ => {
                    let mut mac = self.master.clone();
                    mac.update(b"custody/pii-token/v1\0");
                    mac.update(tenant.as_bytes());
                    mac.finalize().into_bytes().into()
                }
            };
            // Panic: HMAC accepts keys of any length.
            let tenant_mac = HmacSha256::new_from_slice(&key).expect("hmac takes any key length");
            self.tenant_keys.insert(tenant.to_string(), tenant_mac);
        }
        &self.tenant_keys[tenant]
    }

    /// The token for `value` of `kind` in `tenant`'s scope.
    pub fn token(&mut self, tenant: &str, kind: PiiKind, value: &str) -> String {
        self.labeled_token(tenant, kind.label(), value)
    }

    /// The token for `value` under `label` (a kind's label or a custom rule's).
    pub fn labeled_token(&mut self, tenant: &str, label: &str, value: &str) -> String {
        let mut mac = self.tenant_mac(tenant).clone();
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(32);
        out.push('<');
        out.push_str(label);
        out.push_str(":tok_");
        for b in &digest[..10] {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
        }
        out.push('>');
        out
    }

    /// Tokenizes `text`; returns the new text (if anything changed) and counts per kind.
    pub fn tokenize_str(
        &mut self,
        tenant: &str,
        text: &str,
        counts: &mut [u64; KINDS],
    ) -> Option<String> {
        let mut spans: Vec<(PiiSpan, Option<usize>)> =
            scan(text).into_iter().map(|s| (s, None)).collect();
        let policy = Arc::clone(&self.policy);
        policy.custom_spans(tenant, text, &mut spans);
        if spans.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (span, rule) in spans {
            out.push_str(&text[last..span.start]);
            let value = &text[span.start..span.end];
            let token = match rule {
                Some(i) => self.labeled_token(tenant, &policy.rules[i].label, value),
                None => self.token(tenant, span.kind, value),
            };
            out.push_str(&token);
            if self.vault.tokens {
                self.revealed.push((token, value.to_string()));
            }
            counts[span.kind as usize] += 1;
            last = span.end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, &str)> {
        scan(text)
            .into_iter()
            .map(|s| (s.kind, &text[s.start..s.end]))
            .collect()
    }

    #[test]
    fn recognizes_each_kind() {
        let cases: &[(&str, &[(PiiKind, &str)])] = &[
            (
                "mail jane.doe+x@example.co.uk now",
                &[(PiiKind::Email, "jane.doe+x@example.co.uk")],
            ),
            (
                "card 4111 1111 1111 1111 ok",
                &[(PiiKind::Card, "4111 1111 1111 1111")],
            ),
            ("card 4111-1111-1111-1112 bad luhn", &[]),
            (
                "key sk_live_abcdefghijklmnop1234",
                &[(PiiKind::Secret, "sk_live_abcdefghijklmnop1234")],
            ),
            (
                "aws AKIAIOSFODNN7EXAMPLE",
                &[(PiiKind::Secret, "AKIAIOSFODNN7EXAMPLE")],
            ),
            ("ssn 123-45-6789", &[(PiiKind::Ssn, "123-45-6789")]),
            ("ssn 666-45-6789", &[]),
            (
                "iban DE89 3704 0044 0532 0130 00",
                &[(PiiKind::Iban, "DE89 3704 0044 0532 0130 00")],
            ),
            ("iban DE89 3704 0044 0532 0130 01", &[]),
            // A card after a port, and after a date of birth (no phone runs across them).
            (
                "listening on 0.0.0.0:8080 6553 8844 1100 5767, ok",
                &[(PiiKind::Card, "6553 8844 1100 5767")],
            ),
            (
                "geboren am 02.01.1960 2720 3233 9034 5818 request",
                &[
                    (PiiKind::Dob, "02.01.1960"),
                    (PiiKind::Card, "2720 3233 9034 5818"),
                ],
            ),
            // A UUID whose head reads as a valid Belgian IBAN.
            ("id be91fc97-e4c6-2c59-889f-45676638ca61 ok", &[]),
            ("(6d207edf-ad52-0c0e-e57f-67238ebed230)", &[]),
            ("ip 192.168.10.254", &[(PiiKind::Ip, "192.168.10.254")]),
            (
                "AKIAQKTKMXIFRGVGAOFZ",
                &[(PiiKind::Secret, "AKIAQKTKMXIFRGVGAOFZ")],
            ),
            (
                "call +44 20 7946 0958",
                &[(PiiKind::Phone, "+44 20 7946 0958")],
            ),
            ("call (415) 555-0132", &[(PiiKind::Phone, "(415) 555-0132")]),
            ("call 415-555-0132", &[(PiiKind::Phone, "415-555-0132")]),
            ("nothing here, 2026-03-08, order 42", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(&kinds(text), want, "{text}");
        }
    }

    /// The formats the independent corpus found missed or wrongly tokenized.
    #[test]
    fn formats_found_missed_are_recognized_whole() {
        let whole: &[(&str, PiiKind)] = &[
            ("josé.garcía@correo.es", PiiKind::Email),
            ("o'brien@example.ie", PiiKind::Email),
            ("почта@пример.рф", PiiKind::Email),
            ("info@xn--80ak6aa92e.xn--p1ai", PiiKind::Email),
            ("user@bücher.example", PiiKind::Email),
            ("250 05 5639", PiiKind::Ssn),
            ("de89 3704 0044 0532 0130 00", PiiKind::Iban),
            ("DE89-3704-0044-0532-0130-00", PiiKind::Iban),
            ("de89370400440532013000", PiiKind::Iban),
            ("3056 930902 5904", PiiKind::Card),
            ("3056-930902-5904", PiiKind::Card),
            ("4000 0000 0000 0000 006", PiiKind::Card),
            ("6200000000000000000", PiiKind::Card),
            ("2001:db8:85a3::", PiiKind::Ip),
            ("::ffff:203.0.113.7", PiiKind::Ip),
            ("fe80::1ff:fe23:4567:890a", PiiKind::Ip),
        ];
        for &(value, kind) in whole {
            for text in [
                value.to_string(),
                format!("contact {value} today"),
                format!("«{value}»"),
                format!("'{value}'"),
                format!("({value})."),
            ] {
                assert_eq!(kinds(&text), [(kind, value)], "{text}");
            }
        }
        assert_eq!(
            kinds("ssn: 250055639, order 250055639"),
            [(PiiKind::Ssn, "250055639")]
        );
        assert_eq!(
            kinds("at [2001:db8::1]:8443 now"),
            [(PiiKind::Ip, "2001:db8::1")]
        );
        for not in [
            "version 10.4.22.190",
            "upgraded to 1.2.3.4",
            "bind 0.0.0.0 and 127.0.0.1, ::1",
            "EAN 4006381333931",
            "at 1733424000006 ms",
            "IMEI 490154203237518",
            "std::fmt::Display at 12:30:45",
        ] {
            assert_eq!(kinds(not), [], "{not}");
        }
    }

    #[test]
    fn shapes_name_the_alternative_that_matched() {
        for sample in crate::corpus::corpus(2_000, 1024, 99) {
            for (start, kind) in classify_by_groups(&sample.text) {
                let m = SCANNER.find_at(sample.text.as_bytes(), start).unwrap();
                assert_eq!(m.start(), start);
                assert_eq!(
                    classify(&sample.text.as_bytes()[m.start()..m.end()]),
                    kind,
                    "{:?}",
                    &sample.text[m.start()..m.end()]
                );
            }
        }
    }

    #[test]
    fn tenant_rules_and_fields_apply_to_their_tenant_only() {
        let policy = PiiPolicy::new(
            vec![CustomRule {
                label: "employee_id".into(),
                pattern: Some("EMP-[0-9]{6}".into()),
                words: vec!["Project Falcon".into()],
                tenants: vec!["acme".into()],
            }],
            [("acme".to_string(), vec!["TOOL_CALLED.*".to_string()])],
        )
        .unwrap();
        let mut t = Tokenizer::new(b"k").with_policy(Arc::new(policy));
        let mut counts = [0; KINDS];
        let text = "EMP-123456 asked about project falcon, mail a@b.io";
        let out = t.tokenize_str("acme", text, &mut counts).unwrap();
        assert!(out.starts_with("<EMPLOYEE_ID:tok_"), "{out}");
        assert!(!out.contains("EMP-123456") && !out.to_lowercase().contains("falcon"));
        assert!(out.contains("<EMAIL:tok_"));
        assert_eq!(counts[PiiKind::Custom as usize], 2);
        let other = t.tokenize_str("globex", text, &mut counts).unwrap();
        assert!(
            other.contains("EMP-123456"),
            "rules are per tenant: {other}"
        );
        let fields = t
            .policy()
            .fields("acme", custody_schemas::EventType::ToolCalled)
            .unwrap();
        assert_eq!(fields, ["*"]);
        assert!(
            t.policy()
                .fields("globex", custody_schemas::EventType::ToolCalled)
                .is_none()
        );
        assert!(PiiPolicy::new(vec![], [("x".into(), vec!["nope".into()])]).is_err());
    }

    #[test]
    fn validators() {
        assert!(card::valid(b"4242424242424242"));
        assert!(!card::valid(b"4242424242424241"));
        assert!(iban::valid(b"GB82WEST12345698765432"));
        assert!(!iban::valid(b"GB82WEST12345698765433"));
    }

    #[test]
    fn tokens_are_deterministic_per_tenant_and_unlinkable_across() {
        let mut t = Tokenizer::new(b"test master key");
        let a1 = t.token("acme", PiiKind::Email, "jane@example.com");
        let a2 = t.token("acme", PiiKind::Email, "jane@example.com");
        let b = t.token("globex", PiiKind::Email, "jane@example.com");
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert!(a1.starts_with("<EMAIL:tok_") && a1.ends_with('>'));
        let mut counts = [0; KINDS];
        let out = t
            .tokenize_str(
                "acme",
                "to jane@example.com, card 4111111111111111",
                &mut counts,
            )
            .unwrap();
        assert!(!out.contains("jane@example.com") && !out.contains("4111111111111111"));
        assert!(out.contains(&a1));
        assert_eq!(counts[PiiKind::Email as usize], 1);
        assert_eq!(counts[PiiKind::Card as usize], 1);
    }
}

//! Deterministic workload generator: realistic agent sessions for many tenants.
//!
//! The same seed and settings always give the same byte-identical stream. Sessions interleave;
//! each runs `TASK_INITIATED`, one to four rounds of model decision → decision point → tool
//! call → tool result (with data access and policy decisions), sometimes a human escalation and
//! review (some rubber-stamped in under 5 s, some past their SLA), and ends completed or failed.
//! Prompts, tool inputs and reviewer rationales carry PII: emails, phones, card numbers, SSNs,
//! IBANs, IPs and API keys. Each agent runs one model; a third of them move to a new model
//! version for the last quarter of the stream, and one tenant's tools start failing in its last
//! fifth: drift for the alerts to find.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use custody_operators::Result;
use custody_operators::record::RawRecord;
use custody_operators::sources::Source;
use custody_schemas::SCHEMA_VERSION;
use custody_schemas::time::format_rfc3339;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Generator settings.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Seed.
    pub seed: u64,
    /// Number of tenants (activity is Zipf-distributed over them).
    pub tenants: usize,
    /// Events to produce.
    pub events: u64,
    /// Sessions open at once.
    pub concurrent_sessions: usize,
    /// Event time of the first event, UTC micros (default: 2026-03-08, so that a seed always
    /// gives the same bytes).
    pub start_us: i64,
    /// Scale of the time between events (1: [`MEAN_STEP_US`] on average), to spread a workload
    /// over a longer span.
    pub step_scale: f64,
}

/// The mean event-time step between two events at `step_scale` 1.
pub const MEAN_STEP_US: i64 = 200_500;

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            tenants: 50,
            events: 1_000_000,
            concurrent_sessions: 256,
            start_us: START_US,
            step_scale: 1.0,
        }
    }
}

/// SplitMix64: small, fast, and stable across platforms and releases.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
    /// A number below `len` (0 if `len` is 0).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// One step still to emit in a session.
#[derive(Clone, Copy, Debug)]
enum Step {
    ModelDecision,
    DecisionPoint,
    ToolCalled,
    ToolResult,
    DataAccessed,
    PolicyDecision { requires_approval: bool },
    Escalation,
    Review,
    Completed,
    Failed,
}

#[derive(Debug)]
struct Session {
    tenant: usize,
    session_id: String,
    agent_id: String,
    user_id: String,
    steps: VecDeque<Step>,
    last_event: Option<String>,
    last_decision: Option<String>,
    tool: &'static str,
    escalation: Option<(String, i64, u64)>,
    /// The tool input put to a human (the escalation's `proposed_action`, or the decision's
    /// `modification`), which the next tool call carries out.
    planned: Option<Value>,
    /// The human did not approve the planned action (rejected, or escalated further).
    withheld: bool,
    /// The session's next event is no earlier than this (the last human decision).
    resumes_us: i64,
    started_us: i64,
    tokens: u64,
}

/// The generator. Also a [`Source`] (partition 0, offsets 0, 1, 2, …).
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    sessions: Vec<Session>,
    clock_us: i64,
    emitted: u64,
    next_session: u64,
    zipf: Vec<f64>,
    /// Emitter-side chain: SHA-256 of the last event bytes per (tenant, agent).
    emitted_hashes: HashMap<(usize, String), [u8; 32]>,
}

const TOOLS: [&str; 8] = [
    "payments.refund",
    "crm.update_record",
    "email.send",
    "search.web",
    "db.query",
    "tickets.close",
    "calendar.book",
    "kyc.lookup",
];
const MODELS: [(&str, &str); 3] = [
    ("gpt-5", "2026-06-01"),
    ("claude-4", "2026-05-14"),
    ("llama-4-70b", "v1.2"),
];
const UPGRADED_MODEL: (&str, &str) = ("gpt-5", "2026-09-15");
const FIRST: [&str; 8] = [
    "jane", "omar", "li", "maria", "kwame", "sofia", "arjun", "emma",
];
const LAST: [&str; 8] = [
    "doe", "haddad", "wei", "garcia", "mensah", "rossi", "patel", "smith",
];
const DOMAINS: [&str; 4] = ["example.com", "mail.test", "corp.example.org", "acme.io"];
const ROLES: [&str; 3] = ["risk_officer", "support_lead", "compliance_analyst"];
const START_US: i64 = 1_772_928_000_000_000; // 2026-03-08T00:00:00Z

impl Generator {
    /// A generator for `config`.
    pub fn new(config: GeneratorConfig) -> Self {
        let clock_us = config.start_us;
        let zipf: Vec<f64> = {
            let weights: Vec<f64> = (0..config.tenants.max(1))
                .map(|i| 1.0 / (i as f64 + 1.0).powf(0.8))
                .collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect()
        };
        Generator {
            rng: Rng(config.seed),
            config,
            sessions: Vec::new(),
            clock_us,
            emitted: 0,
            next_session: 0,
            zipf,
            emitted_hashes: HashMap::new(),
        }
    }

    /// The tenant id of tenant number `i`.
    pub fn tenant_name(i: usize) -> String {
        format!("tenant-{i:04}")
    }

    fn uuid(&mut self) -> String {
        let a = self.rng.next();
        let b = self.rng.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn pick_tenant(&mut self) -> usize {
        let x = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.zipf
            .partition_point(|&c| c < x)
            .min(self.zipf.len() - 1)
    }

    fn new_session(&mut self) -> Session {
        let tenant = self.pick_tenant();
        let n = self.next_session;
        self.next_session += 1;
        let mut steps = VecDeque::new();
        let rounds = self.rng.range(1, 4);
        for _ in 0..rounds {
            steps.push_back(Step::ModelDecision);
            steps.push_back(Step::DecisionPoint);
            if self.rng.chance(30) {
                steps.push_back(Step::DataAccessed);
            }
            if self.rng.chance(25) {
                steps.push_back(Step::PolicyDecision {
                    requires_approval: true,
                });
                steps.push_back(Step::Escalation);
                steps.push_back(Step::Review);
            } else if self.rng.chance(20) {
                steps.push_back(Step::PolicyDecision {
                    requires_approval: false,
                });
            }
            steps.push_back(Step::ToolCalled);
            steps.push_back(Step::ToolResult);
        }
        steps.push_back(if self.rng.chance(92) {
            Step::Completed
        } else {
            Step::Failed
        });
        let user = self.rng.below(5000);
        Session {
            tenant,
            session_id: format!("sess-{n:08}"),
            agent_id: format!("agent-{}", self.rng.below(12)),
            user_id: format!("user-{user:05}"),
            steps,
            last_event: None,
            last_decision: None,
            tool: TOOLS[0],
            escalation: None,
            planned: None,
            withheld: false,
            resumes_us: 0,
            started_us: self.clock_us,
            tokens: 0,
        }
    }

    /// A tool call's input: a customer, an amount, sometimes a key or a card.
    fn tool_input(&mut self) -> Value {
        let mut input = json!({
            "customer_email": self.email(),
            "amount": self.rng.range(5, 5000),
            "currency": "EUR",
        });
        if self.rng.chance(30) {
            input["api_key"] = Value::from(self.api_key());
        }
        if self.rng.chance(30) {
            input["card"] = Value::from(self.card());
        }
        input
    }

    // ---- PII ----

    fn email(&mut self) -> String {
        let first = *self.rng.pick(&FIRST);
        let last = *self.rng.pick(&LAST);
        let domain = *self.rng.pick(&DOMAINS);
        format!("{first}.{last}{}@{domain}", self.rng.below(100))
    }

    fn phone(&mut self) -> String {
        match self.rng.below(3) {
            0 => format!(
                "+44 20 {:04} {:04}",
                self.rng.below(10_000),
                self.rng.below(10_000)
            ),
            1 => format!(
                "({:03}) {:03}-{:04}",
                self.rng.range(201, 989),
                self.rng.range(200, 999),
                self.rng.below(10_000)
            ),
            _ => format!(
                "+49 30 {:04} {:04}",
                self.rng.below(10_000),
                self.rng.below(10_000)
            ),
        }
    }

    fn card(&mut self) -> String {
        let mut digits: Vec<u32> = vec![4];
        for _ in 0..14 {
            digits.push(self.rng.below(10) as u32);
        }
        // Luhn check digit.
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        digits.push((10 - sum % 10) % 10);
        let s: String = digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
        if self.rng.chance(50) {
            format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
        } else {
            s
        }
    }

    fn ssn(&mut self) -> String {
        format!(
            "{:03}-{:02}-{:04}",
            self.rng.range(100, 665),
            self.rng.range(10, 99),
            self.rng.range(1000, 9999)
        )
    }

    fn iban(&mut self) -> String {
        // German IBAN: DEkk + 18 digits, check digits per ISO 13616.
        let bban: String = (0..18)
            .map(|_| char::from(b'0' + self.rng.below(10) as u8))
            .collect();
        let rearranged = format!("{bban}131400"); // "DE" = 13 14, then "00"
        let rem = rearranged
            .bytes()
            .fold(0u64, |acc, b| (acc * 10 + u64::from(b - b'0')) % 97);
        let check = 98 - rem;
        format!("DE{check:02}{bban}")
    }

    /// A routable client address: never loopback (127/8), which the PII
    /// policy rightly treats as non-personal.
    fn ip(&mut self) -> String {
        let first = match self.rng.range(11, 223) {
            127 => 128,
            n => n,
        };
        format!(
            "{}.{}.{}.{}",
            first,
            self.rng.below(256),
            self.rng.below(256),
            self.rng.range(1, 254)
        )
    }

    fn api_key(&mut self) -> String {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let kind = self.rng.below(3);
        let rng = &mut self.rng;
        let mut tail = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ALNUM[rng.below(ALNUM.len() as u64) as usize]))
                .collect()
        };
        match kind {
            0 => format!("sk_live_{}", tail(24)),
            1 => format!("ghp_{}", tail(36)),
            _ => format!("AKIA{}", tail(16).to_uppercase()),
        }
    }

    fn customer_text(&mut self) -> String {
        let name = format!("{} {}", self.rng.pick(&FIRST), self.rng.pick(&LAST));
        let mut parts = vec![format!("Customer {name} <{}>", self.email())];
        if self.rng.chance(50) {
            parts.push(format!("called from {}", self.phone()));
        }
        if self.rng.chance(40) {
            parts.push(format!("disputes a charge on card {}", self.card()));
        }
        if self.rng.chance(20) {
            parts.push(format!("SSN on file {}", self.ssn()));
        }
        if self.rng.chance(25) {
            parts.push(format!("refund to IBAN {}", self.iban()));
        }
        if self.rng.chance(30) {
            parts.push(format!("request came from {}", self.ip()));
        }
        parts.join(", ")
    }

    // ---- events ----

    fn envelope(
        &mut self,
        s: &Session,
        event_type: &str,
        ts: i64,
        payload: Value,
    ) -> (String, Value) {
        let event_id = self.uuid();
        let event = json!({
            "event_id": event_id,
            "schema_version": SCHEMA_VERSION,
            "tenant_id": Self::tenant_name(s.tenant),
            "session_id": s.session_id,
            "agent_id": s.agent_id,
            "user_id": s.user_id,
            "event_type": event_type,
            "timestamp": format_rfc3339(ts),
            "parent_event_id": s.last_event,
            "payload": payload,
        });
        (event_id, event)
    }

    fn step(&mut self, s: &mut Session, step: Option<Step>) -> Value {
        // A session waiting on a human resumes after the decision, never before its cause.
        let now = self.clock_us.max(s.resumes_us);
        let Some(step) = step else {
            // A new session starts with its task.
            let goal = format!("Resolve ticket for {}", self.customer_text());
            let payload = json!({
                "goal": goal,
                "input": format!("ticket #{} from {}", self.rng.below(1_000_000), self.email()),
                "agent_version": format!("2026.{}.{}", self.rng.range(1, 9), self.rng.below(20)),
                "channel": *self.rng.pick(&["api", "chat", "email", "schedule"]),
            });
            let (id, ev) = self.envelope(s, "TASK_INITIATED", now, payload);
            s.last_event = Some(id);
            return ev;
        };
        let (event_type, payload, ts) = match step {
            Step::ModelDecision => {
                let (model, version) = self.model_of(s);
                let prompt_tokens = self.rng.range(200, 4000);
                let completion_tokens = self.rng.range(20, 800);
                s.tokens += prompt_tokens + completion_tokens;
                let prompt = format!(
                    "System: you are a support agent. Context: {}. Decide the next action.",
                    self.customer_text()
                );
                (
                    "MODEL_DECISION",
                    json!({
                        "model_id": model,
                        "model_version": version,
                        "prompt": prompt,
                        "output": format!("Next: call {} for the customer", self.rng.pick(&TOOLS)),
                        "reasoning": "The customer request matches the refund policy.",
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "latency_ms": self.rng.range(150, 6000),
                        "confidence": (self.rng.range(50, 99) as f64) / 100.0,
                    }),
                    now,
                )
            }
            Step::DecisionPoint => {
                s.tool = *self.rng.pick(&TOOLS);
                (
                    "DECISION_POINT",
                    json!({
                        "reasoning_summary": format!("{} is the least risky way to resolve the request", s.tool),
                        "options": [s.tool, "ask_clarification", "escalate_to_human"],
                        "selected_action": s.tool,
                    }),
                    now,
                )
            }
            Step::ToolCalled => {
                let withheld = std::mem::take(&mut s.withheld);
                let input = match s.planned.take() {
                    // Not approved: the agent mostly records the refusal instead; now and
                    // then it goes ahead anyway (what the oversight rules must catch).
                    Some(planned) if withheld => {
                        if self.rng.chance(90) {
                            s.tool = "crm.update_record";
                            json!({"note": "customer told the action was not approved"})
                        } else {
                            planned
                        }
                    }
                    // Approved: the agent carries out what was approved, and now and then
                    // more than that.
                    Some(mut planned) => {
                        if self.rng.chance(4)
                            && let Some(amount) = planned.get("amount").and_then(Value::as_u64)
                        {
                            planned["amount"] = Value::from(amount * 20);
                        }
                        planned
                    }
                    None => self.tool_input(),
                };
                (
                    "TOOL_CALLED",
                    json!({
                        "tool_name": s.tool,
                        "tool_version": "1.4.2",
                        "input": input,
                        "elevated": s.tool.starts_with("payments"),
                    }),
                    now,
                )
            }
            Step::ToolResult => {
                // Drift: in the last fifth of the stream, the second tenant's tools fail a lot.
                let late = self.emitted * 5 > self.config.events * 4;
                let ok = !self.rng.chance(if late && s.tenant == 1 { 45 } else { 8 });
                let mut payload = json!({
                    "tool_name": s.tool,
                    "status": if ok { "success" } else { "error" },
                    "output": if ok { format!("done, reference {}", self.uuid()) } else { "upstream timeout".to_string() },
                    "latency_ms": self.rng.range(20, 3000),
                    "external_ids": [format!("txn-{}", self.rng.below(1_000_000_000))],
                });
                if !ok {
                    payload["error_code"] = Value::from("E_TIMEOUT");
                    payload["error_message"] = Value::from("tool did not answer in 30s");
                }
                ("TOOL_RESULT_RECEIVED", payload, now)
            }
            Step::DataAccessed => (
                "DATA_ACCESSED",
                json!({
                    "data_store": *self.rng.pick(&["crm", "billing", "kyc"]),
                    "operation": if self.rng.chance(80) { "read" } else { "write" },
                    "record_ids": [format!("rec-{}", self.rng.below(100_000))],
                    "purpose": "resolve customer ticket",
                    "query": format!("SELECT * FROM customers WHERE email = '{}'", self.email()),
                }),
                now,
            ),
            Step::PolicyDecision { requires_approval } => (
                "POLICY_DECISION",
                json!({
                    "policy_id": if requires_approval { "payments.amount_over_500" } else { "data.read_scope" },
                    "outcome": if requires_approval { "require_approval" } else { "allow" },
                    "reason": if requires_approval { "amount above the approval threshold" } else { "within the agent's scope" },
                }),
                now,
            ),
            Step::Escalation => {
                let sla = *self.rng.pick(&[300u64, 900, 3600]);
                let mut input = self.tool_input();
                if input.get("card").is_none() {
                    input["card"] = Value::from(self.card());
                }
                s.planned = Some(input.clone());
                let payload = json!({
                    "reason": "payment above the approval threshold",
                    "proposed_action": {"tool_name": s.tool, "input": input},
                    "risk_tier": *self.rng.pick(&["low", "medium", "high", "critical"]),
                    "presented_at": format_rfc3339(now),
                    "sla_seconds": sla,
                });
                let (id, ev) = self.envelope(s, "HUMAN_ESCALATION_TRIGGERED", now, payload);
                s.escalation = Some((id.clone(), now, sla));
                s.last_event = Some(id);
                return ev;
            }
            Step::Review => {
                let (esc_id, presented, sla) = s
                    .escalation
                    .clone()
                    .unwrap_or_else(|| (self.uuid(), now, 900));
                let roll = self.rng.below(100);
                let (latency_ms, decision) = if roll < 15 {
                    (self.rng.range(300, 4_500), "approve") // rubber stamp
                } else if roll < 25 {
                    (self.rng.range(sla * 1100, sla * 3000), "approve") // past SLA
                } else {
                    let d = *self
                        .rng
                        .pick(&["approve", "approve", "reject", "modify", "escalate"]);
                    (self.rng.range(20_000, sla * 800), d)
                };
                let decided = presented + latency_ms as i64 * 1000;
                let rationale =
                    format!("checked with customer at {} before deciding", self.phone());
                let mut payload = json!({
                    "escalation_event_id": esc_id,
                    "reviewer_id": format!("reviewer-{}", self.rng.below(40)),
                    "reviewer_role": *self.rng.pick(&ROLES),
                    "decision": decision,
                    "decided_at": format_rfc3339(decided),
                    "rationale": rationale,
                });
                match decision {
                    "modify" => {
                        // The approved action: the proposed one, its amount capped at 500.
                        let mut capped = s.planned.clone().unwrap_or_else(|| json!({}));
                        if let Some(amount) = capped.get("amount").and_then(Value::as_u64) {
                            capped["amount"] = Value::from(amount.min(500));
                        }
                        payload["modification"] = json!({"tool_name": s.tool, "input": capped});
                        s.planned = Some(capped);
                    }
                    "reject" | "escalate" => s.withheld = true,
                    _ => {}
                }
                s.last_event = Some(esc_id);
                s.resumes_us = decided.max(now);
                ("HUMAN_REVIEW_DECISION", payload, decided.max(now))
            }
            Step::Completed => (
                "TASK_COMPLETED",
                json!({
                    "output": "ticket resolved",
                    "duration_ms": ((now - s.started_us) / 1000).max(0),
                    "total_tokens": s.tokens,
                }),
                now,
            ),
            Step::Failed => (
                "TASK_FAILED",
                json!({
                    "reason": "tool kept timing out",
                    "last_state": format!("waiting on {}", s.tool),
                }),
                now,
            ),
        };
        let (id, ev) = self.envelope(s, event_type, ts, payload);
        if matches!(step, Step::ModelDecision | Step::DecisionPoint) {
            s.last_decision = Some(id.clone());
        }
        s.last_event = Some(id);
        ev
    }

    /// The model an agent runs: fixed per agent, and a third of the agents move to a new
    /// version for the last quarter of the stream (what the drift alerts should notice).
    fn model_of(&self, s: &Session) -> (&'static str, &'static str) {
        let agent: usize = s
            .agent_id
            .trim_start_matches("agent-")
            .parse()
            .unwrap_or_default();
        let i = (s.tenant + agent) % MODELS.len();
        if i == 0 && self.emitted * 4 > self.config.events * 3 {
            UPGRADED_MODEL
        } else {
            MODELS[i]
        }
    }

    /// The next event, or `None` once `config.events` were produced.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        if self.emitted >= self.config.events {
            return None;
        }
        self.emitted += 1;
        let step = self.rng.range(1_000, 400_000) as i64;
        self.clock_us += if self.config.step_scale == 1.0 {
            step
        } else {
            (step as f64 * self.config.step_scale) as i64
        };
        let want = self.config.concurrent_sessions.max(1);
        let (mut event, key) =
            if self.sessions.len() < want && (self.sessions.is_empty() || self.rng.chance(30)) {
                let mut s = self.new_session();
                let ev = self.step(&mut s, None);
                let key = (s.tenant, s.agent_id.clone());
                self.sessions.push(s);
                (ev, key)
            } else {
                let i = self.rng.below(self.sessions.len() as u64) as usize;
                let mut s = self.sessions.swap_remove(i);
                let step = s.steps.pop_front();
                let ev = self.step(&mut s, step);
                let key = (s.tenant, s.agent_id.clone());
                if !s.steps.is_empty() {
                    self.sessions.push(s);
                }
                (ev, key)
            };
        let previous = self.emitted_hashes.get(&key).copied().unwrap_or([0; 32]);
        event["previous_event_hash"] = Value::from(hex::encode(previous));
        // Serializing a `Value` cannot fail.
        let bytes = serde_json::to_vec(&event).ok()?;
        self.emitted_hashes
            .insert(key, Sha256::digest(&bytes).into());
        Some(bytes)
    }
}

impl Iterator for Generator {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.next_event()
    }
}

impl Source for Generator {
    fn name(&self) -> String {
        format!("generator:seed={}", self.config.seed)
    }

    fn seek(&mut self, durable: &std::collections::BTreeMap<i32, i64>) -> Result<()> {
        // Deterministic: the events before the durable position are generated and dropped
        // here, never handed on.
        if let Some(&last) = durable.get(&0) {
            while (self.emitted as i64) <= last && self.next().is_some() {}
        }
        Ok(())
    }

    fn next_batch(&mut self, max: usize, _wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        let start = self.emitted as i64;
        let batch: Vec<RawRecord> = self
            .by_ref()
            .take(max)
            .enumerate()
            .map(|(i, bytes)| RawRecord::new(0, start + i as i64, bytes))
            .collect();
        Ok(if batch.is_empty() { None } else { Some(batch) })
    }
}

#[cfg(test)]
mod tests {
    use custody_schemas::{EventType, decode_event};

    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let cfg = GeneratorConfig {
            events: 5_000,
            tenants: 20,
            ..GeneratorConfig::default()
        };
        let a: Vec<Vec<u8>> = Generator::new(cfg.clone()).collect();
        let b: Vec<Vec<u8>> = Generator::new(cfg).collect();
        assert_eq!(a.len(), 5_000);
        assert_eq!(a, b);
        let mut types = std::collections::BTreeSet::new();
        let mut tenants = std::collections::BTreeSet::new();
        for bytes in &a {
            let e = decode_event(bytes).unwrap_or_else(|e| {
                panic!("{e}: {}", String::from_utf8_lossy(bytes));
            });
            types.insert(e.event_type);
            tenants.insert(e.tenant_id);
        }
        // Every agent event type (Custody's own actions are not generated).
        let agents = EventType::ALL
            .iter()
            .filter(|t| !t.is_custody_action())
            .count();
        assert_eq!(types.len(), agents, "{types:?}");
        assert!(tenants.len() >= 15);
        let text = String::from_utf8(a.concat()).unwrap();
        for needle in ["@", "sk_live_", "SSN on file", "IBAN DE"] {
            assert!(text.contains(needle), "no {needle}");
        }
    }

    #[test]
    fn generated_pii_is_recognized() {
        let mut g = Generator::new(GeneratorConfig::default());
        for _ in 0..500 {
            for value in [
                g.email(),
                g.card(),
                g.ssn(),
                g.iban(),
                g.ip(),
                g.api_key(),
                g.phone(),
            ] {
                let spans = custody_operators::pii::scan(&value);
                assert_eq!(spans.len(), 1, "{value:?} -> {spans:?}");
                assert_eq!((spans[0].start, spans[0].end), (0, value.len()), "{value}");
            }
            // The customer's name after `Customer` (written in lower case) is tokenized too.
            let text = g.customer_text();
            let name = &text["Customer ".len()..text.find(" <").unwrap()];
            assert!(
                custody_operators::pii::scan(&text).iter().any(|s| {
                    s.kind == custody_operators::pii::PiiKind::Name && &text[s.start..s.end] == name
                }),
                "{text}"
            );
        }
    }
}

//! Reports of a chosen period, as of a chosen checkpoint: the views recomputed from the lake.
//!
//! The live views cover a tenant's whole log and move with every commit, so two reads of a
//! live report seconds apart cite different checkpoints. A *reproducible* report is instead a
//! function of its inputs alone: the tenant's events at positions `0..tree_size` of a signed
//! checkpoint whose event time is in `[from, to)`. They are read from the lake, fed through
//! the very dataflow the pipeline runs ([`crate::render_views`]) in one epoch, in chain
//! order, with the views' clock at the end of the period (or, for an open period, at the
//! last event's time), and the report is rendered from the result. The same inputs give the
//! same bytes, whenever and wherever it is computed.
//!
//! # Bound
//! A recomputation holds the period's events' view facts (not their payloads) and the views'
//! state for them; the caller bounds the number of events it reads.

use std::sync::{Arc, Mutex};

use custody_operators::Metrics;
use custody_operators::checkpoint::Checkpoint;
use custody_operators::record::{ChainedEvent, Epoch, SinkRecord, ViewUpdate};
use custody_operators::verify::EventRow;
use custody_schemas::{AuditEvent, EventType, PayloadFacts, TenantId};
use serde::Serialize;

use crate::live::LiveViews;
use crate::{ViewsConfig, render_views, view_facts};

/// What a reproducible report covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportScope {
    /// Event time from (RFC 3339, inclusive); `None`: from the log's start.
    pub from: Option<String>,
    /// Event time to (RFC 3339, exclusive); `None`: up to the checkpoint.
    pub to: Option<String>,
    /// The checkpoint's tree size: only events at positions below it are read.
    pub as_of_tree_size: u64,
    /// The events read (in the period, under the checkpoint).
    pub events: u64,
    /// The views' clock (what "now" is for SLA breaches), RFC 3339.
    pub clock: String,
    /// The signed checkpoint of `as_of_tree_size`, whole, so that its signature can be checked
    /// with the report's (and its root tied to later checkpoints by consistency proofs).
    pub checkpoint: Option<Checkpoint>,
}

/// The event of a lake row, as the views read it (payload facts, not payload text); its
/// offset is its position, so events order as the chain does. `None` for a row of an event
/// type this build does not know.
pub fn event_of_row(row: &EventRow) -> Option<ChainedEvent> {
    let event_type = EventType::parse(&row.event_type)?;
    let time = custody_schemas::time::parse_rfc3339(&row.event_time).ok()?;
    let event = AuditEvent {
        event_id: row.event_id.clone(),
        schema_version: row.schema_version.clone(),
        tenant_id: TenantId::new(&row.tenant_id),
        session_id: row.session_id.clone(),
        agent_id: row.agent_id.clone(),
        user_id: row.user_id.clone(),
        event_type,
        timestamp: row.event_time.clone(),
        timestamp_us: time,
        parent_event_id: row.parent_event_id.clone(),
        payload: String::new(),
        facts: PayloadFacts::of_text(event_type, &row.payload),
        previous_event_hash: None,
    };
    Some(ChainedEvent {
        seq: row.seq as u64,
        offset: row.seq,
        ..ChainedEvent::unchained(event)
    })
}

/// Which events a reproducible report reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Event time from (RFC 3339 as asked, and µs), inclusive.
    pub from: Option<(String, i64)>,
    /// Event time to (RFC 3339 as asked, and µs), exclusive.
    pub to: Option<(String, i64)>,
    /// Only positions below this (a signed checkpoint's tree size).
    pub tree_size: u64,
}

impl Cut {
    /// Whether the event at position `seq`, of event time `time_us`, is in the cut.
    pub fn holds(&self, seq: u64, time_us: i64) -> bool {
        seq < self.tree_size
            && self.from.as_ref().is_none_or(|(_, f)| time_us >= *f)
            && self.to.as_ref().is_none_or(|(_, t)| time_us < *t)
    }
}

/// The views over the rows of `rows` in `cut` (others are passed over), with the views'
/// clock at the cut's end, or at its last event for an open end; and the report's scope.
pub fn views_of(rows: &[EventRow], cut: &Cut, cfg: &ViewsConfig) -> (LiveViews, ReportScope) {
    let mut events: Vec<ChainedEvent> = rows
        .iter()
        .filter_map(event_of_row)
        .filter(|e| cut.holds(e.seq, e.event.timestamp_us))
        .collect();
    // Chain order, whatever order the rows came in.
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let clock_us = match &cut.to {
        Some((_, t)) => *t,
        None => events
            .iter()
            .map(|e| e.event.timestamp_us)
            .max()
            .unwrap_or(0),
    };
    let scope = ReportScope {
        from: cut.from.as_ref().map(|(s, _)| s.clone()),
        to: cut.to.as_ref().map(|(s, _)| s.clone()),
        as_of_tree_size: cut.tree_size,
        events: events.len() as u64,
        clock: custody_schemas::time::format_rfc3339(clock_us),
        checkpoint: None,
    };
    (recompute(events, clock_us, cfg), scope)
}

/// The views over `events` alone, as of one epoch whose clock reads `clock_us`: the state
/// the live views would have had if these had been the only events, all committed at once.
pub fn recompute(events: Vec<ChainedEvent>, clock_us: i64, cfg: &ViewsConfig) -> LiveViews {
    use differential_dataflow::input::Input as _;
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::capture::{Capture, Event};
    let cfg = ViewsConfig {
        // One epoch, never a snapshot.
        snapshot_every: 0,
        ..cfg.clone()
    };
    let events = Arc::new(Mutex::new(Some(events)));
    let rx = timely::execute_directly(move |worker| {
        let (mut input, mut clock, rx) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (input, records) = scope.new_input::<Vec<SinkRecord>>();
            let (clock, now) = scope.new_collection::<i64, isize>();
            let (views, _) = render_views(view_facts(records, &cfg), now, &cfg, &Metrics::new());
            (input, clock, views.capture())
        });
        clock.update(clock_us, 1);
        if let Some(events) = events.lock().ok().and_then(|mut e| e.take()) {
            for e in events {
                input.send(SinkRecord::Event(Box::new(e)));
            }
        }
        drop(input);
        drop(clock);
        while worker.step() {}
        rx
    });
    let updates: Vec<ViewUpdate> = rx
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, updates) => updates,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    let mut live = LiveViews::default();
    live.apply(0, &updates);
    live
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(seq: i64, ty: &str, payload: &str) -> EventRow {
        EventRow {
            tenant_id: "acme".into(),
            seq,
            event_id: format!("e{seq}"),
            schema_version: "1.0".into(),
            event_type: ty.into(),
            session_id: "s1".into(),
            agent_id: "agent-1".into(),
            user_id: None,
            event_time: format!("2026-03-08T00:00:{seq:02}.000000Z"),
            parent_event_id: None,
            payload: payload.into(),
            prev_hash: String::new(),
            hash: String::new(),
            leaf_hash: String::new(),
        }
    }

    /// A tenant's log over 20 days, one session a day: a task, a refund escalated to a human
    /// (reviewers r0..r2, r0 approving in under a second), the decision, the refund (one ×20
    /// above what was approved, one after a rejection) and the task's end.
    fn log() -> Vec<EventRow> {
        let mut rows = Vec::new();
        let mut seq = 0i64;
        let mut push = |day: i64,
                        second: i64,
                        ty: &str,
                        session: &str,
                        parent: Option<String>,
                        payload: serde_json::Value| {
            let id = format!("e{seq}");
            rows.push(EventRow {
                event_time: custody_schemas::time::format_rfc3339(
                    1_772_323_200_000_000 + day * 86_400_000_000 + second * 1_000_000,
                ),
                session_id: session.into(),
                parent_event_id: parent,
                payload: payload.to_string(),
                ..row(seq, ty, "")
            });
            rows.last_mut().unwrap().event_id = id.clone();
            seq += 1;
            id
        };
        for day in 0..20i64 {
            let s = format!("s{day}");
            let t = push(
                day,
                0,
                "TASK_INITIATED",
                &s,
                None,
                json!({"goal": "refund"}),
            );
            let amount = 600 + day * 10;
            let action = json!({"tool_name": "payments.refund", "input": {"amount": amount}});
            let tier = ["low", "high"][(day % 2) as usize];
            let esc = push(
                day,
                10,
                "HUMAN_ESCALATION_TRIGGERED",
                &s,
                Some(t),
                json!({
                    "reason": "payment above the approval threshold",
                    "proposed_action": action,
                    "risk_tier": tier,
                    "presented_at": custody_schemas::time::format_rfc3339(
                        1_772_323_200_000_000 + day * 86_400_000_000 + 10_000_000),
                    "sla_seconds": 300,
                }),
            );
            let reviewer = format!("r{}", day % 3);
            let (latency_s, decision) = match day % 3 {
                0 => (0, "approve"),
                1 => (120, if day % 4 == 1 { "reject" } else { "approve" }),
                _ => (400, "approve"),
            };
            let dec = push(
                day,
                10 + latency_s + 1,
                "HUMAN_REVIEW_DECISION",
                &s,
                Some(esc.clone()),
                json!({
                    "escalation_event_id": esc,
                    "reviewer_id": reviewer,
                    "decision": decision,
                    "decided_at": custody_schemas::time::format_rfc3339(
                        1_772_323_200_000_000 + day * 86_400_000_000
                            + (10 + latency_s) * 1_000_000 + 500_000),
                }),
            );
            let called = if day == 7 { amount * 20 } else { amount };
            let call = push(
                day,
                600,
                "TOOL_CALLED",
                &s,
                Some(dec),
                json!({
                    "tool_name": "payments.refund", "input": {"amount": called}, "elevated": true,
                }),
            );
            push(
                day,
                700,
                "TASK_COMPLETED",
                &s,
                Some(call),
                json!({"result": "refunded"}),
            );
        }
        rows
    }

    fn cfg() -> ViewsConfig {
        ViewsConfig {
            rules: Arc::new(vec![crate::views::policy_violations::refund_approval_rule()]),
            ..ViewsConfig::default()
        }
    }

    fn golden_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || env!("CARGO_MANIFEST_DIR").into(),
                std::path::PathBuf::from,
            )
            .join("tests/golden/period")
    }

    fn check_golden(name: &str, got: &str) {
        let path = golden_dir().join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(got, want, "{name} differs from its golden file");
    }

    /// Reports of a period and as of a checkpoint: the same bytes from the rows in any order,
    /// equal to their golden files (JSON, the signed document and its HTML), and the signed
    /// documents verify under the public key and fail under any change of the report.
    #[test]
    fn scoped_reports_are_reproducible_and_match_golden_files() {
        use crate::document::SignedReport;
        use crate::regulatory::{CheckpointRef, ReportContext, render_scoped};
        use custody_operators::checkpoint::Signer;
        let rows = log();
        let signer = Signer::from_seed(&[7; 32]);
        let time = |s: &str| {
            (
                s.to_string(),
                custody_schemas::time::parse_rfc3339(s).unwrap(),
            )
        };
        let cuts = [
            (
                "march-5-to-12",
                Cut {
                    from: Some(time("2026-03-05T00:00:00Z")),
                    to: Some(time("2026-03-12T00:00:00Z")),
                    tree_size: rows.len() as u64,
                },
            ),
            (
                "as-of-60",
                Cut {
                    from: None,
                    to: None,
                    tree_size: 60,
                },
            ),
        ];
        for (label, cut) in cuts {
            let checkpoint = signer.checkpoint(
                "acme",
                cut.tree_size,
                &[0xab; 32],
                &[0xcd; 32],
                9,
                1_773_000_000_000_000,
                &[0; 32],
            );
            let ctx = ReportContext {
                checkpoint: Some(CheckpointRef::from(&checkpoint)),
                rules: cfg().rules.to_vec(),
                ..ReportContext::default()
            };
            let mut shuffled = rows.clone();
            shuffled.reverse();
            shuffled.extend(rows.iter().take(7).cloned());
            for name in ["eu-ai-act-art12", "eu-ai-act-art14"] {
                let render = |rows: &[EventRow]| {
                    let (live, mut scope) = views_of(rows, &cut, &cfg());
                    scope.checkpoint = Some(checkpoint.clone());
                    let report = render_scoped(name, "acme", &live, &ctx, scope).unwrap();
                    let doc = SignedReport::sign(&signer, &report);
                    (report, doc)
                };
                let (report, doc) = render(&rows);
                let (_, again) = render(&shuffled);
                assert_eq!(
                    doc, again,
                    "{label} {name}: the same inputs give the same bytes"
                );
                let value = doc.verify(&signer.public_key()).unwrap();
                assert_eq!(value["scope"]["as_of_tree_size"], cut.tree_size);
                let mut forged = doc.clone();
                forged.report =
                    forged
                        .report
                        .replacen("\"status\":\"attention\"", "\"status\":\"met\"", 1);
                assert_ne!(
                    forged.report, doc.report,
                    "{label} {name} has a finding to forge"
                );
                assert!(forged.verify(&signer.public_key()).is_err());
                let html = doc.to_html(&report);
                assert_eq!(SignedReport::parse(&html).unwrap(), doc);
                check_golden(&format!("{label}.{name}.json"), &(doc.to_json() + "\n"));
                check_golden(&format!("{label}.{name}.html"), &html);
            }
        }
    }

    /// A recomputation counts what it is given, whatever order it is given in.
    #[test]
    fn recomputation_counts_its_events_in_any_order() {
        let rows: Vec<EventRow> = (0..9)
            .map(|i| {
                if i % 3 == 0 {
                    row(i, "TASK_FAILED", r#"{"reason":"r","last_state":"x"}"#)
                } else {
                    row(i, "TASK_INITIATED", r#"{"goal":"g"}"#)
                }
            })
            .collect();
        let events: Vec<ChainedEvent> = rows.iter().filter_map(event_of_row).collect();
        assert_eq!(events.len(), 9);
        let mut reversed = events.clone();
        reversed.reverse();
        let cfg = ViewsConfig::default();
        let a = recompute(events, 0, &cfg);
        let b = recompute(reversed, 0, &cfg);
        let counts = a.event_counts("acme").unwrap().by_type;
        assert_eq!(counts["TASK_FAILED"], 3);
        assert_eq!(counts["TASK_INITIATED"], 6);
        assert_eq!(
            format!("{:?}", b.event_counts("acme").unwrap().by_type),
            format!("{counts:?}")
        );
    }
}

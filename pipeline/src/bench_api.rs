//! `custody bench api`: latency of the lake-backed endpoints of a running server under load.
//!
//! Samples tenants, and sessions and event ids from across each tenant's history, from the
//! server itself, then sends `--requests`
//! requests from `--concurrency` connections, cycling through `events?limit=20` (plain and
//! filtered by type), `sessions/{id}`, `events/{id}/causes` and `proofs/inclusion`; each
//! request is also recorded by the server (its access log), as in production. Prints p50, p95,
//! p99 and max per endpoint, then times the export of the tenant with the most events.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// One HTTP/1.1 GET: status and body.
fn get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}

fn get_json(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let (status, body) = get(addr, path, token)?;
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What to ask about: per tenant, its sessions and events seen.
struct Sample {
    tenant: String,
    sessions: Vec<String>,
    events: Vec<String>,
}

/// Points of a tenant's history the sample is taken at.
const SAMPLE_POINTS: i64 = 10;

/// Events and sessions of `tenant` from across its history, not only its first events (whose
/// causes and sessions are the cheapest to read): its time span is found by probing `from=`
/// at doubling distances from its first event, then a few events are taken at
/// [`SAMPLE_POINTS`] times spread over it.
fn sample(addr: &str, token: Option<&str>, tenant: &str) -> anyhow::Result<Option<Sample>> {
    use custody_schemas::time::{parse_rfc3339, rfc3339};
    let page = |from_us: Option<i64>, limit: usize| -> anyhow::Result<Vec<Value>> {
        let from = from_us
            .map(|us| format!("&from={}", rfc3339(us).as_str()))
            .unwrap_or_default();
        let page = get_json(
            addr,
            &format!("/v1/tenants/{tenant}/events?limit={limit}{from}"),
            token,
        )?;
        Ok(page["events"].as_array().cloned().unwrap_or_default())
    };
    let time = |e: &Value| e["event_time"].as_str().and_then(|t| parse_rfc3339(t).ok());
    let Some(first) = page(None, 1)?.first().and_then(time) else {
        return Ok(None);
    };
    // The last probe with events and the first without bound the end; halve the gap a few
    // times.
    let hour = 3_600_000_000i64;
    let (mut lo, mut hi) = (first, first + hour);
    while !page(Some(hi), 1)?.is_empty() {
        lo = hi;
        hi = first + 2 * (hi - first);
    }
    for _ in 0..6 {
        let mid = lo + (hi - lo) / 2;
        match page(Some(mid), 1)?.is_empty() {
            true => hi = mid,
            false => lo = mid,
        }
    }
    let mut sample = Sample {
        tenant: tenant.to_string(),
        sessions: Vec::new(),
        events: Vec::new(),
    };
    for k in 0..SAMPLE_POINTS {
        let at = first + (lo - first) * k / SAMPLE_POINTS;
        for e in page(Some(at), 5)? {
            if let Some(id) = e["event_id"].as_str() {
                sample.events.push(id.to_string());
            }
            if let Some(s) = e["session_id"].as_str()
                && !sample.sessions.iter().any(|x| x == s)
            {
                sample.sessions.push(s.to_string());
            }
        }
    }
    Ok((!sample.events.is_empty()).then_some(sample))
}

/// Runs the benchmark against the server at `addr`.
pub fn run(
    addr: &str,
    token: Option<&str>,
    requests: usize,
    concurrency: usize,
    tenants: usize,
    export_events: usize,
) -> anyhow::Result<()> {
    let listed = get_json(addr, "/v1/tenants", token)?;
    let names: Vec<String> = listed["tenants"]
        .as_array()
        .or_else(|| listed.as_array())
        .context("GET /v1/tenants: no tenant list")?
        .iter()
        .filter_map(|t| {
            t.as_str()
                .map(str::to_string)
                .or_else(|| t["tenant_id"].as_str().map(str::to_string))
        })
        .collect();
    if names.is_empty() {
        bail!("the server has no tenants");
    }
    let step = (names.len() / tenants.max(1)).max(1);
    let mut samples = Vec::new();
    for tenant in names.iter().step_by(step).take(tenants) {
        samples.extend(sample(addr, token, tenant)?);
    }
    if samples.is_empty() {
        bail!("no events to ask about");
    }
    println!(
        "custody bench api: {requests} requests, {concurrency} connections, {} tenants sampled of {}",
        samples.len(),
        names.len()
    );
    const KINDS: [&str; 5] = [
        "events?limit=20",
        "events?limit=20&type=TOOL_CALLED",
        "sessions/{id}",
        "events/{id}/causes",
        "proofs/inclusion",
    ];
    let latencies: Vec<Mutex<Vec<f64>>> = KINDS.iter().map(|_| Mutex::new(Vec::new())).collect();
    let errors = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let kind = i % KINDS.len();
                    let s = &samples[(i / KINDS.len()) % samples.len()];
                    let pick = |v: &Vec<String>| v[(i / 7) % v.len()].clone();
                    let t = &s.tenant;
                    let path = match kind {
                        0 => format!("/v1/tenants/{t}/events?limit=20"),
                        1 => format!("/v1/tenants/{t}/events?limit=20&type=TOOL_CALLED"),
                        2 => match s.sessions.is_empty() {
                            true => format!("/v1/tenants/{t}/events?limit=20"),
                            false => format!("/v1/tenants/{t}/sessions/{}", pick(&s.sessions)),
                        },
                        3 => format!("/v1/tenants/{t}/events/{}/causes", pick(&s.events)),
                        _ => format!(
                            "/v1/tenants/{t}/proofs/inclusion?event_id={}",
                            pick(&s.events)
                        ),
                    };
                    let t0 = Instant::now();
                    let ok = matches!(get(addr, &path, token), Ok((200, _)));
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut l) = latencies[kind].lock() {
                        l.push(ms);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  {requests} requests in {secs:.1}s ({:.0} req/s), {} not 200",
        requests as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
    for (kind, l) in KINDS.iter().zip(&latencies) {
        let mut l = l.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {kind:<34} n {:>6}  p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            l.len(),
            percentile(&l, 0.50),
            percentile(&l, 0.95),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(0.0)
        );
    }
    // The export of the tenant with the fewest events at or above `export_events` (by its
    // event-count view), or of the biggest tenant when none has that many.
    let mut counts = Vec::with_capacity(names.len());
    for tenant in &names {
        let view = get_json(
            addr,
            &format!("/v1/tenants/{tenant}/views/event-counts"),
            token,
        )?;
        counts.push((view["total"].as_i64().unwrap_or(0), tenant.clone()));
    }
    let target = i64::try_from(export_events).unwrap_or(i64::MAX);
    let chosen = counts
        .iter()
        .filter(|(n, _)| *n >= target)
        .min()
        .or_else(|| counts.iter().max())
        .cloned()
        .context("no tenant to export")?;
    let t0 = Instant::now();
    let (status, body) = get(addr, &format!("/v1/tenants/{}/export", chosen.1), token)?;
    let secs = t0.elapsed().as_secs_f64();
    let lines = body.iter().filter(|b| **b == b'\n').count();
    println!(
        "  export of {} ({} events counted): {status}, {lines} lines, {:.1} MB in {secs:.2}s",
        chosen.1,
        chosen.0,
        body.len() as f64 / 1e6
    );
    Ok(())
}

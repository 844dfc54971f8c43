//! Availability and identity defects, end to end: signals drain, an unreachable broker is an
//! error, a file is one input whatever path names it (and a different file under its name is
//! refused), a restart seeks instead of re-reading, `demo --fresh` never deletes a warehouse
//! another run is writing, and a warehouse that lost its catalog is refused.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use custody_tests::{
    StderrWatch, custody, custody_command, custody_output, free_addr, generate_ndjson,
};

fn run(args: &[&str], dir: &Path) -> std::process::Output {
    custody_command()
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("CUSTODY__SERVE__LISTEN", "off")
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `N in = A accepted + Q quarantined` of a run's summary.
fn counts(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains(" in = "))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// SIGTERM and SIGINT stop reading, commit what was read, exit 0; the next run goes on from
/// there and, in the end, every event is in the lake once and the chains verify.
#[test]
fn sigterm_and_sigint_drain_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    generate_ndjson(&input, 60_000, 4);
    let wh = dir.path().join("wh");
    let mut total = 0;
    for signal in ["TERM", "INT"] {
        let mut child = custody_command()
            .args(["run", "--input", input.to_str().unwrap()])
            .args(["--warehouse", wh.to_str().unwrap(), "--listen", "off"])
            .env("RUST_LOG", "info")
            .env("CUSTODY__PIPELINE__BATCH_SIZE", "2000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal once the pipeline is running (the dataflow started).
        let watch = StderrWatch::new(&mut child, "resuming");
        assert!(watch.wait(Duration::from_secs(60)), "the run did not start");
        std::thread::sleep(Duration::from_millis(1500));
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "SIG{signal}: exit {}", out.status);
        let summary = stdout(&out);
        let (n, accepted, quarantined) = counts(&summary);
        assert_eq!(n, accepted + quarantined, "{summary}");
        assert!(
            n < 60_000,
            "SIG{signal} came after the whole input: {summary}"
        );
        total += n;
    }
    let last = run(
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(last.status.success(), "{}", stderr(&last));
    total += counts(&stdout(&last)).0;
    assert_eq!(total, 60_000);
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(verified.contains("verified 60000 events"), "{verified}");
    assert!(verified.contains("all ok"), "{verified}");
}

/// A broker that never answers is an error with a clear message and a non-zero exit, not an
/// empty, balanced run.
#[test]
fn an_unreachable_broker_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let out = run(
        &[
            "run",
            "--kafka",
            &free_addr(),
            "--topic",
            "nowhere",
            "--idle-exit",
            "3s",
            "--warehouse",
            wh.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("never connected"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("(balanced)"), "{}", stdout(&out));
}

/// `in.ndjson`, `./in.ndjson` and the absolute path are one input; a different file under the
/// same path is refused.
#[test]
fn a_file_is_one_input_by_any_path_and_another_file_under_its_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    generate_ndjson(&dir.path().join("in.ndjson"), 3000, 3);
    let absolute = dir.path().join("in.ndjson");
    let mut total = 0;
    for path in ["in.ndjson", "./in.ndjson", absolute.to_str().unwrap()] {
        let out = run(&["run", "--input", path, "--warehouse", "wh"], dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        total += counts(&stdout(&out)).1;
    }
    assert_eq!(total, 3000, "the same file was ingested more than once");
    // Grown: the new lines only.
    let more = dir.path().join("more.ndjson");
    generate_ndjson(&more, 3010, 3);
    let text = std::fs::read_to_string(&more).unwrap();
    std::fs::write(&absolute, &text).unwrap();
    let out = run(
        &["run", "--input", "in.ndjson", "--warehouse", "wh"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&stdout(&out)).1, 10);
    // Replaced by another file: refused, nothing ingested.
    let other = dir.path().join("other.ndjson");
    custody(&[
        "generate",
        "--events",
        "4000",
        "--seed",
        "7",
        "--out",
        other.to_str().unwrap(),
    ]);
    std::fs::rename(&other, &absolute).unwrap();
    let out = run(
        &["run", "--input", "in.ndjson", "--warehouse", "wh"],
        dir.path(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is not the input ingested under that name"),
        "{}",
        stderr(&out)
    );
}

/// A restart seeks to the durable position: it does not re-read the committed prefix, nor
/// open empty epochs on the views' clock while doing so.
#[test]
fn a_restart_seeks_past_the_committed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    generate_ndjson(&input, 3000, 3);
    let with_tick = |extra: &[&str]| {
        let mut args = vec!["run", "--input", "in.ndjson", "--warehouse", "wh"];
        args.extend_from_slice(extra);
        custody_command()
            .args(&args)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env("CUSTODY__SERVE__LISTEN", "off")
            .env("CUSTODY__PIPELINE__BATCH_SIZE", "100")
            .env("CUSTODY__VIEWS__CLOCK_TICK", "1ms")
            .output()
            .unwrap()
    };
    let first = with_tick(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let mut text = std::fs::read_to_string(&input).unwrap();
    let generated = dir.path().join("more.ndjson");
    generate_ndjson(&generated, 3005, 3);
    text = std::fs::read_to_string(&generated).unwrap()[text.len()..].to_string();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    drop(file);
    let second = with_tick(&[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let out = stdout(&second);
    assert_eq!(counts(&out), (5, 5, 0), "{out}");
    assert!(out.contains("epochs committed: 1,"), "{out}");
}

/// `demo --fresh` takes the writer lock before deleting anything: with another run writing,
/// it is refused and the warehouse is left alone.
#[test]
fn demo_fresh_never_deletes_a_warehouse_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    generate_ndjson(&input, 2000, 2);
    let wh = dir.path().join("wh");
    let (input, wh_arg) = (input.to_str().unwrap(), wh.to_str().unwrap());
    custody(&["run", "--input", input, "--warehouse", wh_arg]);
    // A writer halted inside its commit (of another input) holds the lock.
    let second = dir.path().join("second.ndjson");
    generate_ndjson(&second, 100, 2);
    let mut writer = custody_command()
        .args(["run", "--input", second.to_str().unwrap()])
        .args(["--warehouse", wh_arg, "--listen", "off"])
        .env("CUSTODY_FAILPOINT", "commit-start#1")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let watch = StderrWatch::new(&mut writer, "failpoint");
    if !watch.wait(Duration::from_secs(60)) {
        let _ = writer.kill();
        let _ = writer.wait();
        panic!("the writer did not halt: {}", watch.lines());
    }
    let out = custody_output(&["demo", "--fresh", "--events", "100", "--warehouse", wh_arg]);
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("another custody process"),
        "{}",
        stderr(&out)
    );
    let verified = custody(&["verify", "--warehouse", wh_arg]);
    assert!(verified.contains("verified 2000 events"), "{verified}");
}

/// A warehouse with data whose catalog was deleted or emptied is refused, never started over.
#[test]
fn a_warehouse_that_lost_its_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    generate_ndjson(&input, 500, 2);
    let wh = dir.path().join("wh");
    let (input, wh_arg) = (input.to_str().unwrap(), wh.to_str().unwrap());
    custody(&["run", "--input", input, "--warehouse", wh_arg]);
    let catalog = wh.join("catalog.db");
    let saved = std::fs::read(&catalog).unwrap();
    for damage in ["deleted", "emptied"] {
        match damage {
            "deleted" => std::fs::remove_file(&catalog).unwrap(),
            _ => std::fs::write(&catalog, b"").unwrap(),
        }
        for args in [
            vec!["run", "--input", input, "--warehouse", wh_arg],
            vec!["verify", "--warehouse", wh_arg],
        ] {
            let out = custody_output(&args);
            assert!(
                !out.status.success(),
                "{damage}: {args:?}: {}",
                stdout(&out)
            );
            assert!(
                stderr(&out).contains("restore catalog.db"),
                "{damage}: {}",
                stderr(&out)
            );
        }
        std::fs::write(&catalog, &saved).unwrap();
    }
    let verified = custody(&["verify", "--warehouse", wh_arg]);
    assert!(verified.contains("verified 500 events"), "{verified}");
}

/// A panic in a timely worker or in the sink thread ends the process with a non-zero exit (a
/// panicked worker once left the others waiting forever), acknowledging nothing past the last
/// durable epoch: the next runs complete the input exactly once.
#[test]
fn a_panicking_worker_or_sink_ends_the_process_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    generate_ndjson(&input, 6000, 3);
    let wh = dir.path().join("wh");
    for point in [
        "hash-chain#2!panic",
        "after-commit:epochs#1!panic",
        "before-commit:events#1!panic",
    ] {
        let mut child = custody_command()
            .args(["run", "--input", input.to_str().unwrap()])
            .args(["--warehouse", wh.to_str().unwrap(), "--listen", "off"])
            .env("RUST_LOG", "warn")
            .env("CUSTODY__PIPELINE__BATCH_SIZE", "1000")
            .env("CUSTODY_FAILPOINT", point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{point}: the process hung after the panic");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = child.wait_with_output().unwrap();
        assert_eq!(status.code(), Some(101), "{point}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("panicked"),
            "{point}: {}",
            stderr(&out)
        );
    }
    let last = run(
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(last.status.success(), "{}", stderr(&last));
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(verified.contains("verified 6000 events"), "{verified}");
    assert!(verified.contains("all ok"), "{verified}");
}

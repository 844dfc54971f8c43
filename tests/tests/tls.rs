//! TLS everywhere Custody talks, with certificates the test makes (openssl: a CA, and a server
//! certificate for 127.0.0.1 and localhost it signs):
//! - Kafka over SASL_SSL: SCRAM-SHA-512 to a real broker (tansu, with `--authentication`) behind
//!   a TLS terminator (socat; tansu 0.6 does not speak TLS itself). Custody produces and consumes
//!   with the CA; a client trusting another CA, or with a wrong password, gets nothing through.
//! - HTTPS for the API: `[serve] tls_cert_file`/`tls_key_file`; plain HTTP to that port gets no
//!   answer; the witness and `custody export --server` trust the CA by `CUSTODY_CA_FILE`.
//! - HTTPS to Alertmanager: a real Alertmanager serving TLS (`--web.config.file`) receives the
//!   drift alerts, custody trusting its CA by `[alerts] alertmanager_ca_file`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use custody_tests::{
    KillOnDrop, alertmanager_binary, await_line, await_listening, custody_command, free_addr,
    port_of, tansu_bin,
};

/// The two tests take turns: each picks free ports and binds them a little later (tansu,
/// socat, Alertmanager, custody), and run side by side one could take a port the other
/// picked (custody then refuses the busy port and exits).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A CA that signed nothing here.
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate it signs for 127.0.0.1 and localhost, and an unrelated CA.
fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for name in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            "/CN=custody test CA",
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` over HTTPS trusting `ca`: status and body.
fn curl(ca: &Path, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn kafka_config(dir: &Path, name: &str, ca: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nssl_ca_file = \"{}\"\n\
             sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"alice\"\n\
             connect_timeout = \"8s\"\n",
            ca.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn kafka_over_sasl_ssl() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let storage = dir.path().join("tansu");
    std::fs::create_dir_all(&storage).unwrap();
    let (plain, tls) = (free_addr(), free_addr());
    let broker = |auth: bool| {
        let mut command = Command::new(tansu_bin());
        command
            .current_dir(&storage)
            .args(["broker", "--listener-url", &format!("tcp://{plain}")])
            .args(["--advertised-listener-url", &format!("tcp://{tls}")])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        if auth {
            command.arg("--authentication");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        await_listening(&plain, "tansu", Duration::from_secs(30));
        KillOnDrop(child)
    };
    // The SCRAM user is made before authentication is switched on.
    let setup = broker(false);
    let made = Command::new(tansu_bin())
        .args([
            "user",
            "create",
            "alice",
            "s3cret",
            "--mechanism",
            "scram512",
        ])
        .args(["--broker", &format!("tcp://{plain}")])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    drop(setup);
    let _broker = broker(true);
    let port = port_of(&tls);
    let _terminator = KillOnDrop(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                certs.cert.display(),
                certs.key.display()
            ))
            .arg(format!("TCP:{plain}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (tests/run.sh installs Debian's package)"),
    );
    await_listening(&tls, "socat", Duration::from_secs(10));

    let good = kafka_config(dir.path(), "good.toml", &certs.ca);
    let produced = custody_command()
        .arg("--config")
        .arg(&good)
        .args([
            "generate",
            "--events",
            "800",
            "--tenants",
            "3",
            "--kafka",
            &tls,
        ])
        .args(["--topic", "agent-events", "--partitions", "2"])
        .env("CUSTODY_KAFKA_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(
        text(&produced).contains("produced 800 of 800"),
        "{}",
        text(&produced)
    );
    let consume = |config: &Path, password: &str, wh: &str| {
        custody_command()
            .arg("--config")
            .arg(config)
            .args([
                "run",
                "--kafka",
                &tls,
                "--topic",
                "agent-events",
                "--group",
                wh,
            ])
            .arg("--warehouse")
            .arg(dir.path().join(wh))
            .args(["--idle-exit", "4s"])
            .env("CUSTODY_KAFKA_PASSWORD", password)
            .output()
            .unwrap()
    };
    let ran = consume(&good, "s3cret", "wh");
    assert!(ran.status.success(), "{}", text(&ran));
    assert!(
        text(&ran).contains("800 in = 800 accepted + 0 quarantined (balanced)"),
        "{}",
        text(&ran)
    );
    // A client that trusts another CA, or has the wrong password, gets nothing.
    let distrust = kafka_config(dir.path(), "other-ca.toml", &certs.other_ca);
    let refused = consume(&distrust, "s3cret", "wh-other-ca");
    assert!(!refused.status.success(), "{}", text(&refused));
    let refused = consume(&good, "wrong", "wh-wrong-password");
    assert!(!refused.status.success(), "{}", text(&refused));
    // A SASL configuration without its password is a configuration error, at once.
    let no_password = custody_command()
        .arg("--config")
        .arg(&good)
        .args(["run", "--kafka", &tls, "--topic", "agent-events"])
        .env_remove("CUSTODY_KAFKA_PASSWORD")
        .output()
        .unwrap();
    assert!(!no_password.status.success());
    assert!(
        text(&no_password).contains("CUSTODY_KAFKA_PASSWORD"),
        "{}",
        text(&no_password)
    );
}

#[test]
fn https_api_witness_export_and_alertmanager() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());

    // Alertmanager serving HTTPS only.
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    )
    .unwrap();
    let am_config = dir.path().join("am.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let am = free_addr();
    let _alertmanager = KillOnDrop(
        Command::new(alertmanager_binary())
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address={am}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    await_listening(&am, "alertmanager", Duration::from_secs(30));

    // Custody serving HTTPS, sending drift alerts to the HTTPS Alertmanager.
    let addr = free_addr();
    let child = custody_command()
        .args([
            "demo",
            "--serve",
            "--events",
            "6000",
            "--tenants",
            "12",
            "--listen",
            &addr,
        ])
        .arg("--warehouse")
        .arg(dir.path().join("wh"))
        .env("CUSTODY__SERVE__TLS_CERT_FILE", &certs.cert)
        .env("CUSTODY__SERVE__TLS_KEY_FILE", &certs.key)
        .env("CUSTODY__ALERTS__ALERTMANAGER_URL", format!("https://{am}"))
        .env("CUSTODY__ALERTS__ALERTMANAGER_CA_FILE", &certs.ca)
        .env("CUSTODY__DRIFT__WINDOW", "2m")
        .env("CUSTODY__DRIFT__BASELINE_WINDOWS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("custody.err")).unwrap())
        .spawn()
        .unwrap();
    let custody_err = dir.path().join("custody.err");
    let _custody = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        await_line(child, "serving until interrupted")
    }))
    .unwrap_or_else(|_| {
        panic!(
            "custody did not serve: {}",
            std::fs::read_to_string(&custody_err).unwrap_or_default()
        )
    });
    let base = format!("https://127.0.0.1:{}", port_of(&addr));

    let (code, body) = curl(&certs.ca, &format!("{base}/v1/public-key"));
    assert_eq!(code, 200, "{body}");
    let key: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = key["public_key"].as_str().unwrap().to_string();
    // Plain HTTP gets no HTTP answer; a client trusting another CA refuses the server.
    let (code, _) = curl(
        &certs.ca,
        &format!("http://127.0.0.1:{}/healthz", port_of(&addr)),
    );
    assert_eq!(code, 0, "plain HTTP answered");
    let (code, _) = curl(&certs.other_ca, &format!("{base}/healthz"));
    assert_eq!(code, 0, "an untrusted certificate was accepted");

    // The witness and export over HTTPS, trusting the CA.
    // `custody witness --once` with its own state, trusting `ca`.
    let witness_once = |state: &str, ca: &Path| {
        custody_command()
            .args([
                "witness",
                "--log",
                &base,
                "--log-key",
                &key,
                "--once",
                "--state",
            ])
            .arg(dir.path().join(state))
            .env("CUSTODY_CA_FILE", ca)
            .output()
            .unwrap()
    };
    let witness = witness_once("witness", &certs.ca);
    assert!(witness.status.success(), "{}", text(&witness));
    assert!(
        text(&witness).contains("witnessed 12 tenant(s); 0 alarm(s)"),
        "{}",
        text(&witness)
    );
    let exported = custody_command()
        .args([
            "export",
            "--server",
            &base,
            "--tenant",
            "tenant-0000",
            "--trusted-key",
            &key,
        ])
        .arg("--out")
        .arg(dir.path().join("export"))
        .env("CUSTODY_CA_FILE", &certs.ca)
        .output()
        .unwrap();
    assert!(
        text(&exported).contains("signature OK"),
        "{}",
        text(&exported)
    );
    let untrusted = witness_once("witness-2", &certs.other_ca);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));

    // Alertmanager got the drift alerts over HTTPS.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = curl(
            &certs.ca,
            &format!("https://127.0.0.1:{}/api/v2/alerts", port_of(&am)),
        );
        if code == 200 && body.contains("CustodyAgentDrift") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drift alerts over HTTPS: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

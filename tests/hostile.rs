//! Peers that must be refused: wrong or missing certificates, impostors, broken frames. Each is
//! refused or closed with a clear error, nothing from it is stored, and honest terminals keep
//! being served.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use inflight_e2e::{accepted_id, Deployment, SaleApp};
use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::pki::{DevCa, Validity};
use inflight_net::{endpoint, tls};
use inflight_wire::{
    Currency, ErrorCode, Expiry, MasterMsg, Money, Pan, Payment, PaymentId, TerminalId, TerminalMsg, TERMINAL_ALPN,
    TERMINAL_FRAME_BYTES_MAX, TERMINAL_PROTOCOL_VERSION,
};

/// The name on this deployment's aircraft server certificate.
fn master_name(dep: &Deployment) -> String {
    let cfg: toml::Table = std::fs::read_to_string(dep.config("slave-1")).expect("config").parse().expect("toml");
    cfg["master"]["server_name"].as_str().expect("server_name").to_owned()
}

fn master_addr(dep: &Deployment) -> SocketAddr {
    let cfg: toml::Table = std::fs::read_to_string(dep.config("master")).expect("config").parse().expect("toml");
    cfg["listen"].as_str().expect("listen").parse().expect("addr")
}

/// A raw terminal client with the given TLS client config.
async fn open(
    dep: &Deployment,
    tls: rustls::ClientConfig,
) -> Result<(quinn::Connection, FrameWriter, FrameReader), String> {
    let ep =
        endpoint::client("127.0.0.1:0".parse().expect("addr"), tls, Default::default()).map_err(|e| e.to_string())?;
    let conn = endpoint::connect(&ep, master_addr(dep), &master_name(dep), Duration::from_secs(3))
        .await
        .map_err(|e| e.to_string())?;
    let (s, r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let (w, r) = framed(s, r, TERMINAL_FRAME_BYTES_MAX);
    Ok((conn, w, r))
}

fn client_tls(dep: &Deployment, terminal: &str) -> rustls::ClientConfig {
    let id = tls::Identity::from_pem_files(
        &dep.path(&format!("pki/{terminal}.pem")),
        &dep.path(&format!("pki/{terminal}.key")),
    )
    .expect("identity");
    tls::client_config(id, tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN).expect("tls")
}

async fn hello(w: &mut FrameWriter, r: &mut FrameReader, as_terminal: &str) -> Result<MasterMsg, String> {
    let t = TerminalId::parse(as_terminal).expect("valid id");
    w.send(&TerminalMsg::Hello { version: TERMINAL_PROTOCOL_VERSION, terminal: t }).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), r.recv::<MasterMsg>()).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(None)) => Err("stream closed".into()),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

/// The next message that answers the client (the BIN list, the hot-card list and results
/// pushed on connect are skipped), or why none came.
async fn next(r: &mut FrameReader) -> Result<Option<MasterMsg>, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), r.recv::<MasterMsg>()).await {
            Err(_) => return Err("no answer".into()),
            Ok(Ok(Some(MasterMsg::BinList(_) | MasterMsg::HotList(_) | MasterMsg::Result { .. }))) => continue,
            Ok(r) => return r.map_err(|e| e.to_string()),
        }
    }
}

fn payment(terminal: &str, pan: &str) -> Payment {
    Payment {
        id: PaymentId::mint(1_790_000_000_000, [9; 10]),
        terminal: TerminalId::parse(terminal).expect("valid"),
        pan: Pan::parse(pan).expect("valid card"),
        expiry: Expiry::parse("12/30").expect("valid"),
        amount: Money::new(999, Currency::parse("EUR").expect("known")).expect("valid"),
        seat: "9Z".into(),
        captured_unix_ms: 1_790_000_000_000,
        items: vec![],
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    }
}

/// A terminal-side client configuration presenting `pair` (written under `dir`).
fn pair_tls(dep: &Deployment, dir: &Path, pair: &inflight_net::pki::PemPair) -> rustls::ClientConfig {
    let id = tls::Identity::from_pem_files(
        &write_pem(dir, "c.pem", &pair.cert_pem),
        &write_pem(dir, "k.pem", &pair.key_pem),
    )
    .expect("identity");
    tls::client_config(id, tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN).expect("tls")
}

fn write_pem(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pem");
    p
}

/// An honest terminal captures one payment end to end; returns its id.
fn honest_capture(dep: &Deployment, amount: u64) -> String {
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let a = app.capture(&dep.cards()[1], amount, "1A").expect("answer");
    accepted_id(&a).unwrap_or_else(|| panic!("honest capture refused: {a}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_or_none_are_refused_at_the_handshake() {
    let dep = Deployment::new(2);
    let _master = dep.start_master();
    let tmp = tempfile::tempdir().expect("tempdir");

    // A certificate for a real terminal's name, but signed by another CA.
    let evil = DevCa::new("not the airline").expect("ca");
    let pair = evil.issue("slave-1.terminal.inflight", true, false, Validity::default()).expect("cert");
    let cfg = pair_tls(&dep, tmp.path(), &pair);
    let wrong_ca = match open(&dep, cfg).await {
        Err(e) => Err(e),
        Ok((_c, mut w, mut r)) => hello(&mut w, &mut r, "slave-1").await.map(|_| ()),
    };
    assert!(wrong_ca.is_err(), "a certificate from another CA must be refused");

    let anon = tls::client_config_anonymous(tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN)
        .expect("tls");
    let no_cert = match open(&dep, anon).await {
        Err(e) => Err(e),
        Ok((_c, mut w, mut r)) => hello(&mut w, &mut r, "slave-1").await.map(|_| ()),
    };
    assert!(no_cert.is_err(), "a terminal without a certificate must be refused");

    assert_eq!(dep.master_total(), 0, "nothing stored from refused peers");
    assert_eq!(dep.master_status(None)["terminals_connected"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_cannot_speak_or_submit_as_another() {
    let dep = Deployment::new(2);
    let _master = dep.start_master();
    let pan = dep.cards()[0].pan.clone();

    // slave-2's certificate, claiming to be slave-1.
    let (_c, mut w, mut r) = open(&dep, client_tls(&dep, "slave-2")).await.expect("handshake");
    let m = hello(&mut w, &mut r, "slave-1").await;
    assert!(matches!(m, Ok(MasterMsg::Error { code: ErrorCode::WrongTerminal, .. })), "{m:?}");

    // slave-2 as itself, submitting a payment under slave-1's id.
    let (_c, mut w, mut r) = open(&dep, client_tls(&dep, "slave-2")).await.expect("handshake");
    let m = hello(&mut w, &mut r, "slave-2").await;
    assert!(matches!(m, Ok(MasterMsg::Hello { .. })), "{m:?}");
    w.send(&TerminalMsg::Submit { payment: payment("slave-1", &pan), answered: true }).await.expect("send");
    let m = next(&mut r).await;
    assert!(matches!(m, Ok(Some(MasterMsg::Error { code: ErrorCode::WrongTerminal, .. }))), "{m:?}");

    assert_eq!(dep.master_total(), 0, "nothing stored from an impostor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_frames_close_only_that_connection_and_store_nothing() {
    let dep = Deployment::new(2);
    let _flight = dep.start_flight();
    let first = tokio::task::block_in_place(|| honest_capture(&dep, 1));
    dep.wait_for("first payment at master", Duration::from_secs(20), || dep.master_total() == 1);

    type Attack = fn(&mut FrameWriter) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
    let attacks: [(&str, Attack); 4] = [
        ("garbage frame", |w| {
            Box::pin(async move {
                let _ = w.send_raw(Bytes::from_static(b"\xff\xfe not bincode at all")).await;
            })
        }),
        ("trailing bytes", |w| {
            Box::pin(async move {
                let t = TerminalId::parse("slave-2").expect("valid");
                let mut b = inflight_wire::encode(&TerminalMsg::Hello { version: 1, terminal: t });
                b.extend_from_slice(b"extra");
                let _ = w.send_raw(Bytes::from(b)).await;
            })
        }),
        ("oversized length prefix", |w| {
            Box::pin(async move {
                let _ = w.stream_mut().write_all(&(64u32 << 20).to_be_bytes()).await;
                let _ = w.stream_mut().write_all(&[0u8; 1024]).await;
            })
        }),
        ("truncated frame", |w| {
            Box::pin(async move {
                let _ = w.stream_mut().write_all(&100u32.to_be_bytes()).await;
                let _ = w.stream_mut().write_all(&[1u8; 10]).await;
                w.finish();
            })
        }),
    ];
    for (name, attack) in attacks {
        let (conn, mut w, mut r) = open(&dep, client_tls(&dep, "slave-2")).await.expect("handshake");
        assert!(matches!(hello(&mut w, &mut r, "slave-2").await, Ok(MasterMsg::Hello { .. })), "{name}: hello");
        attack(&mut w).await;
        let m = next(&mut r).await;
        assert!(
            matches!(m, Ok(Some(MasterMsg::Error { code: ErrorCode::Malformed, .. }))),
            "{name}: expected a Malformed error frame, got {m:?}"
        );
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        assert!(closed.is_ok(), "{name}: the master closes the connection");
    }

    // The honest terminal is still served, and only honest payments are stored.
    let second = tokio::task::block_in_place(|| honest_capture(&dep, 2));
    assert_ne!(first, second);
    dep.wait_for("second payment at master", Duration::from_secs(20), || dep.master_total() == 2);
}

/// Connects with a certificate made by `make` and says Hello as slave-1: Ok if the master
/// answered Hello.
async fn try_identity(dep: &Deployment, pair: &inflight_net::pki::PemPair) -> Result<MasterMsg, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let id = tls::Identity::from_pem_files(
        &write_pem(tmp.path(), "c.pem", &pair.cert_pem),
        &write_pem(tmp.path(), "k.pem", &pair.key_pem),
    )
    .map_err(|e| e.to_string())?;
    let cfg = tls::client_config(id, tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN)
        .map_err(|e| e.to_string())?;
    let (_c, mut w, mut r) = open(dep, cfg).await?;
    hello(&mut w, &mut r, "slave-1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_expired_not_yet_valid_and_wrong_usage_certificates_are_refused() {
    let dep = Deployment::new(1);
    let _master = dep.start_master();
    let ca = inflight_setup::provision::load_ca(&dep.path(""), inflight_setup::provision::Role::Terminal).expect("CA");
    let name = "slave-1.terminal.inflight";
    // Control: a fresh, correct certificate from the same CA is accepted.
    let good = ca.issue(name, true, false, Validity::default()).expect("cert");
    assert!(matches!(try_identity(&dep, &good).await, Ok(MasterMsg::Hello { .. })), "the control certificate works");
    let cases = [
        ("self-signed", inflight_net::pki::self_signed(name).expect("cert")),
        (
            "expired",
            ca.issue(name, true, false, Validity { not_before: (2020, 1, 1), not_after: (2021, 1, 1) }).expect("cert"),
        ),
        (
            "not yet valid",
            ca.issue(name, true, false, Validity { not_before: (2040, 1, 1), not_after: (2045, 1, 1) }).expect("cert"),
        ),
        ("server-only key usage", ca.issue(name, false, true, Validity::default()).expect("cert")),
    ];
    for (what, pair) in cases {
        let r = try_identity(&dep, &pair).await;
        assert!(r.is_err(), "{what}: must be refused, got {r:?}");
    }
    assert_eq!(dep.master_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_versions_tags_and_huge_inner_lengths_close_the_connection() {
    let dep = Deployment::new(1);
    let _master = dep.start_master();
    // A Hello with a protocol version the master does not speak.
    let (_c, mut w, mut r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("handshake");
    w.send(&TerminalMsg::Hello { version: 99, terminal: TerminalId::parse("slave-1").expect("valid") })
        .await
        .expect("send");
    let m = next(&mut r).await;
    assert!(matches!(m, Ok(Some(MasterMsg::Error { code: ErrorCode::VersionMismatch, .. }))), "{m:?}");
    // After a good Hello: a frame with an unknown message tag, then one whose inner length
    // prefix claims 2^60 bytes.
    let mut huge = vec![1u8];
    huge.extend_from_slice(&[0u8; 16]);
    huge.push(0xfd);
    huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
    for (what, frame) in [("unknown tag", vec![7u8, 0, 0]), ("huge inner length", huge)] {
        let (conn, mut w, mut r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("handshake");
        assert!(matches!(hello(&mut w, &mut r, "slave-1").await, Ok(MasterMsg::Hello { .. })), "{what}");
        w.send_raw(Bytes::from(frame)).await.expect("send");
        let m = next(&mut r).await;
        assert!(matches!(m, Ok(Some(MasterMsg::Error { code: ErrorCode::Malformed, .. }))), "{what}: {m:?}");
        assert!(tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.is_ok(), "{what}: closed");
    }
    assert_eq!(dep.master_total(), 0);
}

fn master_pid_rss_mib(master: &inflight_e2e::Daemon) -> f64 {
    master.peak_rss_mib().expect("master memory readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_connections_and_idle_or_excess_streams_stay_bounded() {
    let dep = Deployment::new(1);
    dep.set_config("master", "hello_timeout_ms", "1000");
    let (_issuer, master, _slaves) = dep.start_flight();
    let before = master_pid_rss_mib(&master);

    // A stream opened and never written to is closed after the Hello timeout.
    let (conn, _w, _r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("handshake");
    let closed = tokio::time::timeout(Duration::from_secs(4), conn.closed()).await;
    assert!(closed.is_ok(), "an idle stream is not kept open");

    // One connection cannot open more than a handful of streams.
    let (conn, mut w, mut r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("handshake");
    assert!(matches!(hello(&mut w, &mut r, "slave-1").await, Ok(MasterMsg::Hello { .. })));
    let mut opened = 0;
    let mut streams = Vec::new();
    for _ in 0..1_000 {
        match tokio::time::timeout(Duration::from_millis(100), conn.open_bi()).await {
            Ok(Ok((mut s, r))) => {
                let _ = s.write_all(b"x").await;
                streams.push((s, r));
                opened += 1;
            }
            _ => break,
        }
    }
    assert!(opened <= inflight_net::endpoint::BIDI_STREAMS_MAX as usize, "{opened} extra streams opened");

    // A flood: hundreds of handshakes without a certificate and authenticated idle connections.
    let anon = tls::client_config_anonymous(tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN)
        .expect("tls");
    let mut flood = Vec::new();
    for i in 0..300 {
        let cfg = if i % 3 == 0 { client_tls(&dep, "slave-1") } else { anon.clone() };
        let dep_addr = master_addr(&dep);
        let name = master_name(&dep);
        flood.push(tokio::spawn(async move {
            let ep = endpoint::client("127.0.0.1:0".parse().expect("addr"), cfg, Default::default()).expect("endpoint");
            let c = endpoint::connect(&ep, dep_addr, &name, Duration::from_secs(5)).await;
            if let Ok(c) = &c {
                let _ = c.open_bi().await;
            }
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            drop(c);
            drop(ep);
        }));
    }
    // Meanwhile the honest terminal is served.
    let id = tokio::task::block_in_place(|| honest_capture(&dep, 3));
    for f in flood {
        let _ = f.await;
    }
    dep.wait_for("the honest payment is at the master", Duration::from_secs(20), || {
        // An unknown payment has no `state` at all (it answers `error: unknown_payment`): compare
        // with the states a stored payment can be in.
        matches!(dep.master_status(Some(&id))["state"].as_str(), Some("stored" | "decided" | "delivered"))
    });
    let after = master_pid_rss_mib(&master);
    eprintln!("master peak memory: {before:.1} MiB before the flood, {after:.1} MiB after");
    assert!(after - before < 96.0, "memory grew by {:.1} MiB", after - before);
    drop(streams);
}

/// Sends the first flight of a QUIC handshake (a client Initial carrying a TLS ClientHello) to
/// `to`, `count` times, each a new connection, and never answers anything: the half-open
/// handshakes a spoofing attacker can make for the price of one datagram each.
fn send_half_open_initials(dep: &Deployment, count: usize) {
    use quinn::crypto::rustls::QuicClientConfig;
    let to = master_addr(dep);
    let tls = tls::client_config_anonymous(tls::roots(&dep.path("pki/aircraft-ca.pem")).expect("ca"), TERMINAL_ALPN)
        .expect("tls");
    let client = quinn::ClientConfig::new(std::sync::Arc::new(QuicClientConfig::try_from(tls).expect("quic tls")));
    let mut ep = quinn_proto::Endpoint::new(Default::default(), None, false, None);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let now = std::time::Instant::now();
    let mut buf = Vec::new();
    for _ in 0..count {
        let (_, mut conn) = ep.connect(now, client.clone(), to, &master_name(dep)).expect("connect");
        buf.clear();
        let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial to send");
        sock.send_to(&buf[..t.size], to).expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_handshakes_does_not_lock_terminals_out() {
    let dep = Deployment::new(1);
    dep.set_config("master", "terminals_max", "50");
    let _master = dep.start_master();
    // Ten times more never-finished handshakes than the master has terminal slots.
    tokio::task::block_in_place(|| send_half_open_initials(&dep, 500));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let (_conn, mut w, mut r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("an honest terminal connects");
    let hi = hello(&mut w, &mut r, "slave-1").await;
    let took = started.elapsed();
    assert!(matches!(hi, Ok(MasterMsg::Hello { .. })), "honest terminal refused during a flood: {hi:?}");
    eprintln!("honest terminal connected {took:?} after a flood of 500 half-open handshakes");
    assert!(took < Duration::from_secs(2), "took {took:?} to connect during a flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stolen_certificate_holds_one_connection_and_bounded_memory() {
    let dep = Deployment::new(2);
    let (_issuer, master, mut slaves) = dep.start_flight();
    // Terminal 2's key is stolen; the real terminal 2 is off (it would otherwise take its
    // connection back each time it reconnects).
    drop(slaves.pop());
    let before = master_pid_rss_mib(&master);
    const CONNECTIONS: usize = 320;
    // The same terminal certificate, again and again: each connection says Hello, then tries
    // to open extra streams and fills what it can with data the master never reads.
    let tls = client_tls(&dep, "slave-2");
    let mut conns = Vec::new();
    let mut extra_streams = 0;
    for _ in 0..CONNECTIONS {
        let Ok((conn, mut w, mut r)) = open(&dep, tls.clone()).await else { continue };
        if !matches!(hello(&mut w, &mut r, "slave-2").await, Ok(MasterMsg::Hello { .. })) {
            continue;
        }
        if let Ok(Ok((mut s, _r))) = tokio::time::timeout(Duration::from_millis(50), conn.open_bi()).await {
            extra_streams += 1;
            let _ = tokio::time::timeout(Duration::from_millis(50), s.write_all(&[7u8; 256 << 10])).await;
        }
        // Fill the one stream too, past the frame limit it would take to notice.
        let _ = tokio::time::timeout(Duration::from_millis(50), w.stream_mut().write_all(&[0u8; 64 << 10])).await;
        conns.push((conn, w, r));
    }
    assert!(conns.len() > CONNECTIONS / 2, "most connections should complete: {}", conns.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = conns.iter().filter(|(c, _, _)| c.close_reason().is_none()).count();
    let after = master_pid_rss_mib(&master);
    eprintln!(
        "{} connections under one certificate: {alive} alive at the end, {extra_streams} extra streams opened; \
         master peak memory {before:.1} MiB before, {after:.1} MiB after",
        conns.len()
    );
    assert_eq!(extra_streams, 0, "a connection may open only the one stream the protocol uses");
    assert!(alive <= 1, "{alive} connections under one certificate are still open");
    assert!(after - before < 24.0, "one certificate grew the master by {:.1} MiB", after - before);
    // The honest terminals keep working.
    let id = tokio::task::block_in_place(|| honest_capture(&dep, 4));
    dep.wait_for("the honest payment is at the master", Duration::from_secs(20), || {
        matches!(dep.master_status(Some(&id))["state"].as_str(), Some("stored" | "decided" | "delivered"))
    });
}

/// Runs `inflight-setup` with `args` against the deployment's folder; its stdout.
fn setup(dep: &Deployment, args: &[&str]) -> String {
    let out = std::process::Command::new(inflight_e2e::bin("inflight-setup"))
        .args(args)
        .args(["--dir", dep.path("").to_str().expect("utf-8 path")])
        .output()
        .expect("run inflight-setup");
    assert!(out.status.success(), "inflight-setup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn terminal_hello(dep: &Deployment, terminal: &str) -> Result<MasterMsg, String> {
    let (_c, mut w, mut r) = open(dep, client_tls(dep, terminal)).await?;
    hello(&mut w, &mut r, terminal).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_terminal_is_refused_at_its_next_handshake_without_a_restart() {
    let dep = Deployment::new(2);
    let _master = dep.start_master();
    // A live connection of the terminal to be revoked (a stolen seatback already connected).
    let (live, mut w, mut r) = open(&dep, client_tls(&dep, "slave-1")).await.expect("handshake");
    assert!(matches!(hello(&mut w, &mut r, "slave-1").await, Ok(MasterMsg::Hello { .. })), "before revocation");
    let said = setup(&dep, &["revoke", "--role", "terminal", "--name", "slave-1"]);
    assert!(said.contains("revoked 1 certificate"), "{said}");
    // The master polls its TLS files every second.
    tokio::time::sleep(inflight_net::reload::TLS_RELOAD_POLL * 2 + Duration::from_millis(500)).await;
    assert!(live.close_reason().is_some(), "the revoked terminal's live connection must be cut");
    let after = terminal_hello(&dep, "slave-1").await;
    assert!(after.is_err(), "a revoked terminal must be refused: {after:?}");
    assert!(matches!(terminal_hello(&dep, "slave-2").await, Ok(MasterMsg::Hello { .. })), "others still served");
    // Renewal is enrolling again: a new certificate (new serial) for the same terminal works.
    setup(&dep, &["enroll", "--role", "terminal", "--id", "slave-1"]);
    assert!(matches!(terminal_hello(&dep, "slave-1").await, Ok(MasterMsg::Hello { .. })), "re-enrolled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_domains_are_separate_at_the_handshake() {
    let dep = Deployment::new(1);
    let _issuer = dep.start_issuer();
    // A terminal's certificate does not even complete a handshake with the issuer.
    let cfg: toml::Table = std::fs::read_to_string(dep.config("master")).expect("config").parse().expect("toml");
    let issuer_addr: SocketAddr = cfg["ground"]["issuer_addr"].as_str().expect("addr").parse().expect("addr");
    let id = tls::Identity::from_pem_files(&dep.path("pki/slave-1.pem"), &dep.path("pki/slave-1.key")).expect("id");
    let ground =
        tls::client_config(id, tls::roots(&dep.path("pki/issuer-ca.pem")).expect("ca"), inflight_wire::GROUND_ALPN)
            .expect("tls");
    let ep = endpoint::client("127.0.0.1:0".parse().expect("addr"), ground, Default::default()).expect("endpoint");
    let conn = endpoint::connect(&ep, issuer_addr, inflight_setup::ISSUER_SERVER_NAME, Duration::from_secs(3)).await;
    // The server's verdict on our certificate reaches us right after the handshake: either the
    // connect fails, or the connection is closed before a stream can be used.
    let refused = match conn {
        Err(_) => true,
        Ok(c) => tokio::time::timeout(Duration::from_secs(3), c.closed()).await.is_ok(),
    };
    assert!(refused, "the issuer accepted a terminal certificate");

    // Another aircraft's server, with a certificate from the same aircraft CA, cannot pass for
    // this aircraft's master: terminals check their own aircraft's server name.
    setup(&dep, &["enroll", "--role", "aircraft", "--id", "d-other", "--name", "other-master"]);
    let other = tls::Identity::from_pem_files(&dep.path("pki/other-master.pem"), &dep.path("pki/other-master.key"))
        .expect("identity");
    let server = tls::server_config(other, tls::roots(&dep.path("pki/terminal-ca.pem")).expect("ca"), TERMINAL_ALPN)
        .expect("tls");
    let impostor = endpoint::server("127.0.0.1:0".parse().expect("addr"), server, Default::default()).expect("server");
    let addr = impostor.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Some(i) = impostor.accept().await {
            let _ = i.await;
        }
    });
    let ep = endpoint::client("127.0.0.1:0".parse().expect("addr"), client_tls(&dep, "slave-1"), Default::default())
        .expect("endpoint");
    let to_impostor = endpoint::connect(&ep, addr, &master_name(&dep), Duration::from_secs(3)).await;
    assert!(to_impostor.is_err(), "a terminal accepted another aircraft's server");
}

/// How the master ended a connection made with `pair`: `Ok(code)` with the QUIC transport error
/// code when the TLS handshake refused it (a crypto error: 0x100 + the TLS alert), `Err` when it
/// was accepted at the TLS level.
async fn tls_refusal(dep: &Deployment, pair: &inflight_net::pki::PemPair) -> Result<u64, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = pair_tls(dep, tmp.path(), pair);
    let ep = endpoint::client("127.0.0.1:0".parse().expect("addr"), cfg, Default::default()).expect("endpoint");
    let conn = match endpoint::connect(&ep, master_addr(dep), &master_name(dep), Duration::from_secs(3)).await {
        Ok(c) => c,
        Err(e) => return Err(format!("connect failed before the server's verdict: {e}")),
    };
    match tokio::time::timeout(Duration::from_secs(3), conn.closed()).await {
        Ok(quinn::ConnectionError::ConnectionClosed(c)) => Ok(u64::from(c.error_code)),
        Ok(other) => Err(format!("closed otherwise: {other}")),
        Err(_) => Err("accepted: the connection stayed open".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_the_wrong_kind_fails_the_tls_handshake_itself() {
    let dep = Deployment::new(1);
    let _master = dep.start_master();
    let ca = inflight_setup::provision::load_ca(&dep.path(""), inflight_setup::provision::Role::Terminal).expect("CA");
    // From the right CA, with client usage, but named as an aircraft: the verifier refuses it
    // inside the handshake, before any application byte.
    let wrong = ca.issue("d-aixa.aircraft.inflight", true, false, Validity::default()).expect("cert");
    let code = tls_refusal(&dep, &wrong).await.expect("refused in the handshake");
    assert!((0x100..0x200).contains(&code), "not a TLS alert: {code:#x}");
    // Control: the same CA and a terminal name pass the handshake.
    let right = ca.issue("slave-1.terminal.inflight", true, false, Validity::default()).expect("cert");
    assert!(tls_refusal(&dep, &right).await.is_err(), "a terminal certificate passes the handshake");
}

/// An aircraft connection made with this deployment's master key, past the ground `Hello`.
async fn aircraft_session(dep: &Deployment) -> (inflight_net::Connection, FrameWriter, FrameReader, String) {
    let cfg: toml::Table = std::fs::read_to_string(dep.config("master")).expect("config").parse().expect("toml");
    let issuer_addr: SocketAddr = cfg["ground"]["issuer_addr"].as_str().expect("addr").parse().expect("addr");
    let aircraft = cfg["aircraft_id"].as_str().expect("aircraft").to_owned();
    let id = tls::Identity::from_pem_files(&dep.path("pki/master.pem"), &dep.path("pki/master.key")).expect("id");
    let ground =
        tls::client_config(id, tls::roots(&dep.path("pki/issuer-ca.pem")).expect("ca"), inflight_wire::GROUND_ALPN)
            .expect("tls");
    let ep = endpoint::client("127.0.0.1:0".parse().expect("addr"), ground, Default::default()).expect("endpoint");
    let conn = endpoint::connect(&ep, issuer_addr, inflight_setup::ISSUER_SERVER_NAME, Duration::from_secs(3))
        .await
        .expect("the aircraft key connects");
    let (s, r) = conn.open_bi().await.expect("stream");
    let (mut w, mut r) = framed(s, r, inflight_wire::GROUND_FRAME_BYTES_MAX);
    use inflight_wire::{AircraftMsg, IssuerMsg, GROUND_PROTOCOL_VERSION};
    w.send(&AircraftMsg::Hello { version: GROUND_PROTOCOL_VERSION, aircraft: aircraft.clone() }).await.expect("send");
    assert!(matches!(r.recv::<IssuerMsg>().await, Ok(Some(IssuerMsg::Hello { .. }))), "issuer says Hello");
    (conn, w, r, aircraft)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_batch_does_not_block_other_aircraft_at_the_issuer() {
    let dep = Deployment::new(1);
    dep.set_config("issuer", "batch_frame_idle_ms", "2000");
    dep.set_config("issuer", "batch_budget_wait_ms", "1000");
    let _issuer = dep.start_issuer();
    // A stolen aircraft key announces the largest batch (the issuer's whole batch memory) and
    // then sends nothing, keeping the connection alive.
    let (conn, mut w, _r, aircraft) = aircraft_session(&dep).await;
    use inflight_wire::{AircraftMsg, BatchHeader, BatchId};
    let header = BatchHeader {
        id: BatchId([0x5a; 16]),
        aircraft,
        flight: "STALL".into(),
        count: inflight_wire::BATCH_PAYMENTS_MAX,
        totals: vec![],
        digest: [0; 32],
    };
    w.send(&AircraftMsg::BatchBegin(header)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The real aircraft flies and lands: its batch is decided once the stalled one is dropped.
    let _master = dep.start_master();
    let _slave = dep.start_slave(1);
    dep.wait_bin_lists();
    let id = tokio::task::block_in_place(|| honest_capture(&dep, 5));
    dep.wait_for("the honest payment decided despite the stalled batch", Duration::from_secs(30), || {
        matches!(dep.master_status(Some(&id))["state"].as_str(), Some("decided" | "delivered"))
    });
    drop(conn);
}

/// A store that fails under a batch (here its fsync) is no quiet disconnect: the issuer logs it
/// as an error and tells the aircraft, which sends the batch again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_during_a_batch_is_told_to_the_aircraft() {
    use inflight_wire::{AircraftMsg, BatchHeader, BatchId, BatchItem, IssuerMsg};
    let dep = Deployment::new(1);
    // The first fsync imports the accounts; the batch's is the second.
    let _issuer = dep.start_issuer_env(&[("INFLIGHT_STORE_FSYNC_FAIL_AFTER", "1")]);
    let (_conn, mut w, mut r, aircraft) = aircraft_session(&dep).await;
    let card = dep.cards()[0].clone();
    let now = inflight_daemon::unix_ms_now();
    let item = BatchItem {
        id: PaymentId::mint(now, [7; 10]),
        pan: Pan::parse(&card.pan).expect("pan"),
        expiry: Expiry::parse(&card.expiry).expect("expiry"),
        amount: Money::new(100, Currency::parse(&card.currency).expect("currency")).expect("money"),
        captured_unix_ms: now,
        late: false,
        deferred: true,
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    };
    let mut digest = inflight_store::BatchDigest::default();
    digest.update(&item);
    let header = BatchHeader {
        id: BatchId([0x5b; 16]),
        aircraft,
        flight: "DISK".into(),
        count: 1,
        totals: vec![],
        digest: digest.finish(),
    };
    w.send(&AircraftMsg::BatchBegin(header.clone())).await.expect("send");
    w.send(&AircraftMsg::BatchItems { batch: header.id, first_seq: 0, items: vec![item] }).await.expect("send");
    w.send(&AircraftMsg::BatchEnd { batch: header.id }).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(10), r.recv::<IssuerMsg>()).await.expect("an answer in time");
    match answer {
        Ok(Some(IssuerMsg::Error { message })) => assert!(message.contains("storage"), "{message}"),
        other => panic!("want an error frame about storage, got {other:?}"),
    }
    let log = dep.log("issuer");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("storage")), "{log}");
}

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

const MASTER_NAME: &str = "master.aircraft.inflight";

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
    let conn = endpoint::connect(&ep, master_addr(dep), MASTER_NAME, Duration::from_secs(3))
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
    tls::client_config(id, tls::roots(&dep.path("pki/airline-ca.pem")).expect("ca"), TERMINAL_ALPN).expect("tls")
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

/// The next message that answers the client (the BIN list and results pushed on connect are
/// skipped), or why none came.
async fn next(r: &mut FrameReader) -> Result<Option<MasterMsg>, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), r.recv::<MasterMsg>()).await {
            Err(_) => return Err("no answer".into()),
            Ok(Ok(Some(MasterMsg::BinList(_) | MasterMsg::Result { .. }))) => continue,
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
    }
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
    let id = tls::Identity::from_pem_files(
        &write_pem(tmp.path(), "c.pem", &pair.cert_pem),
        &write_pem(tmp.path(), "k.pem", &pair.key_pem),
    )
    .expect("identity");
    let cfg =
        tls::client_config(id, tls::roots(&dep.path("pki/airline-ca.pem")).expect("ca"), TERMINAL_ALPN).expect("tls");
    let wrong_ca = match open(&dep, cfg).await {
        Err(e) => Err(e),
        Ok((_c, mut w, mut r)) => hello(&mut w, &mut r, "slave-1").await.map(|_| ()),
    };
    assert!(wrong_ca.is_err(), "a certificate from another CA must be refused");

    let anon = tls::client_config_anonymous(tls::roots(&dep.path("pki/airline-ca.pem")).expect("ca"), TERMINAL_ALPN)
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
